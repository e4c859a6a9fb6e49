"""Training data: distill runs by id, label sets beside them, chat examples, token sequences,
length-grouped batches.

Nothing here imports torch, so the API can validate a request without loading a model.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import labelsets
from shared.anchors import TargetForm
from shared.chat import encode_prompt, encode_text
from shared.errors import InvalidInputError, NotFoundError
from shared.prompts import student_messages, student_target
from shared.schema import ExtractionSchema
from shared.store import Layout, Store

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SPLITS = ("train", "val", "test")
# Letters, digits, "-" and "_": an id is a folder name in the store, so never "." or "..".
RUN_ID = re.compile(r"[\w\-]{1,128}")
# Length-sorted windows of this many batches: batches hold similar lengths, yet each epoch
# still mixes lengths across its steps.
_SORT_WINDOW_BATCHES = 32


@dataclass(frozen=True)
class DistillRun:
    dataset_id: str
    run_id: str
    manifest: dict[str, Any]

    def split_key(self, split: str) -> str:
        return Layout.distill_run(self.dataset_id, self.run_id, f"{split}.jsonl")


@dataclass(frozen=True)
class Example:
    """One labelled complaint: the prompt messages (system, user) and the answer to learn."""

    id: str
    messages: tuple[dict[str, str], ...]
    target: str
    label: dict[str, Any]

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class EvalSet:
    """Labelled examples to evaluate on: a run's test split or a `--gold` file."""

    name: str
    source: str
    examples: Sequence[Example]


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + answer; the loss covers the ids from `prompt_length` on."""

    input_ids: tuple[int, ...]
    prompt_length: int

    def __len__(self) -> int:
        return len(self.input_ids)


def find_run(store: Store, run_id: str) -> DistillRun:
    """The distill run with this id, whichever dataset it belongs to."""
    if not RUN_ID.fullmatch(run_id):
        raise NotFoundError(f"distill run {run_id!r} not found", param="run_id")
    for dataset_id in store.children("datasets"):
        key = Layout.distill_run(dataset_id, run_id, "manifest.json")
        if store.exists(key):
            return DistillRun(dataset_id, run_id, store.read_json(key))
    raise NotFoundError(f"distill run {run_id} not found in {store.url}", param="run_id")


def load_split(store: Store, run: DistillRun, split: str) -> list[Example]:
    """The examples of one split of a distill run (a missing file is an empty split)."""
    key = run.split_key(split)
    if not store.exists(key):
        return []
    return parse_jsonl(store.read_bytes(key).decode("utf-8"), f"{run.run_id}/{split}.jsonl")


def load_labelset(store: Store, reference: str) -> list[Example]:
    """The rows of a pinned label set version (`name@vN`, see `shared.labelsets.pin`)."""
    content = store.read_bytes(labelsets.labels_key(reference)).decode("utf-8")
    return parse_jsonl(content, reference)


@dataclass(frozen=True)
class LabelSetUse:
    """What training took from one label set version: its rows, less those held out."""

    labelset: str
    rows: int
    used: int
    dropped_held_out: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_labelsets(
    train: Sequence[Example],
    held_out: Iterable[Example],
    sets: Mapping[str, Sequence[Example]],
) -> tuple[list[Example], list[LabelSetUse]]:
    """The run's train examples and every label set's rows, by set.

    A label set row whose text is in `held_out` (the run's val and test splits) is dropped:
    training on it would leak the very complaints the adapter is scored on.
    """
    held_out_texts = {example.text for example in held_out}
    examples = list(train)
    uses = []
    for reference, rows in sets.items():
        kept = [row for row in rows if row.text not in held_out_texts]
        examples += kept
        uses.append(LabelSetUse(reference, len(rows), len(kept), len(rows) - len(kept)))
    return examples, uses


def require_examples(examples: Sequence[Example], run_id: str, split: str) -> None:
    if not examples:
        raise InvalidInputError(
            f"distill run {run_id} has an empty {split} split: nothing to "
            f"{'train on' if split == 'train' else 'evaluate on'}",
            param="run_id",
            code=f"empty_{split}_split",
        )


def load_gold(path: Path, schema: ExtractionSchema) -> list[Example]:
    """Labelled rows from a JSONL file, in distill format (`messages`) or as `text` with the
    fields at the top level or under `label` (e.g. the `.labels.jsonl` of `tiqu sample`).
    """
    try:
        content = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise InvalidInputError(f"gold file {path} does not exist", param="gold") from exc
    return parse_jsonl(content, path.name, schema)


def parse_jsonl(content: str, source: str, schema: ExtractionSchema | None = None) -> list[Example]:
    examples = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            examples.append(_example(record, number, schema))
        except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            raise InvalidInputError(
                f"{source} line {number} is not a labelled example ({type(exc).__name__})",
                param="gold",
            ) from exc
    return examples


def _example(record: dict[str, Any], number: int, schema: ExtractionSchema | None) -> Example:
    row_id = str(record.get("id", number))
    if "messages" in record:
        *prompt, answer = record["messages"]
        if answer["role"] != "assistant" or not prompt:
            raise KeyError("messages")
        label = record.get("label") or json.loads(answer["content"])
        return Example(row_id, tuple(prompt), answer["content"], label)
    if schema is None:
        raise KeyError("messages")
    text = str(record["text"])
    label = record.get("label", record)
    label = {name: label.get(name) for name in schema.field_names}
    return Example(
        row_id,
        tuple(student_messages(text, schema)),
        student_target(label, schema),
        label,
    )


def in_target_form(
    examples: Sequence[Example], schema: ExtractionSchema, form: TargetForm
) -> list[Example]:
    """The examples with their targets rendered from their labels in `form`."""
    if form == "copy":
        return list(examples)
    return [replace(e, target=student_target(e.label, schema, form)) for e in examples]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase,
    examples: Iterable[Example],
    eos_token: str,
    max_length: int,
) -> tuple[list[Encoded], int]:
    """Token sequences `prompt + answer + eos`, and how many were longer than `max_length`.

    Prompt and answer are tokenized apart, exactly as serving tokenizes the prompt and then
    generates the answer token by token; long examples are dropped, since a truncated answer
    would teach the model to stop mid-JSON.
    """
    encoded, too_long = [], 0
    for example in examples:
        prompt = encode_prompt(tokenizer, example.messages)
        answer = encode_text(tokenizer, example.target + eos_token)
        if len(prompt) + len(answer) > max_length:
            too_long += 1
            continue
        encoded.append(Encoded(tuple(prompt + answer), len(prompt)))
    return encoded, too_long


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Index batches of similar lengths, in a seeded random order (padding stays small)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * _SORT_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        group = sorted(order[start : start + window], key=lengths.__getitem__)
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches
