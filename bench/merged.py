"""Runtime LoRA vs the same adapter merged into the base weights, side by side, in one run.

    .venv/bin/python bench/merged.py [--adapter extractor] [--concurrency 32] [--single 16]
                                     [--split test|val|none] [--rounds 2] [--gold FILE ...]
                                     [--tuned LABEL="VLLM FLAGS" ...]
                                     [--out var/bench/merged.json]

Uses the store, base model and adapter of the current settings (after `make demo`: the demo's
`var/` store and the adapter it trained). Starts two stacks on free ports, each `tiqu serve
engine` + `tiqu api serve` with the same settings: the baseline serves the adapter as a runtime
LoRA (tiqu's default), the other with `TIQU_ENGINE_MERGED_ADAPTER` (the adapter folded into the
base weights, `services/serve/merge.py`). Each `--tuned` adds a stack that serves it merged with
those vLLM flags added (`TIQU_ENGINE_EXTRA_ARGS`, e.g. n-gram speculative decoding or 16-token KV
blocks). All are stopped at the end, on errors and on Ctrl-C.

For each set (the hand-written complaints, any `--gold` sets and, with `--split test`, the
adapter's generated test split; `--split val`: the tuning sets alone, the hand-written development
set and the validation split): every complaint through each gateway with `--concurrency` requests
in flight (`--rounds 2`: A B C C B A, so a machine that slows down mid-run favours none), then the
first `--single` complaints one request at a time (the latency of a lone extraction). Prints
extractions/s, p50/p95, p50 alone, decoded and prompt tokens per extraction, each field's exact
match, question similarity, all fields correct and schema-valid answers, with the ratios to the
baseline, and from the engine's counters the decode steps per extraction (fewer than the decoded
tokens when speculative drafts are accepted) and the share of prompt tokens its prefix cache held.
Writes everything to `--out`. On Gemma-3-270m with 2 CPU cores it takes about 20 minutes (about 8
more per tuned stack).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.decoding import GOLD_HELP, eval_sets, merged, run_mode, summary, table
from bench.quality import console
from bench.serve_support import EngineCounters, Stack, engine_tokens
from shared import adapters
from shared.settings import get_settings
from shared.store import Store

# The stacks listen on loopback only and without keys, as bench/serve.py's.
API_KEY = ""
BASELINE, MERGED = "runtime LoRA", "merged"


def start_stack(work: Path, reference: str, merge: bool, extra_args: str | None) -> Stack:
    env = {
        **os.environ,
        "TIQU_API_KEYS": "",
        "TIQU_ADAPTER_DIR": str(work / "adapters"),
        "TIQU_SERVE_ADAPTERS": reference,
        # 32 requests in flight on 2 cores wait minutes for the last answers.
        "TIQU_SERVE_TIMEOUT_S": "900",
        "TIQU_ENGINE_MERGED_ADAPTER": reference if merge else "",
        # Several engines on one machine: a small fixed KV cache each. With the default memory
        # share two outgrew 24 GiB once (the LoRA engine's worker was killed for memory); a stack
        # takes about 6 GiB with 0.5 GiB of KV cache, which holds 32 requests of Gemma-3-270m
        # (~18 KiB per token) many times over.
        "TIQU_ENGINE_KV_CACHE_GIB": os.environ.get("TIQU_ENGINE_KV_CACHE_GIB", "0.5"),
        # vLLM's /reset_prefix_cache, so no round finds the prompts of the one before cached.
        "VLLM_SERVER_DEV_MODE": "1",
    }
    if extra_args is not None:
        env["TIQU_ENGINE_EXTRA_ARGS"] = extra_args
    stack = Stack(work, env)
    try:
        stack.start_engine(timeout=900)
        stack.start_gateway(adapters=1, timeout=600)
    except BaseException:
        console.print(stack.log_tails())
        stack.stop()
        raise
    return stack


def counters(stack: Stack) -> EngineCounters:
    async def read() -> EngineCounters:
        async with httpx.AsyncClient(base_url=stack.engine_url, timeout=30) as client:
            return await engine_tokens(client)

    return asyncio.run(read())


def forget_prompts(stack: Stack) -> None:
    """Empty the engine's prefix cache: every text is sent once per round, and real traffic
    does not repeat texts either; what stays cacheable is what prompts share within a round."""
    response = httpx.post(f"{stack.engine_url}/reset_prefix_cache", timeout=30)
    if response.status_code != 200 or not response.json().get("success"):
        raise RuntimeError(f"vLLM did not reset its prefix cache: {response.text[:200]}")


def engine_figures(spent: EngineCounters, answered: int) -> dict[str, float | None]:
    """Per extraction, from the engine's own counters over one round."""
    return {
        "decode_steps_mean": spent.decode_steps / answered if answered else None,
        "cached_prompt_share": spent.cache_hits / spent.cache_queries
        if spent.cache_queries
        else None,
    }


def parse_tuned(spec: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    label, sep, flags = spec.partition("=")
    if not sep or not label.strip() or label.strip() in (BASELINE, MERGED):
        parser.error(f'--tuned takes LABEL="VLLM FLAGS" with a new label, got {spec!r}')
    return label.strip(), flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default=get_settings().adapter_name)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--single", type=int, default=16, help="Complaints sent one at a time.")
    parser.add_argument("--split", choices=("test", "val", "none"), default="test")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=2)
    parser.add_argument(
        "--tuned",
        action="append",
        default=[],
        metavar='LABEL="VLLM FLAGS"',
        help="also a stack serving the adapter merged with these vLLM flags added "
        "(TIQU_ENGINE_EXTRA_ARGS); repeatable",
    )
    parser.add_argument("--gold", type=Path, action="append", default=[], help=GOLD_HELP)
    parser.add_argument("--out", type=Path, default=Path("var/bench/merged.json"))
    args = parser.parse_args()
    manifest = adapters.resolve(Store.from_settings(), args.adapter)
    name, _ = adapters.parse_ref(args.adapter)
    reference = f"{name}@{manifest['version']}"
    work = Path(tempfile.mkdtemp(prefix="tiqu-bench-merged-"))
    stacks: dict[str, Stack] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tuned = dict(parse_tuned(spec, parser) for spec in args.tuned)
    variants = [(BASELINE, False, None), (MERGED, True, None)]
    variants += [(f"{MERGED} + {label}", True, flags) for label, flags in tuned.items()]
    labels = [label for label, _, _ in variants]
    report: dict[str, Any] = {"adapter": reference, "tuned": tuned, "sets": {}}
    try:
        for index, (label, merge, extra_args) in enumerate(variants):
            console.print(f"starting the {label} stack for {reference}")
            stacks[label] = start_stack(work / f"stack{index}", reference, merge, extra_args)
        for set_name, examples in eval_sets(args.split, reference, args.gold):
            order = labels if args.rounds == 1 else labels + labels[::-1]
            parts: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
            for label in order:
                console.print(f"{set_name}: {label}, {args.concurrency} in flight")
                forget_prompts(stacks[label])
                before = counters(stacks[label])
                answers, latencies, seconds = run_mode(
                    reference, examples, stacks[label].gateway_url, API_KEY, args.concurrency
                )
                part = summary(answers, latencies, seconds, examples)
                spent = counters(stacks[label]) - before
                parts[label].append({**part, **engine_figures(spent, part["answered"])})
            results = {label: merged(parts[label]) for label in labels}
            for label in labels:
                console.print(f"{set_name}: {label}, {args.single} complaints one at a time")
                forget_prompts(stacks[label])
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
