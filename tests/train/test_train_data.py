"""Distill runs by id, gold files in every accepted shape, tokenization and length grouping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.train.data import (
    Example,
    encode_examples,
    find_run,
    length_grouped_batches,
    load_gold,
    load_split,
    parse_jsonl,
    with_labelsets,
)
from services.train.pipeline import scored_test_split
from shared.chat import encode_prompt, render_prompt, turn_end_token
from shared.errors import InvalidInputError, NotFoundError
from shared.models import load_tokenizer
from shared.schema import get_schema
from shared.store import Store
from tests.train.conftest import DATASET_ID


def test_a_run_is_found_by_its_id_alone(distill_run: str) -> None:
    store = Store.from_settings()
    run = find_run(store, distill_run)
    assert run.dataset_id == DATASET_ID
    assert [len(load_split(store, run, s)) for s in ("train", "val", "test")] == [60, 10, 8]


@pytest.mark.parametrize("run_id", ["dr-unknown", "../datasets", ""])
def test_an_unknown_run_is_not_found(distill_run: str, run_id: str) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        find_run(Store.from_settings(), run_id)


def test_gold_files_take_distill_records_and_plain_labels(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    record = records[0]
    text = record["messages"][1]["content"]
    lines = [
        record,
        {"id": "top", "text": text, **record["label"]},
        {"id": "nested", "text": text, "label": record["label"]},
    ]
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n")
    examples = load_gold(path, get_schema())
    assert [e.id for e in examples] == [record["id"], "top", "nested"]
    assert {e.target for e in examples} == {record["messages"][2]["content"]}
    assert all(e.messages == tuple(record["messages"][:2]) for e in examples)


def test_a_gold_line_without_text_fails_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text('{"name": "x"}\n')
    with pytest.raises(InvalidInputError, match="line 1"):
        load_gold(path, get_schema())
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_gold(tmp_path / "missing.jsonl", get_schema())


def test_label_set_rows_train_beside_the_run_except_held_out_texts(
    records: list[dict[str, Any]],
) -> None:
    train, val, test, extra = (
        parse_jsonl(_jsonl(part), "part")
        for part in (records[:5], records[5:7], records[7:9], records[9:12])
    )
    # A hand label of a val and of a test complaint would leak them into training.
    hand = [*extra, val[0], test[1]]
    examples, (use,) = with_labelsets(train, [*val, *test], {"corrections@v2": hand})
    assert [e.id for e in examples] == [e.id for e in [*train, *extra]]
    assert (use.labelset, use.rows, use.used, use.dropped_held_out) == ("corrections@v2", 5, 3, 2)
    assert with_labelsets(train, [*val, *test], {}) == (train, [])


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def test_prompt_and_answer_are_tokenized_as_serving_sees_them(
    tiny_model: Path, records: list[dict[str, Any]]
) -> None:
    tokenizer = load_tokenizer(tiny_model)
    examples = parse_jsonl("\n".join(json.dumps(r) for r in records[:5]), "run")
    eos = turn_end_token(tokenizer)
    assert eos == "<|im_end|>"
    encoded, too_long = encode_examples(tokenizer, examples, eos, max_length=10_000)
    assert too_long == 0
    for example, item in zip(examples, encoded, strict=True):
        prompt = encode_prompt(tokenizer, example.messages)
        assert list(item.input_ids[: item.prompt_length]) == prompt
        assert render_prompt(tokenizer, example.messages).endswith("<think>\n\n</think>\n\n")
        answer = tokenizer.decode(item.input_ids[item.prompt_length :])
        assert answer == example.target + eos
    longest = max(len(e) for e in encoded)
    kept, dropped = encode_examples(tokenizer, examples, eos, max_length=longest - 1)
    assert dropped >= 1 and len(kept) == 5 - dropped


def test_batches_group_similar_lengths_and_cover_every_example_once() -> None:
    lengths = [(i * 37) % 101 + 10 for i in range(500)]
    batches = length_grouped_batches(lengths, batch_size=8, seed=3)
    assert sorted(i for batch in batches for i in batch) == list(range(500))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread / len(batches) < 10  # random batches would spread over most of 0..100
    assert batches == length_grouped_batches(lengths, batch_size=8, seed=3)
    assert batches != length_grouped_batches(lengths, batch_size=8, seed=4)


def test_a_capped_test_split_is_a_fixed_sample_of_its_rows() -> None:
    test = [Example(f"row-{i}", (), target="", label={}) for i in range(113)]
    capped = scored_test_split("dr-1", test, 40)
    ids = [e.id for e in capped.examples]
    assert len(set(ids)) == 40 and set(ids) <= {e.id for e in test}
    assert ids == sorted(ids, key=lambda i: int(i.removeprefix("row-")))  # split order kept
    assert [e.id for e in scored_test_split("dr-1", test, 40).examples] == ids  # every version
    assert [e.id for e in scored_test_split("dr-2", test, 40).examples] != ids  # another run
    assert capped.source == "40 of the 113 rows of the test split of dr-1"
    assert scored_test_split("dr-1", test, None).examples == test
    assert scored_test_split("dr-1", test, 113).examples == test
