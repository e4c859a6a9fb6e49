"""Decoding modes side by side through one live gateway: speed, decoded tokens and quality.

    .venv/bin/python bench/decoding.py --mode copy=extractor --mode anchors=anchors
                                       [--gateway http://127.0.0.1:8003] [--api-key demo-key]
                                       [--concurrency 32] [--split test|val|none] [--rounds 1]
                                       [--gold FILE ...] [--out var/bench/decoding.json]

Each `--mode LABEL=ADAPTER` names a registered adapter version trained in one target form
(`tiqu train --target-form copy|anchors`; the gateway reads the form from its manifest and
decodes and expands accordingly). The first mode is the baseline. Every mode answers the same
complaints, the hand-written set (`tests/data/handwritten/complaints.jsonl`), any `--gold` sets
and, with `--split test`, the test split of the first mode's distill run (`--split val`: the
tuning sets alone, the hand-written development set `dev.jsonl` and the validation split),
through `POST /v1/extract` with
`--concurrency` requests in flight, one mode after the other on the same engine; `--rounds 2`
runs the modes twice in alternating order (A B B A) so a machine that slows down mid-run
does not favour one.

Prints per mode: extractions/s, p50/p95 latency, decoded (completion) and prompt tokens per
extraction as the gateway reports them (`usage`), each field's exact match, question similarity
≥ 0.8, all fields correct and schema-valid answers, with the ratio to the baseline; writes
everything to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import console, extract_all, gold_paths, label_of, pct, text_of
from services.train.data import Example, find_run, load_gold, load_split
from services.train.scoring import score
from shared import adapters
from shared.schema import get_schema
from shared.store import Store


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_mode(
    adapter: str, examples: list[Example], gateway: str, api_key: str, concurrency: int
) -> tuple[list[dict[str, Any] | None], list[float], float]:
    texts = [text_of(example) for example in examples]
    started = time.perf_counter()
    answers, latencies = asyncio.run(extract_all(texts, gateway, api_key, adapter, concurrency))
    return answers, latencies, time.perf_counter() - started


def summary(
    answers: list[dict[str, Any] | None], latencies: list[float], seconds: float, examples: list
) -> dict[str, Any]:
    schema = get_schema()
    answered = [a for a in answers if a]
    model = [json.dumps(a["fields"], ensure_ascii=False) if a else "" for a in answers]
    scores = score(model, [label_of(e) for e in examples], schema, [e.id for e in examples])
    return {
        "rows": len(answers),
        "answered": len(answered),
        "served_by": sorted({a["adapter"] for a in answered}),
        "seconds": round(seconds, 1),
        "extractions_per_s": round(len(answered) / seconds, 4),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "completion_tokens_mean": statistics.fmean(
            a["usage"]["completion_tokens"] for a in answered
        )
        if answered
        else None,
        "prompt_tokens_mean": statistics.fmean(a["usage"]["prompt_tokens"] for a in answered)
        if answered
        else None,
        "scores": scores,
        # Row by row, to read the errors of a tuning set (never to tune on the others).
        "answers": [
            {"id": example.id, "answer": answer["fields"] if answer else None}
            for example, answer in zip(examples, answers, strict=True)
        ],
    }


def merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one mode as one: speed over all answers, quality of the last round (greedy
    decoding answers the same each round)."""
    if len(parts) == 1:
        return parts[0]
    answered = sum(p["answered"] for p in parts)
    seconds = sum(p["seconds"] for p in parts)
    return {
        **parts[-1],
        "answered": answered,
        "seconds": round(seconds, 1),
        "extractions_per_s": round(answered / seconds, 4),
        "rounds": parts,
    }


def ratio(value: float | None, base: float | None) -> str:
    return "" if not value or not base else f" ({value / base:.2f}×)"


def table(title: str, results: dict[str, dict[str, Any]]) -> Table:
    labels = list(results)
    base = results[labels[0]]
    out = Table(title=title)
    out.add_column("measure")
    for label in labels:
        out.add_column(label + (" (baseline)" if label == labels[0] else ""))

    def row(name: str, key: str, fmt: str) -> None:
        cells = []
        for label in labels:
            value = results[label][key]
            text = "—" if value is None else format(value, fmt)
            cells.append(text + ("" if label == labels[0] else ratio(value, base[key])))
        out.add_row(name, *cells)

    row("extractions/s", "extractions_per_s", ".3f")
    row("p50 latency (s)", "latency_p50_s", ".1f")
    row("p95 latency (s)", "latency_p95_s", ".1f")
    if all("single_p50_s" in results[label] for label in labels):
        row("p50 latency, one request at a time (s)", "single_p50_s", ".1f")
    row("decoded tokens / extraction", "completion_tokens_mean", ".1f")
    if all("decode_steps_mean" in results[label] for label in labels):
        row("engine decode steps / extraction", "decode_steps_mean", ".1f")
    row("prompt tokens / extraction", "prompt_tokens_mean", ".1f")
    if all("cached_prompt_share" in results[label] for label in labels):
        row("prompt tokens from the prefix cache", "cached_prompt_share", ".1%")
    for field in get_schema().field_names:
        out.add_row(
            f"{field} exact",
            *(pct(results[label]["scores"]["fields"][field]["exact_match"]) for label in labels),
        )
    out.add_row(
        "question similarity ≥ 0.8",
        *(pct(results[label]["scores"]["fields"]["question"]["similar_rate"]) for label in labels),
    )
    out.add_row(
        "all fields correct",
        *(pct(results[label]["scores"]["all_fields_correct"]) for label in labels),
    )
    out.add_row(
        "schema-valid answers",
        *(pct(results[label]["scores"]["schema_valid"]) for label in labels),
    )
    out.add_row("answered by", *(", ".join(results[label]["served_by"]) for label in labels))
    return out


GOLD_HELP = "another labelled JSONL set to score beside the hand-written one; repeatable"


def eval_sets(
    split: str, baseline: str, gold: Sequence[Path] = ()
) -> list[tuple[str, list[Example]]]:
    """The hand-written evaluation set, `gold` files and the generated test split; with `split`
    "val", the tuning sets alone: the hand-written development set and the validation split."""
    schema = get_schema()
    sets = [
        (f"hand-written {path.name}", load_gold(path, schema)) for path in gold_paths(split, gold)
    ]
    if split in ("test", "val"):
        store = Store.from_settings()
        run_id = adapters.resolve(store, baseline.replace("@", ":")).get("run_id")
        if run_id:
            rows = load_split(store, find_run(store, run_id), split)
            sets.append((f"generated {split} split of {run_id}", rows))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        action="append",
        required=True,
        help="LABEL=ADAPTER (repeatable; the first is the baseline).",
    )
    parser.add_argument(
        "--gateway", default=os.environ.get("TIQU_GATEWAY_URL", "http://127.0.0.1:8003")
    )
    parser.add_argument("--api-key", default=os.environ.get("TIQU_GATEWAY_API_KEY", "demo-key"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--split",
        choices=("test", "val", "none"),
        default="test",
        help="val: the tuning sets alone (the hand-written development set and the run's "
        "validation split); none: the hand-written sets only.",
    )
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=1)
    parser.add_argument("--gold", type=Path, action="append", default=[], help=GOLD_HELP)
    parser.add_argument("--out", type=Path, default=Path("var/bench/decoding.json"))
    args = parser.parse_args()
    modes = dict(mode.split("=", 1) for mode in args.mode)
    if len(modes) != len(args.mode):
        parser.error("each --mode needs its own LABEL")
    labels = list(modes)
    report: dict[str, Any] = {"gateway": args.gateway, "modes": modes, "sets": {}}
    for set_name, examples in eval_sets(args.split, modes[labels[0]], args.gold):
        order = labels if args.rounds == 1 else [*labels, *reversed(labels)]
        parts: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
        for label in order:
            console.print(f"{set_name}: {label} ({modes[label]}), {args.concurrency} in flight")
            answers, latencies, seconds = run_mode(
                modes[label], examples, args.gateway, args.api_key, args.concurrency
            )
            parts[label].append(summary(answers, latencies, seconds, examples))
        results = {label: merged(parts[label]) for label in labels}
        report["sets"][set_name] = results
        console.print(table(f"{set_name} ({len(examples)} rows)", results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
