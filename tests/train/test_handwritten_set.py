"""The hand-written sets are well-formed: every gold value is typed and in its text, and the
development set (looked at while tuning) shares no complaint with the evaluation set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from services.train.data import load_gold
from shared.normalize import field_grounded
from shared.samples import generate_complaints
from shared.schema import get_schema

HANDWRITTEN = Path(__file__).resolve().parents[1] / "data" / "handwritten"
GOLD = HANDWRITTEN / "complaints.jsonl"
DEV = HANDWRITTEN / "dev.jsonl"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module", params=[GOLD, DEV], ids=["evaluation", "development"])
def gold_file(request: pytest.FixtureRequest) -> Path:
    return request.param


@pytest.fixture(scope="module")
def rows(gold_file: Path) -> list[dict]:
    return read(gold_file)


def test_the_evaluation_set_has_at_least_200_distinct_complaints_in_many_styles() -> None:
    rows = read(GOLD)
    assert len(rows) >= 200
    assert len({row["id"] for row in rows}) == len(rows)
    assert len({row["text"] for row in rows}) == len(rows)
    styles = Counter(row["style"] for row in rows)
    assert len(styles) >= 25 and min(styles.values()) >= 5


def test_the_development_set_covers_the_same_styles_with_other_complaints() -> None:
    evaluation, development = read(GOLD), read(DEV)
    assert {row["style"] for row in development} == {row["style"] for row in evaluation}
    assert min(Counter(row["style"] for row in development).values()) >= 3
    assert len({row["text"] for row in development}) == len(development)
    assert not {row["text"] for row in development} & {row["text"] for row in evaluation}
    assert not {row["id"] for row in development} & {row["id"] for row in evaluation}


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


def test_tiqu_eval_reads_it_as_a_gold_file(gold_file: Path, rows: list[dict]) -> None:
    examples = load_gold(gold_file, get_schema())
    assert len(examples) == len(rows)
