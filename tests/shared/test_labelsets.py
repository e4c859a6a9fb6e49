"""Label sets: immutable versions, corrections replacing earlier ones, refusals, racing writers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from services.train.data import load_labelset
from shared import labelsets
from shared.errors import InvalidInputError, NotFoundError
from shared.labelsets import Source
from shared.prompts import student_target
from shared.schema import get_schema
from shared.store import Layout, Store

TEXT = "我叫王芳，电话13800138000，邮箱wf@example.com，快递丢了"
LABEL = {"name": "王芳", "phone": "13800138000", "email": "wf@example.com", "question": "快递丢了"}


def source(row: int) -> Source:
    return Source("ds-00000000000000aa", "dr-00000000000000aa-000000000001", f"row-{row}")


def rows_of(store: Store, name: str, version: str) -> list[dict[str, Any]]:
    return labelsets.read_rows(store, name, version)


def test_each_accept_is_a_new_immutable_version_and_a_row_corrected_again_is_replaced() -> None:
    store = Store.from_settings()
    first = labelsets.accept(store, "corrections", TEXT, LABEL, source(1))
    assert (first.reference, first.rows, first.added) == ("corrections@v1", 1, True)
    second = labelsets.accept(store, "corrections", TEXT, {"name": "王芳"}, source(2))
    assert second.reference == "corrections@v2" and second.rows == 2
    assert len(rows_of(store, "corrections", "v1")) == 1

    fixed = labelsets.accept(store, "corrections", TEXT, {**LABEL, "email": " "}, source(1))
    assert fixed.reference == "corrections@v3" and fixed.rows == 2
    latest = {row["id"]: row["label"] for row in rows_of(store, "corrections", "v3")}
    assert latest["row-1"]["email"] is None and latest["row-2"]["phone"] is None
    manifest = labelsets.read_manifest(store, "corrections", "v3")
    assert manifest is not None
    assert manifest["parent"] == "v2" and manifest["replaced"] and manifest["rows"] == 2

    again = labelsets.accept(store, "corrections", TEXT, {**LABEL, "email": ""}, source(1))
    assert again.reference == "corrections@v3" and not again.added
    assert labelsets.versions(store, "corrections") == ["v1", "v2", "v3"]


def test_rows_are_distill_records_that_training_reads() -> None:
    store = Store.from_settings()
    saved = labelsets.accept(store, "gold", TEXT, LABEL, source(1))
    (example,) = load_labelset(store, saved.reference)
    full = {name: LABEL.get(name) for name in get_schema().field_names}
    assert example.text == TEXT and example.label == full
    assert example.target == student_target(full, get_schema())
    (row,) = rows_of(store, "gold", "v1")
    assert row["source"] == {
        "dataset_id": "ds-00000000000000aa",
        "run_id": "dr-00000000000000aa-000000000001",
        "row_id": "row-1",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "李四"}, "name “李四” does not occur in the complaint text"),
        ({"phone": "13900000000"}, "phone “13900000000” does not occur"),
        ({"phone": "call me"}, "phone “call me” is not a valid phone"),
        ({"email": "wf.example.com"}, "email “wf.example.com” is not a valid email"),
        ({"question": "退款三次都没有到账"}, "question “退款三次都没有到账” is not mostly made of"),
    ],
)
def test_a_label_distillation_would_refuse_is_refused_and_nothing_written(
    isolated_settings: Path, change: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as refused:
        labelsets.accept(Store.from_settings(), "corrections", TEXT, {**LABEL, **change}, source(1))
    assert refused.value.code == "label_refused"
    assert not (isolated_settings / "labelsets").exists()


def test_references_pin_the_latest_or_the_named_version() -> None:
    store = Store.from_settings()
    with pytest.raises(NotFoundError, match="label set corrections not found"):
        labelsets.pin(store, "corrections")
    for row in (1, 2):
        labelsets.accept(store, "corrections", TEXT, LABEL, source(row))
    assert labelsets.pin(store, "corrections") == "corrections@v2"
    assert labelsets.pin(store, "corrections@v1") == "corrections@v1"
    with pytest.raises(NotFoundError, match="no version v9; versions: v1, v2"):
        labelsets.pin(store, "corrections@v9")
    for bad in ("Corrections", "corrections@9", "../x"):
        with pytest.raises(InvalidInputError):
            labelsets.pin(store, bad)


def test_a_writer_that_loses_the_race_builds_on_the_winners_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store.from_settings()
    claim = store.create
    raced = []

    def create_after_a_rival(key: str, data: bytes) -> bool:
        # The first claim finds that another writer has just taken the same number.
        if not raced:
            raced.append(key)
            labelsets.accept(Store.from_settings(), "corrections", TEXT, LABEL, source(2))
        return claim(key, data)

    monkeypatch.setattr(store, "create", create_after_a_rival)
    saved = labelsets.accept(store, "corrections", TEXT, LABEL, source(1))
    assert raced == [Layout.labelset("corrections", "v1", labelsets.LABELS_FILE)]
    assert saved.reference == "corrections@v2"
    assert [r["id"] for r in rows_of(store, "corrections", "v2")] == ["row-2", "row-1"]


def test_concurrent_accepts_each_get_a_version_and_none_is_lost() -> None:
    writers = 6
    start = threading.Barrier(writers)
    saved: list[labelsets.Saved] = []

    def write(row: int) -> None:
        start.wait()
        saved.append(
            labelsets.accept(Store.from_settings(), "corrections", TEXT, LABEL, source(row))
        )

    threads = [threading.Thread(target=write, args=(row,)) for row in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = Store.from_settings()
    assert sorted(s.version for s in saved) == [f"v{n}" for n in range(1, writers + 1)]
    latest = rows_of(store, "corrections", f"v{writers}")
    assert sorted(r["id"] for r in latest) == sorted(f"row-{n}" for n in range(writers))
