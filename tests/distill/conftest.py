"""Distill fixtures: a dataset of generated complaints, and the teacher stub that labels it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.distill.stub import StubConfig, StubServer
from services.ingest.pipeline import IngestOptions, ingest_bytes
from shared.samples import generate_complaints, write_export
from shared.settings import get_settings
from shared.store import Layout, Store


@dataclass(frozen=True)
class Dataset:
    dataset_id: str
    labels: Path
    rows: int


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[[int, int], Dataset]:
    """Generate `rows` complaints with `seed`, ingest them into the test store."""

    def make(rows: int, seed: int) -> Dataset:
        export = tmp_path / f"complaints-{rows}-{seed}.jsonl"
        labels = write_export(generate_complaints(rows, seed=seed), "jsonl", export)
        result = ingest_bytes(
            export.read_bytes(), export.name, IngestOptions.from_settings(), Store.from_settings()
        )
        return Dataset(result.dataset_id, labels, result.manifest["counts"]["clean"])

    return make


@pytest.fixture
def dataset(make_dataset: Callable[[int, int], Dataset]) -> Dataset:
    return make_dataset(120, 21)


@pytest.fixture
def start_stub() -> Iterator[Callable[..., StubServer]]:
    """Start the teacher stub in this process (workers reach it over HTTP)."""
    started: list[StubServer] = []

    def start(labels: Path, **faults: Any) -> StubServer:
        stub = StubServer(StubConfig(labels=[labels], **faults)).start()
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()


@pytest.fixture
def use_teacher(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, str]]:
    """Point this process's settings at a teacher; returns the variables for worker processes."""

    def use(base_url: str, **settings: Any) -> dict[str, str]:
        env = {"TIQU_TEACHER_BASE_URL": base_url}
        env |= {f"TIQU_{name.upper()}": str(value) for name, value in settings.items()}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return env

    return use


@pytest.fixture
def read_run_file() -> Callable[[str, str, str], list[dict[str, Any]]]:
    """Read a JSONL file of a distill run from the test store."""

    def read(dataset_id: str, run_id: str, filename: str) -> list[dict[str, Any]]:
        key = Layout.distill_run(dataset_id, run_id, filename)
        data = Store.from_settings().read_bytes(key).decode("utf-8")
        return [json.loads(line) for line in data.splitlines()]

    return read
