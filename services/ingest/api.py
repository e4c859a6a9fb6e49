"""The ingest REST API: upload an export, follow the dataset it becomes.

Run with `tiqu api ingest`. An upload is checked without being parsed (format, encoding, header
and text column, nesting, the sizes and rows its zip directory or Parquet footer declare), so most
bad files get a 4xx and leave the store untouched; it is spooled to disk and copied to the store
in parts, never held whole. Parsing it, under the TIQU_INGEST_MAX_* limits, and cleaning it run on
the `ingest` Celery queue: what no header shows fails the dataset with the same error codes.
Uploading the same file again is safe: a ready dataset answers 200, a queued or live one 202 as
it is, and a failed one, or one whose worker died (its lease lapsed), is queued again.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from services.ingest.pipeline import IngestOptions, dataset_id_for, load_manifest
from services.ingest.protocol import DatasetCounts, DatasetList, DatasetPublic
from services.ingest.tasks import queue_ingest
from shared.api import KeyScope, create_app, scoped_route
from shared.errors import NotFoundError, PayloadTooLargeError, UnavailableError, error_responses
from shared.jobs import JobState, load_status, needs_worker
from shared.store import Layout, Store
from shared.tables import ExportFileError
from shared.uploads import store_upload

log = logging.getLogger(__name__)

DATASET_ID = re.compile(r"^ds-[0-9a-f]{16}$")
UPLOADS = Counter("tiqu_ingest_uploads_total", "Export uploads received, by result.", ["result"])
UPLOAD_BYTES = Counter("tiqu_ingest_upload_bytes_total", "Bytes of accepted export uploads.")


def get_store() -> Store:
    return Store.from_settings()


StoreDep = Annotated[Store, Depends(get_store)]


def _public(store: Store, dataset_id: str) -> DatasetPublic:
    manifest = load_manifest(store, dataset_id)
    if manifest is not None:
        return DatasetPublic(
            dataset_id=dataset_id,
            state=JobState.READY,
            created_at=manifest["created_at"],
            filename=manifest["source"]["filename"],
            counts=DatasetCounts(**manifest["counts"]),
            manifest=manifest,
        )
    status = load_status(store, Layout.dataset_status(dataset_id))
    if status is None:
        raise NotFoundError(f"dataset {dataset_id} not found", param="dataset_id")
    return DatasetPublic(
        dataset_id=dataset_id,
        state=status.state,
        error=status.error,
        error_code=status.error_code,
    )


router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"], route_class=scoped_route(KeyScope.admin)
)


@router.post(
    "",
    status_code=202,
    response_model=DatasetPublic,
    summary="Upload an export and build a dataset from it",
    responses={
        200: {"model": DatasetPublic, "description": "The same file was ingested before"},
        **error_responses(ExportFileError, PayloadTooLargeError, UnavailableError),
    },
)
async def create_dataset(
    store: StoreDep,
    file: Annotated[UploadFile, File(description="CSV, XLSX, JSONL or Parquet export")],
    text_column: Annotated[str | None, Form(max_length=256)] = None,
    sheet: Annotated[str | None, Form(max_length=256)] = None,
) -> JSONResponse:
    filename = file.filename or "upload"
    options = IngestOptions.from_settings(text_column=text_column or None, sheet=sheet or None)
    try:
        upload = await run_in_threadpool(
            store_upload, store, file.file, filename, text_column=options.text_column
        )
    except ExportFileError:
        UPLOADS.labels("rejected").inc()
        raise
    dataset_id = dataset_id_for(upload.sha256, options)
    status_key = Layout.dataset_status(dataset_id)
    status = load_status(store, status_key)
    if load_manifest(store, dataset_id) is not None:
        UPLOADS.labels("reused").inc()
        return JSONResponse(_public(store, dataset_id).model_dump(mode="json"), status_code=200)
    if await run_in_threadpool(
        needs_worker, "ingest", dataset_id, status.state if status else None
    ):
        queue_ingest(store, dataset_id, raw_key=upload.key, filename=filename, options=options)
        UPLOAD_BYTES.inc(upload.size)
    UPLOADS.labels("accepted").inc()
    return JSONResponse(_public(store, dataset_id).model_dump(mode="json"), status_code=202)


@router.get(
    "/{dataset_id}",
    response_model=DatasetPublic,
    summary="State and report of a dataset",
    responses=error_responses(NotFoundError),
)
def read_dataset(dataset_id: str, store: StoreDep) -> DatasetPublic:
    if not DATASET_ID.match(dataset_id):
        raise NotFoundError(f"dataset {dataset_id!r} not found", param="dataset_id")
    return _public(store, dataset_id)


@router.get("", response_model=DatasetList, summary="All datasets, newest first")
def list_datasets(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DatasetList:
    ids = [d for d in store.children("datasets") if DATASET_ID.match(d)]
    datasets = []
    for dataset_id in ids:
        try:
            datasets.append(_public(store, dataset_id))
        except NotFoundError:
            continue  # a folder without manifest or status: a write that never finished
    datasets.sort(key=lambda d: (d.created_at is not None, d.created_at), reverse=True)
    return DatasetList(datasets=datasets[offset : offset + limit], total=len(datasets))


def build_app() -> FastAPI:
    application = create_app(
        service="ingest",
        title="tiqu ingest",
        description="Turn messy complaint exports into clean, versioned datasets.",
    )
    application.include_router(router)
    return application


app = build_app()
