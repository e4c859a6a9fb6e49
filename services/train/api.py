"""The train REST API: start a training on a distill run, follow it to its registered adapter.

Run with `tiqu api train`. A request is checked completely (adapter name, rank within the
serving limit, base model folder, distill run and its splits) before anything is queued, so bad
input gets a 4xx and leaves the store untouched; training runs on the `train` Celery queue. The
same request again answers with the same training; one that failed, or whose worker died (its
lease lapsed), is queued again and resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from services.train.protocol import TrainRunCreate, TrainRunPublic
from services.train.request import (
    TRAIN_RUN_ID,
    TrainParams,
    TrainRequest,
    pin_labelsets,
    validate,
)
from services.train.tasks import queue_training, request_key, result_key, status_key
from shared.api import KeyScope, create_app, scoped_route
from shared.errors import InvalidInputError, NotFoundError, UnavailableError, error_responses
from shared.jobs import JobState, load_status, needs_worker
from shared.settings import get_settings
from shared.store import Store

log = logging.getLogger(__name__)

TRAIN_REQUESTS = Counter(
    "tiqu_train_requests_total", "Training requests received, by result.", ["result"]
)


def get_store() -> Store:
    return Store.from_settings()


StoreDep = Annotated[Store, Depends(get_store)]


def _public(store: Store, train_run_id: str) -> TrainRunPublic:
    status = load_status(store, status_key(train_run_id))
    if status is None:
        raise NotFoundError(f"train run {train_run_id} not found", param="train_run_id")
    request = store.read_json(request_key(train_run_id))
    result = store.read_json(result_key(train_run_id)) if status.state == JobState.READY else None
    return TrainRunPublic(
        train_run_id=train_run_id,
        state=status.state,
        updated_at=status.updated_at,
        request=request,
        progress=status.progress,
        error=status.error,
        error_code=status.error_code,
        result=result,
    )


router = APIRouter(
    prefix="/v1/train-runs", tags=["train-runs"], route_class=scoped_route(KeyScope.admin)
)


@router.post(
    "",
    status_code=202,
    response_model=TrainRunPublic,
    summary="Train an adapter on a distill run",
    responses={
        200: {"model": TrainRunPublic, "description": "The same training was requested before"},
        **error_responses(NotFoundError, InvalidInputError, UnavailableError),
    },
)
async def create_train_run(body: TrainRunCreate, store: StoreDep) -> JSONResponse:
    settings = get_settings()
    params = TrainParams.from_settings(settings, **body.overrides())
    try:
        request = TrainRequest(
            run_id=body.run_id,
            name=body.name or settings.adapter_name,
            params=params,
            promote=body.promote,
            labelsets=await run_in_threadpool(pin_labelsets, store, body.labels),
        )
        await run_in_threadpool(validate, store, settings, request)
    except (NotFoundError, InvalidInputError):
        TRAIN_REQUESTS.labels("rejected").inc()
        raise
    train_run_id = request.train_run_id(settings)
    status = load_status(store, status_key(train_run_id))
    if status is not None and not await run_in_threadpool(
        needs_worker, "train", train_run_id, status.state
    ):
        TRAIN_REQUESTS.labels("reused").inc()
        code = 200 if status.state == JobState.READY else 202
        return JSONResponse(_public(store, train_run_id).model_dump(mode="json"), code)
    queue_training(store, train_run_id, request)
    TRAIN_REQUESTS.labels("accepted").inc()
    return JSONResponse(_public(store, train_run_id).model_dump(mode="json"), status_code=202)


@router.get(
    "/{train_run_id}",
    response_model=TrainRunPublic,
    summary="State, progress and result of a training",
    responses=error_responses(NotFoundError),
)
def read_train_run(train_run_id: str, store: StoreDep) -> TrainRunPublic:
    if not TRAIN_RUN_ID.match(train_run_id):
        raise NotFoundError(f"train run {train_run_id!r} not found", param="train_run_id")
    return _public(store, train_run_id)


def build_app() -> FastAPI:
    application = create_app(
        service="train",
        title="tiqu train",
        description="Train LoRA students on distill runs; register, evaluate and promote them.",
    )
    application.include_router(router)
    return application


app = build_app()
