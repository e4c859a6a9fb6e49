"""The store: one code path for file:// and s3:// (a real S3 protocol server), atomic writes."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from shared.store import Layout, Store, StoreError, safe_filename


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store(f"file://{tmp_path / 'root'}")
    endpoint = request.getfixturevalue("s3_server")
    # moto keeps buckets in process-wide state: a bucket per test keeps tests apart.
    bucket = f"tiqu-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return Store(f"s3://{bucket}/prefix", endpoint_url=endpoint, key="testing", secret="testing")


def test_bytes_round_trip(store: Store) -> None:
    store.write_bytes("a/b/c.bin", b"\x00\x01payload")
    assert store.read_bytes("a/b/c.bin") == b"\x00\x01payload"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/missing.bin")


def test_json_keeps_chinese(store: Store) -> None:
    store.write_json("x/manifest.json", {"姓名": "张三", "n": 3})
    assert store.read_json("x/manifest.json") == {"姓名": "张三", "n": 3}


def test_parquet_round_trip(store: Store) -> None:
    table = pa.table({"id": ["1", "2"], "text": ["投诉一", "投诉二"]})
    store.write_parquet("datasets/ds-x/clean.parquet", table)
    assert store.read_parquet("datasets/ds-x/clean.parquet").equals(table)


def test_list_and_children(store: Store) -> None:
    store.write_bytes("datasets/ds-a/manifest.json", b"{}")
    store.write_bytes("datasets/ds-b/clean.parquet", b"x")
    assert store.children("datasets") == ["ds-a", "ds-b"]
    assert store.list("datasets") == ["datasets/ds-a/manifest.json", "datasets/ds-b/clean.parquet"]
    assert store.list("nothing-here") == []


def test_overwrite_replaces_whole_object(store: Store) -> None:
    store.write_bytes("k", b"old" * 1000)
    store.write_bytes("k", b"new")
    assert store.read_bytes("k") == b"new"


def test_delete(store: Store) -> None:
    store.write_bytes("datasets/ds-a/status.json", b"{}")
    store.delete("datasets/ds-a")
    assert not store.exists("datasets/ds-a/status.json")


def test_local_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}")
    for i in range(5):
        store.write_bytes("datasets/ds-a/manifest.json", str(i).encode())
    assert [p.name for p in (tmp_path / "datasets" / "ds-a").iterdir()] == ["manifest.json"]


def test_rejects_keys_escaping_the_root(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}")
    with pytest.raises(StoreError):
        store.write_bytes("../outside", b"x")
    with pytest.raises(StoreError):
        store.read_bytes("")


def test_unsupported_scheme() -> None:
    with pytest.raises(StoreError, match="unsupported store URL"):
        Store("ftp://host/path")


def test_layout_owns_the_paths() -> None:
    assert Layout.raw("ab" * 32, "投诉 导出.xlsx") == f"raw/{'ab' * 32}/投诉_导出.xlsx"
    assert Layout.dataset_manifest("ds-1") == "datasets/ds-1/manifest.json"
    assert Layout.distill_run("ds-1", "run-2", "train.jsonl") == (
        "datasets/ds-1/distill/run-2/train.jsonl"
    )
    assert Layout.teacher_cache("abcdef") == "cache/teacher/ab/abcdef.json"
    assert Layout.adapter("contact", "v3", "manifest.json") == "adapters/contact/v3/manifest.json"
    assert Layout.batch("job-1", "output.jsonl") == "batches/job-1/output.jsonl"


def test_safe_filename_strips_folders_and_odd_characters() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\exports\\a b.csv") == "a_b.csv"
    assert safe_filename("...") == "upload"
