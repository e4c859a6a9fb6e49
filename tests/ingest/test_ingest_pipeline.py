"""The ingest pipeline end to end on generated exports, for file:// and a real S3 server."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pyarrow.compute as pc
import pytest

from services.ingest.pipeline import IngestOptions, dataset_id_for, ingest_bytes
from shared.samples import generate_complaints, write_export
from shared.store import Layout, Store
from shared.tables import ExportFileError


@pytest.fixture(scope="module")
def export_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "complaints.csv"
    write_export(generate_complaints(600, seed=3), "csv", out)
    return out


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store(f"file://{tmp_path / 'store'}")
    endpoint = request.getfixturevalue("s3_server")
    bucket = f"tiqu-ingest-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return Store(f"s3://{bucket}", endpoint_url=endpoint, key="testing", secret="testing")


def test_every_row_is_accounted_for(export_csv: Path, store: Store) -> None:
    result = ingest_bytes(export_csv.read_bytes(), export_csv.name, IngestOptions(), store)
    counts = result.manifest["counts"]
    assert counts["rows"] == 600
    assert counts["clean"] + counts["rejected"] == 600
    assert counts["rejected"] == sum(counts["rejected_by_reason"].values())
    clean = store.read_parquet(Layout.dataset_clean(result.dataset_id))
    rejected = store.read_parquet(Layout.dataset_rejected(result.dataset_id))
    assert clean.num_rows == counts["clean"]
    assert rejected.num_rows == counts["rejected"]
    rows = set(clean.column("source_row").to_pylist()) | set(
        rejected.column("source_row").to_pylist()
    )
    assert rows == set(range(600))


def test_generated_noise_is_rejected_for_the_right_reasons(export_csv: Path, store: Store) -> None:
    labels = generate_complaints(600, seed=3).labels
    result = ingest_bytes(export_csv.read_bytes(), export_csv.name, IngestOptions(), store)
    rejected = store.read_parquet(Layout.dataset_rejected(result.dataset_id)).to_pandas()
    reason_of = dict(zip(rejected["source_row"], rejected["reason"], strict=True))
    kinds = labels["kind"].tolist()
    for row, kind in enumerate(kinds):
        if kind == "empty":
            assert reason_of.get(row) == "empty"
        elif kind == "overlong":
            assert reason_of.get(row) == "too_long"
        elif kind == "exact_duplicate":
            assert reason_of.get(row) in {"duplicate", "near_duplicate"}
    originals = [i for i, k in enumerate(kinds) if k == "original"]
    kept_originals = [i for i in originals if i not in reason_of]
    assert len(kept_originals) >= 0.97 * len(originals)


def test_clean_text_is_normalized(export_csv: Path, store: Store) -> None:
    result = ingest_bytes(export_csv.read_bytes(), export_csv.name, IngestOptions(), store)
    text = store.read_parquet(Layout.dataset_clean(result.dataset_id)).column("text")
    assert not pc.any(pc.match_substring_regex(text, r"<br\s*/?>|&nbsp;|\r|\x{200b}")).as_py()
    assert not pc.any(pc.match_substring_regex(text, r"[０-９Ａ-Ｚａ-ｚ]")).as_py()
    assert pc.min(pc.utf8_length(text)).as_py() >= IngestOptions().min_chars


def test_same_file_twice_does_no_work(export_csv: Path, store: Store) -> None:
    data = export_csv.read_bytes()
    first = ingest_bytes(data, export_csv.name, IngestOptions(), store)
    before = {k: store.read_bytes(k) for k in store.list(f"datasets/{first.dataset_id}")}
    second = ingest_bytes(data, "renamed.csv", IngestOptions(), store)
    assert second.reused and not first.reused
    assert second.dataset_id == first.dataset_id
    assert {k: store.read_bytes(k) for k in store.list(f"datasets/{first.dataset_id}")} == before


def test_different_options_make_a_different_dataset(export_csv: Path) -> None:
    sha = "0" * 64
    assert dataset_id_for(sha, IngestOptions()) != dataset_id_for(
        sha, IngestOptions(near_dup_threshold=0.9)
    )


@pytest.mark.parametrize("fmt", ["xlsx", "jsonl", "parquet"])
def test_other_formats_give_the_same_clean_rows(tmp_path: Path, fmt: str, store: Store) -> None:
    export = generate_complaints(120, seed=5)
    csv_path, other_path = tmp_path / "a.csv", tmp_path / f"a.{fmt}"
    write_export(export, "csv", csv_path)
    write_export(export, fmt, other_path)  # type: ignore[arg-type]
    from_csv = ingest_bytes(csv_path.read_bytes(), csv_path.name, IngestOptions(), store)
    from_other = ingest_bytes(other_path.read_bytes(), other_path.name, IngestOptions(), store)
    clean_csv = store.read_parquet(Layout.dataset_clean(from_csv.dataset_id))
    clean_other = store.read_parquet(Layout.dataset_clean(from_other.dataset_id))
    assert clean_csv.column("text").to_pylist() == clean_other.column("text").to_pylist()
    assert clean_csv.column("id").to_pylist() == clean_other.column("id").to_pylist()


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path / 'store'}")
    bad_inputs = [
        (b"PK\x03\x04broken", "x.xlsx"),
        ("编号,日期\n1,2\n".encode(), "x.csv"),
        (b"text\n\x80\x80 abc\n", "x.csv"),
        (b"abc", "x.docx"),
        (b"", "x.csv"),
    ]
    for data, name in bad_inputs:
        with pytest.raises(ExportFileError):
            ingest_bytes(data, name, IngestOptions(), store)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))
