"""The hand-written evaluation set is well-formed: every gold value is typed and in its text."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from services.train.data import load_gold
from shared.normalize import field_grounded
from shared.samples import generate_complaints
from shared.schema import get_schema

GOLD = Path(__file__).resolve().parents[1] / "data" / "handwritten" / "complaints.jsonl"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines()]


def test_it_has_at_least_200_distinct_complaints_in_many_styles(rows: list[dict]) -> None:
    assert len(rows) >= 200
    assert len({row["id"] for row in rows}) == len(rows)
    assert len({row["text"] for row in rows}) == len(rows)
    styles = Counter(row["style"] for row in rows)
    assert len(styles) >= 25 and min(styles.values()) >= 5


def test_every_gold_label_fits_the_schema_and_its_text(rows: list[dict]) -> None:
    schema = get_schema()
    for row in rows:
        label = {name: row[name] for name in schema.field_names}
        assert schema.errors(label) == [], row["id"]
        for spec in schema.fields:
            value = label[spec.name]
            if value is not None and spec.grounding == "exact":
                assert value in row["text"], (row["id"], spec.name)
            assert field_grounded(spec, value, row["text"]), (row["id"], spec.name)


def test_every_field_is_present_in_some_rows_and_absent_in_others(rows: list[dict]) -> None:
    for name in get_schema().field_names:
        present = sum(row[name] is not None for row in rows)
        assert 0 < present <= len(rows)
    assert sum(all(row[n] is None for n in ("name", "phone", "email", "address")) for row in rows)


def test_no_text_comes_from_the_sample_generator(rows: list[dict]) -> None:
    generated = set(generate_complaints(5000, seed=7).labels["text"])
    assert not generated & {row["text"] for row in rows}


def test_tiqu_eval_reads_it_as_a_gold_file(rows: list[dict]) -> None:
    examples = load_gold(GOLD, get_schema())
    assert len(examples) == len(rows)
