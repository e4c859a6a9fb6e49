"""The extraction gateway: REST in front of vLLM multi-LoRA, and batch jobs over whole exports.

Run with `tiqu api serve` beside `tiqu serve engine`. Every extraction is admitted or shed (429
with Retry-After when vLLM's queue is deep), rendered with the training prompt, decoded under
the schema, validated and grounded; batch jobs run on the `batch` Celery queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import Counter

from services.serve.batch import (
    BATCH_JOB_ID,
    is_batch_upload,
    manifest_key,
    new_request,
    output_key,
    output_ready,
    request_key,
    status_key,
    stream_output,
)
from services.serve.console import adapters as adapter_pages
from services.serve.console import jobs, metrics, playground, review
from services.serve.console.web import CONSOLE_PATH, mount_console
from services.serve.gateway import Gateway, Result
from services.serve.protocol import (
    ADAPTER_REF,
    MAX_BATCH_TEXTS,
    AdapterList,
    AdapterPublic,
    BatchJobPublic,
    ExtractBatchRequest,
    ExtractBatchResponse,
    ExtractRequest,
    ExtractResponse,
)
from services.serve.tasks import queue_batch
from shared.api import DEFAULT_MAX_BODY_BYTES, KeyScope, create_app, scoped_route
from shared.errors import (
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    TiquError,
    UnavailableError,
    error_responses,
)
from shared.jobs import JobState, load_status, needs_worker
from shared.settings import get_settings
from shared.store import Layout, Store
from shared.tables import ExportFileError
from shared.uploads import check_stored, store_upload

log = logging.getLogger(__name__)

EXTRACT_REQUESTS = Counter(
    "tiqu_extract_requests_total",
    "Extraction requests answered, by route, status and adapter.",
    ["route", "status", "adapter"],
)
T = TypeVar("T")

_gateway: Gateway | None = None


def get_gateway() -> Gateway:
    if _gateway is None:
        raise UnavailableError("the gateway is starting", retry_after=1)
    return _gateway


def get_store() -> Store:
    return Store.from_settings()


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
StoreDep = Annotated[Store, Depends(get_store)]


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and with it the engine request) if the client goes away."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    finally:
        watcher.cancel()


async def _counted(route: str, asked: str, work: Awaitable[list[Result]]) -> list[Result]:
    """Count the request by route, status and adapter name (the one that answered, or `asked`,
    the gateway's label for the one asked for, when it failed)."""
    try:
        results = await work
    except TiquError as exc:
        EXTRACT_REQUESTS.labels(route, str(exc.status_code), asked).inc()
        raise
    EXTRACT_REQUESTS.labels(route, "200", results[0].adapter.split("@")[0]).inc()
    return results


extract_router = APIRouter(
    prefix="/v1", tags=["extract"], route_class=scoped_route(KeyScope.extract)
)
EXTRACT_ERRORS = error_responses(
    InvalidInputError, NotFoundError, PayloadTooLargeError, OverloadedError, UnavailableError
)


@extract_router.post(
    "/extract",
    response_model=ExtractResponse,
    summary="Extract the schema's fields from one complaint",
    responses=EXTRACT_ERRORS,
)
async def extract(body: ExtractRequest, request: Request, gateway: GatewayDep) -> ExtractResponse:
    started = time.perf_counter()
    results = await _counted(
        "/v1/extract",
        gateway.metric_label(body.adapter),
        cancel_on_disconnect(request, gateway.extract_many([body.text], body.adapter)),
    )
    return ExtractResponse.of(results[0], started)


@extract_router.post(
    "/extract/batch",
    response_model=ExtractBatchResponse,
    summary="Extract from up to 64 complaints at once, answered in order",
    responses=EXTRACT_ERRORS,
)
async def extract_batch(
    body: ExtractBatchRequest, request: Request, gateway: GatewayDep
) -> ExtractBatchResponse:
    started = time.perf_counter()
    results = await _counted(
        "/v1/extract/batch",
        gateway.metric_label(body.adapter),
        cancel_on_disconnect(request, gateway.extract_many(body.texts, body.adapter)),
    )
    return ExtractBatchResponse(
        results=[ExtractResponse.of(r, started) for r in results],
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )


@extract_router.get(
    "/adapters", response_model=AdapterList, summary="Adapter versions loaded in the engine"
)
def list_adapters(gateway: GatewayDep) -> AdapterList:
    manager = gateway.adapters
    if manager is None:
        return AdapterList(adapters=[])
    default = manager.default_name()
    listed = [
        AdapterPublic(
            name=served.name,
            version=served.version,
            reference=served.reference,
            engine_name=served.lora_name,
            promoted=manager.aliases.get(served.name) == served.version,
            default=served.name == default and manager.aliases.get(served.name) == served.version,
            loaded_at=served.loaded_at,
            in_flight=served.in_flight,
        )
        for served in sorted(manager.loaded.values(), key=lambda s: (s.name, s.version))
    ]
    return AdapterList(adapters=listed)


batch_router = APIRouter(
    prefix="/v1/batches", tags=["batches"], route_class=scoped_route(KeyScope.batch)
)


def _batch_public(store: Store, job_id: str) -> BatchJobPublic:
    status = load_status(store, status_key(job_id))
    if status is None:
        raise NotFoundError(f"batch job {job_id} not found", param="job_id")
    manifest = store.read_json(manifest_key(job_id)) if status.state == JobState.READY else None
    return BatchJobPublic(
        job_id=job_id,
        state=status.state,
        updated_at=status.updated_at,
        request=store.read_json(request_key(job_id)),
        progress=status.progress,
        output=output_key(job_id) if manifest else None,
        manifest=manifest,
        error=status.error,
        error_code=status.error_code,
    )


@batch_router.post(
    "",
    status_code=202,
    response_model=BatchJobPublic,
    summary="Extract from every row of an export (uploaded, or already in the store)",
    responses={
        200: {"model": BatchJobPublic, "description": "The same job was submitted before"},
        **error_responses(
            ExportFileError,
            ForbiddenError,
            NotFoundError,
            InvalidInputError,
            PayloadTooLargeError,
            UnavailableError,
        ),
    },
)
async def create_batch(
    store: StoreDep,
    file: Annotated[UploadFile | None, File(description="CSV, XLSX, JSONL or Parquet")] = None,
    store_key: Annotated[
        str | None,
        Form(
            max_length=1024,
            description="The `source_key` of an earlier batch upload (`raw/batch/…`), to run "
            "it again (with another adapter, say); no other object of the store",
        ),
    ] = None,
    adapter: Annotated[str | None, Form(pattern=ADAPTER_REF)] = None,
    text_column: Annotated[str | None, Form(max_length=256)] = None,
    sheet: Annotated[str | None, Form(max_length=256)] = None,
) -> JSONResponse:
    if (file is None) == (not store_key):
        raise InvalidInputError("send either a file or a store_key", param="file")
    if file is not None:
        filename = file.filename or "upload"
        source = await run_in_threadpool(
            functools.partial(
                store_upload,
                store,
                file.file,
                filename,
                text_column=text_column or None,
                key_for=Layout.batch_upload,
            )
        )
    else:
        assert store_key is not None
        if not is_batch_upload(store_key):
            raise ForbiddenError(
                "store_key must be the source_key of an earlier batch upload (raw/batch/…)",
                param="store_key",
            )
        if not await run_in_threadpool(store.exists, store_key):
            raise NotFoundError(f"no file {store_key!r} in the store", param="store_key")
        filename = store_key.rsplit("/", 1)[-1]
        source = await run_in_threadpool(
            functools.partial(check_stored, store, store_key, text_column=text_column or None)
        )
    request = await run_in_threadpool(
        functools.partial(
            new_request,
            store,
            source,
            filename,
            adapter=adapter,
            default_adapter=get_settings().adapter_name,
            text_column=text_column or None,
            sheet=sheet or None,
        )
    )
    job_id = request.job_id()
    status = load_status(store, status_key(job_id))
    if status is not None and not await run_in_threadpool(
        needs_worker, "batch", job_id, status.state
    ):
        code = 200 if status.state == JobState.READY else 202
        return JSONResponse(_batch_public(store, job_id).model_dump(mode="json"), code)
    queue_batch(store, job_id, request)
    return JSONResponse(_batch_public(store, job_id).model_dump(mode="json"), status_code=202)


@batch_router.get(
    "/{job_id}",
    response_model=BatchJobPublic,
    summary="State and progress (rows done, rows/s, ETA) of a batch job",
    responses=error_responses(NotFoundError),
)
def read_batch(job_id: str, store: StoreDep) -> BatchJobPublic:
    if not BATCH_JOB_ID.match(job_id):
        raise NotFoundError(f"batch job {job_id!r} not found", param="job_id")
    return _batch_public(store, job_id)


@batch_router.get(
    "/{job_id}/output",
    summary="The output of a finished batch job (JSON lines, one per input row)",
    response_class=StreamingResponse,
    responses=error_responses(NotFoundError),
)
def read_batch_output(job_id: str, store: StoreDep) -> StreamingResponse:
    if not output_ready(store, job_id):
        raise NotFoundError(f"batch job {job_id!r} has no output (yet)", param="job_id")
    return StreamingResponse(stream_output(store, job_id), media_type="application/x-ndjson")


@asynccontextmanager
async def lifespan(application: FastAPI) -> AsyncIterator[None]:
    global _gateway
    gateway = Gateway(get_settings(), Store.from_settings())
    await gateway.start()
    _gateway = application.state.gateway = gateway
    try:
        yield
    finally:
        _gateway = application.state.gateway = None
        await gateway.stop()


def _readiness_check(part: str) -> Callable[[], None]:
    def check() -> None:
        state = get_gateway().readiness()[part]
        if state != "ok":
            raise RuntimeError(state)

    return check


def max_body_bytes() -> int:
    """Largest JSON body: a full batch of the longest texts, every character escaped as a JSON
    surrogate pair (12 bytes), and room for the rest. Uploads have TIQU_MAX_UPLOAD_MB."""
    return max(
        DEFAULT_MAX_BODY_BYTES,
        MAX_BATCH_TEXTS * get_settings().serve_max_text_chars * 12 + 64 * 1024,
    )


def build_app() -> FastAPI:
    application = create_app(
        service="serve",
        max_body_bytes=max_body_bytes(),
        title="tiqu serve",
        description="Extract contact fields from complaints with LoRA students served by vLLM.",
        readiness_checks={
            part: _readiness_check(part)
            for part in ("engine", "structured_output", "default_adapter")
        },
        lifespan=lifespan,
        own_auth_prefixes=(CONSOLE_PATH,),
    )
    application.include_router(extract_router)
    application.include_router(batch_router)
    mount_console(
        application,
        [playground.router, adapter_pages.router, jobs.router, review.router, metrics.router],
    )
    return application


app = build_app()
