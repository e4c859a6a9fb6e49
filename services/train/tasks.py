"""Celery task of the train service (queue `train`).

Start a worker with `tiqu worker train`. A training holds a Redis lease while it runs (as distill
runs do): a worker killed mid-training lets it lapse within seconds, and the task, delivered
again, resumes from the last checkpoint. The training code (torch, transformers) is imported
when a task runs, not when the worker starts: the worker's parent process stays small and never
initializes thread pools that its forked children would inherit.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from services.train.request import TrainRequest
from shared.errors import TiquError
from shared.jobs import (
    JobLease,
    JobState,
    JobStatus,
    enqueue,
    load_status,
    save_status,
    settle_failure,
)
from shared.queue import app
from shared.settings import get_settings
from shared.store import Layout, Store, StoreError

if TYPE_CHECKING:
    from services.train.trainer import TrainProgress

log = logging.getLogger(__name__)

TRAIN_TOKENS_PER_S = Gauge(
    "tiqu_train_tokens_per_second",
    "Training throughput (prompt + answer tokens per second) of the running training.",
    multiprocess_mode="livemostrecent",
)
TRAIN_LOSS = Gauge(
    "tiqu_train_loss",
    "Loss per answer token of the last optimizer step.",
    multiprocess_mode="livemostrecent",
)
TRAIN_STEP = Gauge(
    "tiqu_train_step", "Optimizer step of the running training.", multiprocess_mode="livemostrecent"
)
TRAIN_RUNS = Counter(
    "tiqu_train_runs_total",
    "Trainings finished, by outcome: promoted, registered (not promoted), reused, failed.",
    ["outcome"],
)
# Job status writes while training: often enough to follow, rare enough to cost nothing.
STATUS_EVERY_S = 5.0


def status_key(train_run_id: str) -> str:
    return Layout.train_run(train_run_id, "status.json")


def request_key(train_run_id: str) -> str:
    return Layout.train_run(train_run_id, "request.json")


def result_key(train_run_id: str) -> str:
    return Layout.train_run(train_run_id, "result.json")


class _StatusReporter:
    """Feeds the metrics on every step and the job status in the store every few seconds."""

    def __init__(self, store: Store, train_run_id: str) -> None:
        self.store = store
        self.key = status_key(train_run_id)
        self.progress: dict[str, Any] = {}
        self.written = 0.0

    def stage(self, stage: str, done: int, total: int) -> None:
        self.progress.update(stage=stage, stage_done=done, stage_total=total)
        self._write(force=done in (0, total))

    def step(self, progress: TrainProgress) -> None:
        TRAIN_TOKENS_PER_S.set(progress.tokens_per_s)
        TRAIN_LOSS.set(progress.loss)
        TRAIN_STEP.set(progress.step)
        remaining = progress.total_steps - progress.step
        per_step = progress.elapsed_s / max(progress.step, 1)
        self.progress.update(
            stage="train",
            epoch=progress.epoch,
            epochs=progress.epochs,
            step=progress.step,
            total_steps=progress.total_steps,
            loss=round(progress.loss, 5),
            tokens_per_s=round(progress.tokens_per_s, 1),
            eta_s=round(remaining * per_step),
        )
        self._write(force=False)

    def _write(self, *, force: bool) -> None:
        now = time.monotonic()
        if force or now - self.written >= STATUS_EVERY_S:
            save_status(
                self.store, self.key, JobStatus(state=JobState.RUNNING, progress=self.progress)
            )
            self.written = now


@app.task(
    name="train.run",
    bind=True,
    autoretry_for=(StoreError, ConnectionError),
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=3,
)
def train_run(self: Any, *, train_run_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run training `train_run_id`; a second delivery resumes it or returns its result."""
    from services.train.pipeline import run_training

    store = Store.from_settings()
    settings = get_settings()
    with JobLease("train", train_run_id) as lease:
        if not lease.acquired:
            log.info("training is run by another worker", extra={"train_run_id": train_run_id})
            return {"state": JobState.RUNNING.value, "train_run_id": train_run_id}
        # Retried by Celery on store and Redis errors (the checkpoint makes a retry cheap); any
        # other exception, before the training or in it, fails it: nothing stays `queued`.
        try:
            if store.exists(result_key(train_run_id)):
                return {"state": "ready", **store.read_json(result_key(train_run_id))}
            train_request = TrainRequest.from_dict(request)
            if train_request.train_run_id(settings) != train_run_id:
                raise TiquError(
                    "the worker's settings (base model or schema) differ from those the "
                    "training was submitted with; give the API and the worker the same settings",
                    code="settings_mismatch",
                )
            reporter = _StatusReporter(store, train_run_id)
            previous = load_status(store, status_key(train_run_id))
            reporter.progress = previous.progress if previous else {}
            reporter.stage("start", 0, 1)
            outcome = run_training(
                store, settings, train_request, on_stage=reporter.stage, on_step=reporter.step
            )
        except TiquError as exc:
            return _failed(store, train_run_id, exc.message, exc.code)
        except Exception as exc:
            if settle_failure(self, store, status_key(train_run_id), exc) == JobState.FAILED:
                TRAIN_RUNS.labels("failed").inc()
            raise
        result = outcome.summary()
        store.write_json(result_key(train_run_id), result)
        ready = JobStatus(state=JobState.READY, progress=reporter.progress)
        save_status(store, status_key(train_run_id), ready)
    TRAIN_RUNS.labels(
        "reused" if outcome.reused else "promoted" if outcome.promoted else "registered"
    ).inc()
    return {"state": "ready", **result}


def queue_training(store: Store, train_run_id: str, request: TrainRequest) -> None:
    """Record what training `train_run_id` is asked to do and queue its task: a new training,
    or one that failed or whose worker died (it resumes from its last checkpoint). Raises
    UnavailableError when the queue cannot take it."""
    store.write_json(request_key(train_run_id), request.to_dict())
    enqueue(
        store,
        status_key(train_run_id),
        train_run,
        kwargs={"train_run_id": train_run_id, "request": request.to_dict()},
        task_id=f"train-{train_run_id}",
    )


def _failed(
    store: Store, train_run_id: str, message: str, code: str | None = None
) -> dict[str, Any]:
    save_status(
        store,
        status_key(train_run_id),
        JobStatus(state=JobState.FAILED, error=message, error_code=code),
    )
    TRAIN_RUNS.labels("failed").inc()
    log.warning("training failed", extra={"train_run_id": train_run_id, "error_code": code})
    return {"state": "failed", "train_run_id": train_run_id, "error": message}
