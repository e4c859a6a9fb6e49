"""Celery tasks of batch extraction (queue `batch`). Start a worker with `tiqu worker batch`.

A job holds a Redis lease while it runs. A worker killed mid-way leaves whole chunks behind and
its lease lapses within seconds; submitting the job again (or Redis redelivering the task) queues
it again, and it resumes after the last whole chunk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Counter, Gauge

from services.serve.batch import (
    BatchRequest,
    Progress,
    request_key,
    run_batch,
    save_progress,
    status_key,
)
from shared.errors import TiquError
from shared.jobs import JobLease, JobState, JobStatus, enqueue, save_status, settle_failure
from shared.queue import app, publish_event
from shared.settings import get_settings
from shared.store import Store, StoreError

log = logging.getLogger(__name__)

BATCH_ROWS = Counter(
    "tiqu_batch_rows_total", "Batch rows processed, by outcome (ok, error).", ["outcome"]
)
BATCH_RATE = Gauge(
    "tiqu_batch_rows_per_second", "Rows per second of the batch job running in this worker."
)
BATCH_JOBS = Counter("tiqu_batch_jobs_total", "Batch jobs finished, by result.", ["result"])


class _Reporter:
    """Progress into the job status (for the API) and into the worker's metrics."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.rows = 0
        self.failed = 0

    def __call__(self, progress: Progress) -> None:
        BATCH_ROWS.labels("error").inc(progress.rows_failed - self.failed)
        BATCH_ROWS.labels("ok").inc(
            (progress.rows_this_run - self.rows) - (progress.rows_failed - self.failed)
        )
        self.rows, self.failed = progress.rows_this_run, progress.rows_failed
        BATCH_RATE.set(progress.snapshot()["rows_per_s"])
        save_progress(self.store, self.job_id, progress)


@app.task(
    name="batch.run",
    bind=True,
    autoretry_for=(StoreError, ConnectionError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def batch_run(self: Any, *, job_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run batch job `job_id` to its output (resuming after its last whole chunk)."""
    store = Store.from_settings()
    with JobLease("batch", job_id) as lease:
        if not lease.acquired:
            log.info("batch job is being run by another worker", extra={"job_id": job_id})
            return {"job_id": job_id, "state": JobState.RUNNING.value}
        save_status(store, status_key(job_id), JobStatus(state=JobState.RUNNING))
        try:
            manifest = asyncio.run(
                run_batch(
                    store, job_id, BatchRequest(**request), get_settings(), _Reporter(store, job_id)
                )
            )
        except TiquError as exc:
            # An export that no longer parses, say: retrying cannot help.
            save_status(
                store,
                status_key(job_id),
                JobStatus(state=JobState.FAILED, error=exc.message, error_code=exc.code),
            )
            BATCH_JOBS.labels("failed").inc()
            return {"job_id": job_id, "state": "failed", "error": exc.message}
        except Exception as exc:
            if settle_failure(self, store, status_key(job_id), exc) == JobState.FAILED:
                BATCH_JOBS.labels("failed").inc()
            raise
        finally:
            BATCH_RATE.set(0)
    progress = {"rows_total": manifest["rows"], "rows_done": manifest["rows"]}
    progress["rows_failed"] = manifest["rows_failed"]
    save_status(store, status_key(job_id), JobStatus(state=JobState.READY, progress=progress))
    BATCH_JOBS.labels("ready").inc()
    publish_event("batch.ready", {"job_id": job_id, "rows": manifest["rows"]})
    log.info("batch finished", extra={"job_id": job_id, "rows": manifest["rows"]})
    return {"job_id": job_id, "state": "ready", "rows": manifest["rows"]}


def queue_batch(store: Store, job_id: str, request: BatchRequest) -> None:
    """Record what batch job `job_id` is asked to do and queue its task: a new job, or one that
    failed or whose worker died (it resumes after its last whole chunk). Raises
    UnavailableError when the queue cannot take it."""
    store.write_json(request_key(job_id), request.to_dict())
    enqueue(
        store,
        status_key(job_id),
        batch_run,
        kwargs={"job_id": job_id, "request": request.to_dict()},
        task_id=f"batch-{job_id}",
    )
