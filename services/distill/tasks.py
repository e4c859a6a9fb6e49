"""Celery tasks of the distill service (queue `distill`).

Start a worker with `tiqu worker distill`. A run holds a short Redis lease while it works, renewed
by a heartbeat: a second delivery of the same run (Redis redelivers unacknowledged tasks) leaves it
alone while the lease lives, and when a worker dies the lease expires within seconds, which is how
the API knows that a run still marked `running` must be started again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram

from services.distill.prompt import ExtractionPrompt
from services.distill.run import DistillOptions, RunProgress, run_distill, run_id_for
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
from shared.schema import get_schema
from shared.store import Layout, Store, StoreError

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0

DISTILL_LABELS = Counter(
    "tiqu_distill_labels_total",
    "Rows judged by distill runs, by outcome (accepted, rejected) and rejection reason.",
    ["outcome", "reason"],
)
DISTILL_RUNS = Counter("tiqu_distill_runs_total", "Distill runs finished, by state.", ["state"])
DISTILL_DURATION = Histogram(
    "tiqu_distill_duration_seconds",
    "Time to finish one distill run.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)


def status_key(dataset_id: str, run_id: str) -> str:
    return Layout.distill_run(dataset_id, run_id, "status.json")


def request_key(dataset_id: str, run_id: str) -> str:
    return Layout.distill_run(dataset_id, run_id, "request.json")


def record_metrics(manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    DISTILL_LABELS.labels("accepted", "").inc(counts["accepted"])
    for reason, number in counts["rejected_by_reason"].items():
        DISTILL_LABELS.labels("rejected", reason).inc(number)
    DISTILL_DURATION.observe(manifest["duration_s"])


def _status_writer(store: Store, key: str) -> Callable[[RunProgress], None]:
    """A progress callback that saves the run's progress, at most once per interval."""
    last = 0.0

    def write(progress: RunProgress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= STATUS_INTERVAL_S:
            last = now
            save_status(store, key, JobStatus(state=JobState.RUNNING, progress=progress.as_dict()))

    return write


@app.task(
    name="distill.run",
    bind=True,
    autoretry_for=(StoreError, ConnectionError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def distill_run(
    self: Any, *, dataset_id: str, run_id: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Run (or resume) distill run `run_id` of dataset `dataset_id`."""
    store = Store.from_settings()
    key = status_key(dataset_id, run_id)
    with JobLease("distill", run_id) as lease:
        if not lease.acquired:
            log.info("distill run is being run by another worker", extra={"run_id": run_id})
            return {"run_id": run_id, "state": JobState.RUNNING.value}
        save_status(store, key, JobStatus(state=JobState.RUNNING))
        try:
            distill_options = DistillOptions(**options)
            prompt = ExtractionPrompt.for_schema(get_schema())
            if run_id_for(dataset_id, distill_options, prompt) != run_id:
                raise TiquError(
                    "the worker's settings (teacher model, schema or prompt) differ from those "
                    "the run was submitted with; give the API and the worker the same settings",
                    code="settings_mismatch",
                )
            result = run_distill(
                dataset_id, distill_options, store, progress=_status_writer(store, key)
            )
        except TiquError as exc:
            # Bad input, an unknown dataset or an unusable teacher: retrying cannot help.
            status = JobStatus(state=JobState.FAILED, error=exc.message, error_code=exc.code)
            save_status(store, key, status)
            DISTILL_RUNS.labels("failed").inc()
            log.warning("distill run failed", extra={"run_id": run_id, "error_code": exc.code})
            return {"run_id": run_id, "state": JobState.FAILED.value, "error": exc.message}
        except Exception as exc:
            if settle_failure(self, store, key, exc) == JobState.FAILED:
                DISTILL_RUNS.labels("failed").inc()
            raise
    counts = result.manifest["counts"]
    if not result.reused:
        record_metrics(result.manifest)
    save_status(store, key, JobStatus(state=JobState.READY, progress=counts))
    DISTILL_RUNS.labels("ready").inc()
    publish_event(
        "distill.ready",
        {
            "run_id": run_id,
            "dataset_id": dataset_id,
            "counts": counts,
            "splits": result.manifest["splits"],
        },
    )
    log.info("distill run ready", extra={"run_id": run_id, "reused": result.reused})
    return {"run_id": run_id, "state": JobState.READY.value, "counts": counts}


def queue_distill(store: Store, dataset_id: str, run_id: str, options: DistillOptions) -> None:
    """Record what distill run `run_id` is asked to do and queue its task: a new run, or one that
    failed or whose worker died (it resumes from the teacher cache). Raises UnavailableError when
    the queue cannot take it."""
    request = {"dataset_id": dataset_id, "run_id": run_id, "options": options.to_dict()}
    store.write_json(request_key(dataset_id, run_id), request)
    enqueue(
        store,
        status_key(dataset_id, run_id),
        distill_run,
        kwargs=request,
        task_id=f"distill-{run_id}",
    )
