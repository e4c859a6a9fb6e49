"""Runtime LoRA vs the same adapter merged into the base weights, side by side, in one run.

    .venv/bin/python bench/merged.py [--adapter extractor] [--concurrency 32] [--single 16]
                                     [--split test|val|none] [--rounds 2]
                                     [--out var/bench/merged.json]

Uses the store, base model and adapter of the current settings (after `make demo`: the demo's
`var/` store and the adapter it trained). Starts two stacks on free ports, each `tiqu serve
engine` + `tiqu api serve` with the same settings: the baseline serves the adapter as a runtime
LoRA (tiqu's default), the other with `TIQU_ENGINE_MERGED_ADAPTER` (the adapter folded into the
base weights, `services/serve/merge.py`). Both are stopped at the end, on errors and on Ctrl-C.

For each set (the hand-written complaints and, with `--split test`, the adapter's generated test
split): every complaint through each gateway with `--concurrency` requests in flight (`--rounds
2`: A B B A, so a machine that slows down mid-run favours neither), then the first `--single`
complaints one request at a time (the latency of a lone extraction). Prints extractions/s,
p50/p95, p50 alone, decoded and prompt tokens per extraction, each field's exact match, question
similarity, all fields correct and schema-valid answers, with the ratios to the baseline, and
writes everything to `--out`. On Gemma-3-270m with 2 CPU cores it takes about 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.decoding import eval_sets, merged, run_mode, summary, table
from bench.quality import console
from bench.serve_support import Stack
from shared import adapters
from shared.settings import get_settings
from shared.store import Store

# The stacks listen on loopback only and without keys, as bench/serve.py's.
API_KEY = ""
BASELINE, MERGED = "runtime LoRA", "merged"


def start_stack(work: Path, reference: str, merge: bool) -> Stack:
    env = {
        **os.environ,
        "TIQU_API_KEYS": "",
        "TIQU_ADAPTER_DIR": str(work / "adapters"),
        "TIQU_SERVE_ADAPTERS": reference,
        # 32 requests in flight on 2 cores wait minutes for the last answers.
        "TIQU_SERVE_TIMEOUT_S": "900",
        "TIQU_ENGINE_MERGED_ADAPTER": reference if merge else "",
        # Two engines on one machine: a fixed KV cache each. With the default memory share both
        # together outgrew 24 GiB once (the LoRA engine's worker was killed for memory).
        "TIQU_ENGINE_KV_CACHE_GIB": os.environ.get("TIQU_ENGINE_KV_CACHE_GIB", "2"),
    }
    stack = Stack(work, env)
    try:
        stack.start_engine(timeout=900)
        stack.start_gateway(adapters=1, timeout=600)
    except BaseException:
        console.print(stack.log_tails())
        stack.stop()
        raise
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default=get_settings().adapter_name)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--single", type=int, default=16, help="Complaints sent one at a time.")
    parser.add_argument("--split", choices=("test", "val", "none"), default="test")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=2)
    parser.add_argument("--out", type=Path, default=Path("var/bench/merged.json"))
    args = parser.parse_args()
    manifest = adapters.resolve(Store.from_settings(), args.adapter)
    name, _ = adapters.parse_ref(args.adapter)
    reference = f"{name}@{manifest['version']}"
    work = Path(tempfile.mkdtemp(prefix="tiqu-bench-merged-"))
    stacks: dict[str, Stack] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report: dict[str, Any] = {"adapter": reference, "sets": {}}
    try:
        for label, merge in ((BASELINE, False), (MERGED, True)):
            console.print(f"starting the {label} stack for {reference}")
            stacks[label] = start_stack(work / label.replace(" ", "-"), reference, merge)
        for set_name, examples in eval_sets(args.split, reference):
            order = [BASELINE, MERGED] if args.rounds == 1 else [BASELINE, MERGED, MERGED, BASELINE]
            parts: dict[str, list[dict[str, Any]]] = {BASELINE: [], MERGED: []}
            for label in order:
                console.print(f"{set_name}: {label}, {args.concurrency} in flight")
                answers, latencies, seconds = run_mode(
                    reference, examples, stacks[label].gateway_url, API_KEY, args.concurrency
                )
                parts[label].append(summary(answers, latencies, seconds, examples))
            results = {label: merged(parts[label]) for label in (BASELINE, MERGED)}
            for label in (BASELINE, MERGED):
                console.print(f"{set_name}: {label}, {args.single} complaints one at a time")
                _, alone, _ = run_mode(
                    reference, examples[: args.single], stacks[label].gateway_url, API_KEY, 1
                )
                results[label]["single_p50_s"] = statistics.median(alone) if alone else None
            report["sets"][set_name] = results
            console.print(table(f"{set_name} ({len(examples)} rows)", results))
    finally:
        for stack in stacks.values():
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
