"""The distill REST API with a real Celery worker on real Redis and the teacher stub over HTTP."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from services.distill.tasks import request_key
from shared.jobs import job_lease_held
from shared.queue import subscribe_events
from shared.store import Store
from tests.support import free_port, wait_until

if TYPE_CHECKING:
    from tests.distill.conftest import Dataset

pytestmark = pytest.mark.integration

ReadRunFile = Callable[[str, str, str], list[dict[str, Any]]]


def submit(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/distill-runs", json=body, timeout=10)


def wait_ready(url: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
    body: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal body
        body = httpx.get(f"{url}/v1/distill-runs/{run_id}", timeout=5).json()
        return body["state"] in ("ready", "failed")

    wait_until(finished, timeout, f"distill run {run_id}")
    return body


def assert_every_row_once(read: ReadRunFile, dataset: Dataset, run_id: str, rows: int) -> None:
    ids: Counter[str] = Counter()
    for name in ("train", "val", "test", "rejected"):
        ids.update(r["id"] for r in read(dataset.dataset_id, run_id, f"{name}.jsonl"))
    assert len(ids) == rows
    assert set(ids.values()) == {1}


def test_api_answers_202_200_404_and_the_worker_distills(
    dataset: Dataset,
    start_stub,
    use_teacher,
    start_worker,
    start_api,
    read_run_file: ReadRunFile,
    record,
) -> None:
    stub = start_stub(dataset.labels)
    env = use_teacher(stub.base_url)
    metrics_port = free_port()
    start_worker("distill", TIQU_WORKER_METRICS_PORT=str(metrics_port), **env)
    api = start_api("distill", **env)

    missing = submit(api.url, dataset_id="ds-0123456789abcdef")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    invalid = submit(api.url, dataset_id=dataset.dataset_id, samples=0)
    assert invalid.status_code == 422
    assert invalid.json()["error"]["type"] == "invalid_input"

    events: list[dict[str, Any]] = []
    listener = threading.Thread(
        target=lambda: events.extend(e for e in subscribe_events(timeout=30)), daemon=True
    )
    listener.start()
    created = submit(api.url, dataset_id=dataset.dataset_id, limit=50)
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    # What the console queues a failed run again from.
    recorded = Store.from_settings().read_json(request_key(dataset.dataset_id, run_id))
    assert recorded["options"]["limit"] == 50 and recorded["run_id"] == run_id
    assert created.json()["state"] in ("queued", "running")

    body = wait_ready(api.url, run_id)
    assert body["state"] == "ready", body
    assert body["manifest"]["counts"]["rows"] == 50
    assert_every_row_once(read_run_file, dataset, run_id, 50)

    again = submit(api.url, dataset_id=dataset.dataset_id, limit=50)
    assert again.status_code == 200
    assert again.json()["run_id"] == run_id and again.json()["state"] == "ready"
    for unknown in (f"dr-{'0' * 16}-{'0' * 12}", "nonsense"):
        response = httpx.get(f"{api.url}/v1/distill-runs/{unknown}", timeout=5)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"

    wait_until(
        lambda: any(e["type"] == "distill.ready" and e["data"]["run_id"] == run_id for e in events),
        30,
        "distill.ready event",
    )
    worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    accepted = body["manifest"]["counts"]["accepted"]
    assert f'tiqu_distill_labels_total{{outcome="accepted",reason=""}} {accepted}.0' in (
        worker_metrics
    )
    assert "tiqu_teacher_requests_total" in worker_metrics
    assert stub.state.chat_requests == 50
    record(
        14,
        "distill: the same run (dataset and options) submitted twice, the second time after "
        "it finished",
        f"one run id; 202 then 200 with the report; {stub.state.chat_requests} teacher calls "
        "for 50 rows, none for the second submission",
    )


def test_a_killed_worker_is_resumed_without_asking_again(
    make_dataset,
    start_stub,
    use_teacher,
    start_worker,
    start_api,
    read_run_file: ReadRunFile,
    record,
) -> None:
    dataset = make_dataset(150, 33)
    stub = start_stub(dataset.labels, latency_ms=250)
    env = use_teacher(stub.base_url, teacher_max_concurrency=4)
    worker = start_worker("distill", **env)
    api = start_api("distill", **env)
    store = Store.from_settings()

    run_id = submit(api.url, dataset_id=dataset.dataset_id).json()["run_id"]
    wait_until(lambda: len(store.list("cache/teacher")) >= 40, 60, "first answers cached")
    worker.stop(signal.SIGKILL)
    asked_before = stub.state.chat_requests
    cached_before = len(store.list("cache/teacher"))
    assert cached_before < dataset.rows

    # While the dead worker's lease lives the run still counts as running: nothing is queued.
    orphan = submit(api.url, dataset_id=dataset.dataset_id)
    assert (orphan.status_code, orphan.json()["state"]) == (202, "running")
    start_worker("distill", **env)
    wait_until(
        lambda: not job_lease_held("distill", run_id), 30, "the dead worker's lease to expire"
    )
    resumed = submit(api.url, dataset_id=dataset.dataset_id)
    assert resumed.status_code == 202

    body = wait_ready(api.url, run_id)
    assert body["state"] == "ready", body
    assert body["manifest"]["teacher"]["cached_answers"] == cached_before
    assert stub.state.chat_requests - asked_before == dataset.rows - cached_before
    assert_every_row_once(read_run_file, dataset, run_id, dataset.rows)
    record(
        1,
        f"distill: {dataset.rows}-row run; worker SIGKILLed after {cached_before} teacher "
        "answers were cached, restarted, run resubmitted",
        f"run ready with every one of the {dataset.rows} rows exactly once in the splits and "
        f"rejected.jsonl; {stub.state.chat_requests - asked_before} teacher calls after the kill "
        f"= {dataset.rows} rows - {cached_before} cached, no answer asked twice",
    )
