"""Workers killed (SIGKILL) or stopped (SIGTERM) mid-task, and jobs submitted again.

Real Celery workers on real Redis and the real APIs over HTTP. Every job must end with exactly
one output whose row counts match the input, without a second submission: a restarted worker
requeues the task of the dead one (shared/orphans.py), a stopped one hands its task back.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.ingest.pipeline import load_manifest
from shared.queue import redis_client
from shared.samples import generate_complaints, write_export
from shared.store import Layout, Store
from tests.reliability.job_support import dataset_state, upload
from tests.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

INGEST_ROWS = 40_000


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export big enough that ingesting it takes the worker several seconds."""
    out = tmp_path_factory.mktemp("big-export") / "complaints.csv"
    write_export(generate_complaints(INGEST_ROWS, seed=7), "csv", out)
    return out


def wait_finished(read: Any, timeout: float, what: str) -> dict[str, Any]:
    body: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal body
        body = read()
        return body["state"] in ("ready", "failed")

    wait_until(finished, timeout, what)
    return body


def queued(queue: str) -> int:
    """Tasks waiting in a Celery queue (a Redis list named after it)."""
    return int(redis_client().llen(queue))


def unacked() -> int:
    """Tasks delivered to a worker and not acknowledged yet (kombu's Redis ack emulation)."""
    return int(redis_client().hlen("unacked"))


def files_in(store: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}


def test_a_killed_ingest_worker_is_replaced_and_the_dataset_built_once(
    start_worker, start_api, big_export: Path, isolated_settings: Path, redis_url: str, record
) -> None:
    worker = start_worker("ingest")
    api = start_api("ingest")
    store = Store.from_settings()
    accepted = upload(api.url, big_export)
    assert accepted.status_code == 202, accepted.text
    dataset_id = accepted.json()["dataset_id"]
    wait_until(lambda: dataset_state(api.url, dataset_id)["state"] == "running", 60, "running")
    time.sleep(1.0)
    worker.stop(signal.SIGKILL)
    # Killed mid-task: nothing of the dataset is visible, its task is left unacknowledged.
    assert load_manifest(store, dataset_id) is None
    assert (queued("ingest"), unacked()) == (0, 1)

    # Sent again while the dead worker's lease lives: the same dataset, nothing queued twice.
    again = upload(api.url, big_export)
    assert again.status_code == 202, again.text
    assert (again.json()["dataset_id"], again.json()["state"]) == (dataset_id, "running")
    assert queued("ingest") == 0

    restarted = time.monotonic()
    replacement = start_worker("ingest")
    body = wait_finished(lambda: dataset_state(api.url, dataset_id), 120, "dataset after restart")
    recovered_s = time.monotonic() - restarted
    assert body["state"] == "ready", body
    assert "orphaned tasks requeued" in replacement.log()

    counts = body["counts"]
    assert counts["rows"] == INGEST_ROWS
    assert counts["clean"] + counts["rejected"] == INGEST_ROWS
    assert store.children("datasets") == [dataset_id]
    assert len(store.list("raw")) == 1
    clean = store.read_parquet(Layout.dataset_clean(dataset_id))
    rejected = store.read_parquet(Layout.dataset_rejected(dataset_id))
    assert (clean.num_rows, rejected.num_rows) == (counts["clean"], counts["rejected"])
    rows = clean.column("source_row").to_pylist() + rejected.column("source_row").to_pylist()
    assert len(set(rows)) == len(rows) == INGEST_ROWS
    assert (queued("ingest"), unacked()) == (0, 0)

    snapshot = files_in(isolated_settings)
    third = upload(api.url, big_export)
    assert (third.status_code, third.json()["dataset_id"], third.json()["state"]) == (
        200,
        dataset_id,
        "ready",
    )
    time.sleep(1)
    assert files_in(isolated_settings) == snapshot and queued("ingest") == 0
    record(
        1,
        f"ingest: {INGEST_ROWS:,}-row CSV uploaded; worker SIGKILLed mid-task (state running, "
        "no manifest yet) and restarted; nothing resubmitted",
        f"dataset ready {recovered_s:.0f} s after the restart (the restarted worker requeued "
        f"the orphaned task); exactly 1 dataset; {INGEST_ROWS:,} rows in = {counts['clean']:,} "
        f"clean + {counts['rejected']:,} rejected, every source row once",
    )
    record(
        14,
        "ingest: the same file uploaded 3 times (running, orphaned by a kill, ready)",
        f"one dataset id; 202 with no second task while running, 200 once ready; "
        f"{len(snapshot)} store files unchanged by the third upload",
    )


def submit_run(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/distill-runs", json=body, timeout=10)


def run_state(url: str, run_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/distill-runs/{run_id}", timeout=10).json()


def test_a_stopped_distill_worker_hands_its_run_back(
    make_dataset,
    start_stub,
    use_teacher,
    start_worker,
    start_api,
    read_run_file,
    redis_url: str,
    record,
) -> None:
    dataset = make_dataset(240, 43)
    stub = start_stub(dataset.labels, latency_ms=300)
    env = use_teacher(stub.base_url, teacher_max_concurrency=2)
    worker = start_worker("distill", **env)
    api = start_api("distill", **env)
    store = Store.from_settings()

    run_id = submit_run(api.url, dataset_id=dataset.dataset_id).json()["run_id"]
    wait_until(lambda: len(store.list("cache/teacher")) >= 20, 60, "first answers cached")
    stopped = time.monotonic()
    os.kill(worker.process.pid, signal.SIGTERM)  # what docker stop and Kubernetes send
    worker.process.wait(timeout=60)
    stop_s = time.monotonic() - stopped
    # The worker gave its run back: queued again, not held unacknowledged for the visibility
    # timeout, and not finished.
    assert (queued("distill"), unacked()) == (1, 0)
    assert run_state(api.url, run_id)["state"] == "running"
    cached_before = len(store.list("cache/teacher"))
    asked_before = stub.state.chat_requests
    assert cached_before < dataset.rows

    restarted = time.monotonic()
    start_worker("distill", **env)
    body = wait_finished(lambda: run_state(api.url, run_id), 120, "distill run after restart")
    resumed_s = time.monotonic() - restarted
    assert body["state"] == "ready", body
    assert resumed_s < 60
    assert body["manifest"]["teacher"]["cached_answers"] == cached_before
    assert stub.state.chat_requests - asked_before == dataset.rows - cached_before
    ids: Counter[str] = Counter()
    for name in ("train", "val", "test", "rejected"):
        ids.update(r["id"] for r in read_run_file(dataset.dataset_id, run_id, f"{name}.jsonl"))
    assert len(ids) == dataset.rows and set(ids.values()) == {1}
    record(
        2,
        f"distill: {dataset.rows}-row run (teacher 300 ms a request); worker sent SIGTERM "
        f"after {cached_before} answers were cached, then restarted",
        f"worker exited {stop_s:.0f} s after SIGTERM with its task back in the queue (1 queued, "
        f"0 unacknowledged); run ready {resumed_s:.0f} s after the restart; "
        f"{dataset.rows - cached_before} teacher calls after it, none repeated; every row once",
    )
