"""The distill REST API: start a distill run of a dataset, follow it to its training files.

Run with `tiqu api distill`. Runs execute on the `distill` Celery queue. Submitting the same run
again is safe: a finished run answers 200 with its report, a queued or live one 202 as it is, and
a failed run, or one whose worker died (its lease expired), is queued again and resumes from the
teacher cache.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from services.distill.prompt import ExtractionPrompt
from services.distill.protocol import DistillRunCreate, DistillRunPublic
from services.distill.run import (
    DATASET_ID,
    DistillOptions,
    dataset_of,
    load_run_manifest,
    run_id_for,
)
from services.distill.tasks import queue_distill, status_key
from services.ingest.pipeline import load_manifest
from shared.api import KeyScope, create_app, scoped_route
from shared.errors import InvalidInputError, NotFoundError, UnavailableError, error_responses
from shared.jobs import JobState, load_status, needs_worker
from shared.schema import get_schema
from shared.store import Store

log = logging.getLogger(__name__)

# Requests are a few small JSON fields.
MAX_BODY_BYTES = 1024 * 1024


def get_store() -> Store:
    return Store.from_settings()


StoreDep = Annotated[Store, Depends(get_store)]


def _find(store: Store, dataset_id: str, run_id: str) -> DistillRunPublic | None:
    """The run as the API shows it, from its manifest or its status; None when unknown."""
    manifest = load_run_manifest(store, dataset_id, run_id)
    if manifest is not None:
        return DistillRunPublic(
            run_id=run_id,
            dataset_id=dataset_id,
            state=JobState.READY,
            progress=manifest["counts"],
            manifest=manifest,
        )
    status = load_status(store, status_key(dataset_id, run_id))
    if status is None:
        return None
    return DistillRunPublic(
        run_id=run_id,
        dataset_id=dataset_id,
        state=status.state,
        progress=status.progress,
        error=status.error,
        error_code=status.error_code,
    )


router = APIRouter(
    prefix="/v1/distill-runs", tags=["distill"], route_class=scoped_route(KeyScope.admin)
)


@router.post(
    "",
    status_code=202,
    response_model=DistillRunPublic,
    summary="Start (or resume) a distill run of a dataset",
    responses={
        200: {"model": DistillRunPublic, "description": "The same run finished before"},
        **error_responses(NotFoundError, InvalidInputError, UnavailableError),
    },
)
def create_run(body: DistillRunCreate, store: StoreDep) -> JSONResponse:
    if not DATASET_ID.match(body.dataset_id) or load_manifest(store, body.dataset_id) is None:
        raise NotFoundError(f"dataset {body.dataset_id!r} not found", param="dataset_id")
    options = DistillOptions.from_settings(
        samples=body.samples, augment=body.augment, limit=body.limit, export=body.export
    )
    run_id = run_id_for(body.dataset_id, options, ExtractionPrompt.for_schema(get_schema()))
    run = _find(store, body.dataset_id, run_id)
    if needs_worker("distill", run_id, run.state if run else None):
        queue_distill(store, body.dataset_id, run_id, options)
        run = DistillRunPublic(run_id=run_id, dataset_id=body.dataset_id, state=JobState.QUEUED)
    assert run is not None
    status_code = 200 if run.state == JobState.READY else 202
    return JSONResponse(run.model_dump(mode="json"), status_code=status_code)


@router.get(
    "/{run_id}",
    response_model=DistillRunPublic,
    summary="State, progress and report of a distill run",
    responses=error_responses(NotFoundError),
)
def read_run(run_id: str, store: StoreDep) -> DistillRunPublic:
    dataset_id = dataset_of(run_id)
    run = _find(store, dataset_id, run_id) if dataset_id else None
    if run is None:
        raise NotFoundError(f"distill run {run_id!r} not found", param="run_id")
    return run


def build_app() -> FastAPI:
    application = create_app(
        service="distill",
        title="tiqu distill",
        description="Label datasets with a teacher LLM into verified training files.",
        max_body_bytes=MAX_BODY_BYTES,
    )
    application.include_router(router)
    return application


app = build_app()
