"""`tiqu ingest` as a user runs it: a report on success, one clear line and exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.samples import generate_complaints, write_export

TIQU = str(Path(sys.executable).with_name("tiqu"))


def run_tiqu(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {"TIQU_STORE_URL": f"file://{store}", "TIQU_LOG_JSON": "true", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [TIQU, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_ingest_prints_the_report_and_reuses(tmp_path: Path) -> None:
    export = tmp_path / "complaints.jsonl"
    write_export(generate_complaints(150, seed=2), "jsonl", export)
    store = tmp_path / "store"

    first = run_tiqu("ingest", str(export), "--json", store=store)
    assert first.returncode == 0, first.stderr
    manifest = json.loads(first.stdout)
    assert manifest["counts"]["rows"] == 150
    assert (store / "datasets" / manifest["dataset_id"] / "manifest.json").is_file()

    second = run_tiqu("ingest", str(export), store=store)
    assert second.returncode == 0
    assert "already ingested" in second.stdout
    assert manifest["dataset_id"] in second.stdout
    assert "clean" in second.stdout and "rejected" in second.stdout


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("notes.docx", b"x", "unsupported file type"),
        ("broken.xlsx", b"PK\x03\x04 nope", "corrupt"),
        ("columns.csv", "编号,日期\n1,2\n".encode(), "no text column found"),
        ("bytes.csv", b"text\n\x80\x80 abc\n", "cannot decode"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    store = tmp_path / "store"
    result = run_tiqu("ingest", str(path), store=store)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not store.exists() or not any(store.rglob("*"))


def test_datasets_list_and_show(tmp_path: Path) -> None:
    export = tmp_path / "complaints.csv"
    write_export(generate_complaints(80, seed=4), "csv", export)
    store = tmp_path / "store"
    dataset_id = json.loads(run_tiqu("ingest", str(export), "--json", store=store).stdout)[
        "dataset_id"
    ]
    listing = run_tiqu("datasets", "list", store=store)
    assert listing.returncode == 0 and dataset_id in listing.stdout
    shown = run_tiqu("datasets", "show", dataset_id, store=store)
    assert shown.returncode == 0 and "total" in shown.stdout
    missing = run_tiqu("datasets", "show", "ds-0000000000000000", store=store)
    assert missing.returncode == 2 and "not found" in missing.stderr
