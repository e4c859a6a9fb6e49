"""Leave-one-style-out: how far the student generalizes to a way of writing it never saw.

    .venv/bin/python bench/leave_one_style_out.py [--styles inline,terse,...] [--rows 600]
                                                  [--held-out-rows 40] [--epochs 1]
                                                  [--target-form copy|anchors]
                                                  [--out var/bench/leave_one_style_out.json]

The generator writes complaints in named styles (letters, chat, HTML forms, Hong Kong/Taiwan
formats, contact details inline...). For each style S of `--styles`:

1. a LoRA adapter is trained on `--rows` generated complaints with every row of style S left
   out, the recipe `make demo` uses (the `TIQU_TRAIN_*` settings, `--epochs`);
2. it is scored on `--held-out-rows` complaints of style S from another seed, which neither it
   nor the reference saw.

The reference is one adapter trained the same way on the same rows *with* every style, scored on
the same held-out rows. The gap per style is what seeing the style in training was worth. Labels
are the generator's gold labels (what the offline teacher stand-in answers); texts are cleaned
as ingest cleans them. Training and evaluation are the pipeline's own (`LoraTrainer`,
`Evaluator`). Each training takes about as long as the demo's (10-15 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.train.data import EvalSet, Example, encode_examples, in_target_form
from services.train.evaluate import Evaluator
from services.train.pipeline import generation_settings, load_base
from services.train.request import TrainParams
from services.train.trainer import LoraTrainer
from shared.cleaning import clean_text
from shared.prompts import student_messages, student_target
from shared.samples import generate_complaints
from shared.schema import get_schema
from shared.settings import get_settings

console = Console()
DEFAULT_STYLES = ("inline", "terse", "hk_tw", "english_labels", "html_form", "record")
TRAIN_SEED, HELD_OUT_SEED = 7, 1007


def examples_by_style(rows: int, seed: int) -> list[tuple[str, Example]]:
    schema = get_schema()
    labels = generate_complaints(rows, seed=seed).labels
    found = []
    for row in labels.to_dict("records"):
        if row.get("kind") not in (None, "original"):
            continue  # near-duplicates of another row
        text = clean_text(row["text"])
        label = {
            name: clean_text(row[name]) if isinstance(row.get(name), str) else None
            for name in schema.field_names
        }
        messages = tuple(student_messages(text, schema))
        example = Example(str(row["id"]), messages, student_target(label, schema), label)
        found.append((str(row.get("style") or ""), example))
    return found


def held_out(style: str, count: int) -> list[Example]:
    """`count` complaints of `style` from a seed no training uses."""
    rows = count * 40
    while True:
        picked = [e for s, e in examples_by_style(rows, HELD_OUT_SEED) if s == style]
        if len(picked) >= count or rows > 200_000:
            return picked[:count]
        rows *= 2


def train_and_score(
    train: list[Example], sets: dict[str, list[Example]], args: argparse.Namespace
) -> dict[str, Any]:
    settings = get_settings()
    schema = get_schema()
    params = TrainParams.from_settings(
        settings, epochs=args.epochs, target_form=args.target_form, patience=0
    )
    base = load_base(settings, lambda *_: None)
    cut = max(1, len(train) // 20)
    val_examples, train_examples = train[:cut], train[cut:]
    encoded, _ = encode_examples(
        base.tokenizer,
        in_target_form(train_examples, schema, params.target_form),
        base.resolved.eos_token,
        params.max_length,
    )
    val, _ = encode_examples(
        base.tokenizer,
        in_target_form(val_examples, schema, params.target_form),
        base.resolved.eos_token,
        params.max_length,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tiqu-loso-") as work:
        trainer = LoraTrainer(
            base.model,
            params,
            pad_id=base.tokenizer.pad_token_id,
            work_dir=Path(work),
            fingerprint="leave-one-style-out",
            checkpoint_every=10_000,
        )
        state = trainer.fit(encoded, val)
    trained_s = time.perf_counter() - started
    evaluator = Evaluator(
        trainer.model,
        base.tokenizer,
        generation_settings(settings, base.resolved, base.tokenizer),
        schema,
        target_form=params.target_form,
    )
    scores = {
        name: evaluator.scores(EvalSet(name, name, examples), f"eval {name}")
        for name, examples in sets.items()
    }
    return {
        "train_rows": len(encoded),
        "steps": state.step,
        "train_seconds": round(trained_s, 1),
        "scores": scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", default=",".join(DEFAULT_STYLES))
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--held-out-rows", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--target-form", choices=("copy", "anchors"), default="copy")
    parser.add_argument("--out", type=Path, default=Path("var/bench/leave_one_style_out.json"))
    args = parser.parse_args()
    styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    pool = examples_by_style(args.rows, TRAIN_SEED)
    known = {s for s, _ in pool}
    unknown = [s for s in styles if s not in known]
    if unknown:
        parser.error(f"unknown styles {unknown}; the generator's are {sorted(known - {''})}")
    sets = {style: held_out(style, args.held_out_rows) for style in styles}
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "styles": {}}
    console.print(f"reference: all styles, {len(pool)} rows")
    report["reference"] = train_and_score([e for _, e in pool], sets, args)
    for style in styles:
        kept = [e for s, e in pool if s != style]
        console.print(f"without {style}: {len(kept)} rows ({len(pool) - len(kept)} left out)")
        report["styles"][style] = train_and_score(kept, {style: sets[style]}, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    table = Table(title="leave one style out: scores on held-out rows of the style")
    for column in ("style", "rows", "trained with it: all correct", "without it", "gap", "fields"):
        table.add_column(column)
    for style in styles:
        seen = report["reference"]["scores"][style]
        unseen = report["styles"][style]["scores"][style]
        gap = unseen["all_fields_correct"] - seen["all_fields_correct"]
        fields = ", ".join(
            f"{name} {100 * seen['fields'][name]['exact_match']:.0f}→"
            f"{100 * unseen['fields'][name]['exact_match']:.0f}"
            for name in get_schema().field_names
        )
        table.add_row(
            style,
            str(len(sets[style])),
            f"{100 * seen['all_fields_correct']:.1f}%",
            f"{100 * unseen['all_fields_correct']:.1f}%",
            f"{100 * gap:+.1f} pts",
            fields,
        )
    console.print(table)
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
