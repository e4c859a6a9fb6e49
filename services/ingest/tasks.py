"""Celery tasks of the ingest service (queue `ingest`).

Start a worker with `tiqu worker ingest`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram

from services.ingest.pipeline import IngestOptions, ingest_bytes
from shared.errors import TiquError
from shared.jobs import (
    JobLease,
    JobState,
    JobStatus,
    enqueue,
    save_status,
    settle_failure,
)
from shared.queue import app, publish_event
from shared.store import Layout, Store, StoreError

log = logging.getLogger(__name__)

INGEST_ROWS = Counter(
    "tiqu_ingest_rows_total", "Rows ingested, by outcome and reason.", ["outcome", "reason"]
)
INGEST_BYTES = Counter("tiqu_ingest_bytes_total", "Bytes of export files ingested.")
INGEST_DURATION = Histogram(
    "tiqu_ingest_duration_seconds",
    "Time to turn one export into a dataset.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
INGEST_JOBS = Counter("tiqu_ingest_jobs_total", "Ingest jobs finished, by state.", ["state"])


def record_metrics(manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    INGEST_ROWS.labels("clean", "").inc(counts["clean"])
    for reason, number in counts["rejected_by_reason"].items():
        INGEST_ROWS.labels("rejected", reason).inc(number)
    INGEST_BYTES.inc(manifest["source"]["bytes"])


@app.task(
    name="ingest.dataset",
    bind=True,
    autoretry_for=(StoreError, ConnectionError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def ingest_dataset(
    self: Any, *, dataset_id: str, raw_key: str, filename: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Build dataset `dataset_id` from the uploaded export stored at `raw_key`.

    Holds the dataset's lease while it works: a second delivery of the task waits for a dead
    worker's lease to lapse, and leaves alone a dataset that a live worker is building.
    """
    store = Store.from_settings()
    status_key = Layout.dataset_status(dataset_id)
    started = time.perf_counter()
    with JobLease("ingest", dataset_id) as lease:
        if not lease.acquired:
            log.info("dataset is being built by another worker", extra={"dataset_id": dataset_id})
            return {"dataset_id": dataset_id, "state": JobState.RUNNING.value}
        save_status(store, status_key, JobStatus(state=JobState.RUNNING))
        try:
            result = ingest_bytes(
                store.read_bytes(raw_key), filename, IngestOptions(**options), store
            )
            if result.dataset_id != dataset_id:
                raise RuntimeError("dataset id mismatch: options changed between upload and task")
        except TiquError as exc:
            save_status(
                store,
                status_key,
                JobStatus(state=JobState.FAILED, error=exc.message, error_code=exc.code),
            )
            INGEST_JOBS.labels("failed").inc()
            return {"dataset_id": dataset_id, "state": "failed", "error": exc.message}
        except Exception as exc:
            if settle_failure(self, store, status_key, exc) == JobState.FAILED:
                INGEST_JOBS.labels("failed").inc()
            raise
    if not result.reused:
        record_metrics(result.manifest)
        INGEST_DURATION.observe(time.perf_counter() - started)
    save_status(store, status_key, JobStatus(state=JobState.READY))
    INGEST_JOBS.labels("ready").inc()
    publish_event("dataset.ready", {"dataset_id": dataset_id, "counts": result.manifest["counts"]})
    log.info("ingest finished", extra={"dataset_id": dataset_id, "reused": result.reused})
    return {"dataset_id": dataset_id, "state": "ready", "counts": result.manifest["counts"]}


def queue_ingest(
    store: Store, dataset_id: str, *, raw_key: str, filename: str, options: IngestOptions
) -> None:
    """Record what dataset `dataset_id` is built from and queue its task: a new dataset, or one
    that failed or whose worker died. Raises UnavailableError when the queue cannot take it."""
    request = {"raw_key": raw_key, "filename": filename, "options": options.to_dict()}
    store.write_json(Layout.dataset_request(dataset_id), request)
    enqueue(
        store,
        Layout.dataset_status(dataset_id),
        ingest_dataset,
        kwargs={"dataset_id": dataset_id, **request},
        task_id=f"ingest-{dataset_id}",
    )
