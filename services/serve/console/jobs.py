"""Jobs: every dataset, distill run, training and batch job in the store, and each one's detail.

The page reads the same status and manifest objects the services' APIs answer from, so it needs
no service but the store. A job's progress refreshes itself with htmx while it is queued or
running. A failed job can be queued again from its page from the request its API recorded,
exactly as the API queues a resubmitted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from services.distill import tasks as distill_tasks
from services.distill.run import DATASET_ID, DistillOptions, dataset_of, load_run_manifest
from services.ingest import tasks as ingest_tasks
from services.ingest.pipeline import IngestOptions, load_manifest
from services.serve import batch
from services.serve.console.web import (
    CONSOLE_PATH,
    PageError,
    StoreDep,
    Visitor,
    VisitorDep,
    page,
    require,
)
from services.serve.tasks import queue_batch
from services.train import tasks as train_tasks
from services.train.request import TRAIN_RUN_ID, TrainRequest
from shared.api import KeyScope
from shared.errors import TiquError
from shared.jobs import JobState, JobStatus, load_status
from shared.store import Layout, Store

# Enough to see what is going on; the services' APIs list the rest.
LIST_LIMIT = 50


class JobKind(StrEnum):
    DATASET = "dataset"
    DISTILL = "distill"
    TRAIN = "train"
    BATCH = "batch"


JOB_KIND_TITLES = {
    JobKind.DATASET: "Datasets (ingest)",
    JobKind.DISTILL: "Distill runs",
    JobKind.TRAIN: "Train runs",
    JobKind.BATCH: "Batch jobs",
}
# The scope each kind's API asks for.
JOB_KIND_SCOPES = {
    JobKind.DATASET: KeyScope.admin,
    JobKind.DISTILL: KeyScope.admin,
    JobKind.TRAIN: KeyScope.admin,
    JobKind.BATCH: KeyScope.batch,
}
# Why a failed job of these kinds is not queued again from here: their APIs rebuild the task from
# what the client sends again, and the store keeps none of it for a job that failed.
# Jobs queued before their service recorded requests (request.json) cannot be rebuilt here.
NO_REQUEST = (
    "the store holds no request of this job (it was queued before tiqu recorded them): send the "
    "same request to its API again"
)


@dataclass(frozen=True)
class JobProgress:
    """How far a job is: `done` of `total` units of its current `stage`, and its ETA, where its
    task reports them."""

    done: int | None = None
    total: int | None = None
    stage: str | None = None
    eta_s: float | None = None

    def percent(self, state: JobState) -> float | None:
        if state == JobState.READY:
            return 100.0
        if self.done is None or not self.total:
            return None
        return min(100.0, 100.0 * self.done / self.total)


@dataclass(frozen=True)
class Job:
    """One job as the console shows it, read from its status and (once ready) its manifest."""

    kind: JobKind
    job_id: str
    state: JobState
    updated_at: datetime
    progress: JobProgress
    # Rows by outcome (clean, accepted, failed, …) and rejected rows by reason.
    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    error_code: str | None = None
    manifest: dict[str, Any] | None = None

    @property
    def percent(self) -> float | None:
        return self.progress.percent(self.state)

    @property
    def eta(self) -> str | None:
        return None if self.progress.eta_s is None else duration_text(self.progress.eta_s)

    @property
    def settled(self) -> bool:
        return self.state in (JobState.READY, JobState.FAILED)


def duration_text(seconds: float) -> str:
    """`1 h 02 min`, `3 min 05 s` or `42 s`."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _nonzero(counts: Mapping[str, Any]) -> dict[str, int]:
    return {name: int(number) for name, number in counts.items() if number}


# How far each kind's task says it is, from the progress dict its status holds.
def _dataset_progress(_: Mapping[str, Any]) -> JobProgress:
    return JobProgress()  # the ingest task reports no progress, only its state


def _distill_progress(progress: Mapping[str, Any]) -> JobProgress:
    return JobProgress(
        done=_number(progress.get("done")),
        total=_number(progress.get("total")),
        stage=progress.get("stage"),
    )


def _train_progress(progress: Mapping[str, Any]) -> JobProgress:
    # Steps while training; before and after it (base model, register) the stage's own counts.
    stepping = progress.get("stage") == "train"
    return JobProgress(
        done=_number(progress.get("step" if stepping else "stage_done")),
        total=_number(progress.get("total_steps" if stepping else "stage_total")),
        stage=progress.get("stage"),
        eta_s=_number(progress.get("eta_s")) if stepping else None,
    )


def _batch_progress(progress: Mapping[str, Any]) -> JobProgress:
    return JobProgress(
        done=_number(progress.get("rows_done")),
        total=_number(progress.get("rows_total")),
        eta_s=_number(progress.get("eta_s")),
    )


PROGRESS_READERS: dict[JobKind, Callable[[Mapping[str, Any]], JobProgress]] = {
    JobKind.DATASET: _dataset_progress,
    JobKind.DISTILL: _distill_progress,
    JobKind.TRAIN: _train_progress,
    JobKind.BATCH: _batch_progress,
}


def outcome_counts(
    kind: JobKind, progress: Mapping[str, Any], manifest: Mapping[str, Any] | None
) -> tuple[dict[str, int], dict[str, int]]:
    """Rows by outcome and rejected rows by reason: from the manifest once a job is ready, else
    from what its progress counts so far."""
    if kind in (JobKind.DATASET, JobKind.DISTILL):
        counts = manifest["counts"] if manifest else progress
        outcomes = ("clean", "rejected") if kind == JobKind.DATASET else ("accepted", "rejected")
        by_outcome = {name: int(counts[name]) for name in outcomes if name in counts}
        return by_outcome, _nonzero(counts.get("rejected_by_reason", {}))
    if kind == JobKind.BATCH:
        rows = manifest["rows"] if manifest else progress.get("rows_done")
        failed = manifest["rows_failed"] if manifest else progress.get("rows_failed")
        if rows is None or failed is None:
            return {}, {}
        return {"answered": int(rows) - int(failed), "failed": int(failed)}, {}
    return {}, {}  # a training counts steps, not rows


def status_key(kind: JobKind, job_id: str) -> str | None:
    """Where the job's status lives; None when `job_id` is not an id of `kind`."""
    if kind == JobKind.DATASET:
        return Layout.dataset_status(job_id) if DATASET_ID.match(job_id) else None
    if kind == JobKind.DISTILL:
        dataset_id = dataset_of(job_id)
        return distill_tasks.status_key(dataset_id, job_id) if dataset_id else None
    if kind == JobKind.TRAIN:
        return train_tasks.status_key(job_id) if TRAIN_RUN_ID.match(job_id) else None
    return batch.status_key(job_id) if batch.BATCH_JOB_ID.match(job_id) else None


def _manifest(store: Store, kind: JobKind, job_id: str) -> dict[str, Any] | None:
    if kind == JobKind.DATASET:
        return load_manifest(store, job_id)
    if kind == JobKind.DISTILL:
        dataset_id = dataset_of(job_id)
        return load_run_manifest(store, dataset_id, job_id) if dataset_id else None
    if kind == JobKind.BATCH:
        key = batch.manifest_key(job_id)
        return store.read_json(key) if store.exists(key) else None
    return None  # a training's result.json is its outcome, not counts of rows


def read_job(store: Store, kind: JobKind, job_id: str) -> Job | None:
    """The job `job_id` of `kind`, or None when the store has none (or it is no such id)."""
    key = status_key(kind, job_id)
    if key is None:
        return None
    status = load_status(store, key)
    manifest = _manifest(store, kind, job_id)
    if status is None:
        if manifest is None:
            return None
        # A dataset or distill run built by the CLI has a manifest and no status: it is ready.
        created_at = datetime.fromisoformat(manifest["created_at"])
        status = JobStatus(state=JobState.READY, updated_at=created_at)
    counts, reasons = outcome_counts(kind, status.progress, manifest)
    return Job(
        kind=kind,
        job_id=job_id,
        state=status.state,
        updated_at=status.updated_at,
        progress=PROGRESS_READERS[kind](status.progress),
        counts=counts,
        reasons=reasons,
        error=status.error,
        error_code=status.error_code,
        manifest=manifest,
    )


def job_ids(store: Store, kind: JobKind) -> list[str]:
    """The ids of every job of `kind` in the store."""
    if kind == JobKind.DISTILL:
        return [
            run_id
            for dataset_id in job_ids(store, JobKind.DATASET)
            for run_id in store.children(Layout.distill_runs_dir(dataset_id))
            if dataset_of(run_id) == dataset_id
        ]
    folder = {
        JobKind.DATASET: Layout.datasets_dir(),
        JobKind.TRAIN: Layout.train_runs_dir(),
        JobKind.BATCH: Layout.batches_dir(),
    }[kind]
    return [job_id for job_id in store.children(folder) if status_key(kind, job_id)]


def list_jobs(store: Store, kind: JobKind, limit: int = LIST_LIMIT) -> list[Job]:
    """The `limit` jobs of `kind` whose status changed last, newest first. Only statuses are
    read to choose them, so a store of thousands of jobs costs one small read each."""

    def last_change(job_id: str) -> float:
        key = status_key(kind, job_id)
        status = load_status(store, key) if key else None
        # Built by the CLI (no status): after every job the APIs ran.
        return status.updated_at.timestamp() if status else 0.0

    newest = sorted(job_ids(store, kind), key=last_change, reverse=True)[:limit]
    return [job for job_id in newest if (job := read_job(store, kind, job_id))]


def request_key(kind: JobKind, job_id: str) -> str | None:
    """Where the request that started a job is stored (None: an id with no dataset in it)."""
    if kind == JobKind.DATASET:
        return Layout.dataset_request(job_id)
    if kind == JobKind.DISTILL:
        dataset_id = dataset_of(job_id)
        return distill_tasks.request_key(dataset_id, job_id) if dataset_id else None
    if kind == JobKind.TRAIN:
        return train_tasks.request_key(job_id)
    return batch.request_key(job_id)


def job_request(store: Store, job: Job) -> dict[str, Any] | None:
    """What the job was asked to do, as its API recorded it when it queued the job."""
    key = request_key(job.kind, job.job_id)
    return store.read_json(key) if key and store.exists(key) else None


def resubmit(store: Store, job: Job) -> None:
    """Queue a failed job again from its stored request, as its API does when the same request
    comes again. Raises PageError when the job cannot be queued from here."""
    if job.state != JobState.FAILED:
        raise PageError(
            409, "Not failed", f"{job.job_id} is {job.state}: only a failed job is queued again."
        )
    request = job_request(store, job)
    if request is None:
        raise PageError(409, "No request", f"{job.job_id}: {NO_REQUEST}.")
    if job.kind == JobKind.DATASET:
        ingest_tasks.queue_ingest(
            store,
            job.job_id,
            raw_key=request["raw_key"],
            filename=request["filename"],
            options=IngestOptions(**request["options"]),
        )
    elif job.kind == JobKind.DISTILL:
        distill_tasks.queue_distill(
            store, request["dataset_id"], job.job_id, DistillOptions(**request["options"])
        )
    elif job.kind == JobKind.TRAIN:
        train_tasks.queue_training(store, job.job_id, TrainRequest.from_dict(request))
    else:
        queue_batch(store, job.job_id, batch.BatchRequest(**request))


# -- pages ------------------------------------------------------------------------------------

router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False)


@dataclass(frozen=True)
class Section:
    """One kind's table on the jobs page; `jobs` is None when the visitor's key lacks `scope`."""

    kind: JobKind
    title: str
    scope: KeyScope
    jobs: list[Job] | None


def _find(store: Store, visitor: Visitor, kind_name: str, job_id: str) -> Job:
    """The job a page is about: 404 for an unknown kind or job, 403 when the visitor's key may not
    see its kind (checked first, so that a 404 says nothing to a key without the scope)."""
    try:
        kind = JobKind(kind_name)
    except ValueError:
        raise PageError(404, "Not found", f"There are no {kind_name} jobs.") from None
    require(visitor, JOB_KIND_SCOPES[kind], f"a {kind} job")
    job = read_job(store, kind, job_id)
    if job is None:
        raise PageError(404, "Not found", f"No {kind} job {job_id} here.")
    return job


@router.get("/jobs")
def jobs_page(request: Request, visitor: VisitorDep, store: StoreDep) -> HTMLResponse:
    if not any(visitor.can(scope) for scope in JOB_KIND_SCOPES.values()):
        raise PageError(403, "Not allowed", "The jobs page needs the 'admin' or 'batch' scope.")
    sections = [
        Section(
            kind=kind,
            title=JOB_KIND_TITLES[kind],
            scope=scope,
            jobs=list_jobs(store, kind) if visitor.can(scope) else None,
        )
        for kind, scope in JOB_KIND_SCOPES.items()
    ]
    return page(request, "jobs.html", sections=sections, limit=LIST_LIMIT)


@router.get("/jobs/batch/{job_id}/output")
def batch_output(job_id: str, visitor: VisitorDep, store: StoreDep) -> StreamingResponse:
    require(visitor, KeyScope.batch, "a batch job's output")
    if not batch.output_ready(store, job_id):
        raise PageError(404, "Not found", f"Batch job {job_id} has no output (yet).")
    return StreamingResponse(
        batch.stream_output(store, job_id),
        media_type="application/x-ndjson",
        # The id matched BATCH_JOB_ID: nothing in it needs quoting.
        headers={"Content-Disposition": f'attachment; filename="{job_id}.jsonl"'},
    )


def _progress_context(store: Store, job: Job) -> dict[str, Any]:
    """What the progress fragment shows: the job, and why it cannot be queued again here."""
    refusal = None if job_request(store, job) is not None else NO_REQUEST
    return {"job": job, "resubmit_refusal": refusal}


@router.get("/jobs/{kind}/{job_id}")
def job_page(
    request: Request, kind: str, job_id: str, visitor: VisitorDep, store: StoreDep
) -> HTMLResponse:
    job = _find(store, visitor, kind, job_id)
    asked = job_request(store, job)
    return page(
        request,
        "job.html",
        request_json=None if asked is None else json.dumps(asked, ensure_ascii=False, indent=2),
        **_progress_context(store, job),
    )


@router.get("/jobs/{kind}/{job_id}/progress")
def job_progress(
    request: Request, kind: str, job_id: str, visitor: VisitorDep, store: StoreDep
) -> HTMLResponse:
    job = _find(store, visitor, kind, job_id)
    return page(request, "job_progress.html", **_progress_context(store, job))


@router.post("/jobs/{kind}/{job_id}/resubmit")
def job_resubmit(kind: str, job_id: str, visitor: VisitorDep, store: StoreDep) -> RedirectResponse:
    job = _find(store, visitor, kind, job_id)
    try:
        resubmit(store, job)
    except TiquError as exc:
        raise PageError(exc.status_code, "Not queued", exc.message) from exc
    return RedirectResponse(f"{CONSOLE_PATH}/jobs/{job.kind}/{job.job_id}", status_code=303)
