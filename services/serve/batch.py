"""Batch extraction: every row of an export through the gateway, resumable chunk by chunk.

    batches/<job_id>/request.json          what was asked (source, adapter version, columns)
    batches/<job_id>/status.json           state and progress (rows done, rows/s, ETA)
    batches/<job_id>/chunks/000000.jsonl   the answers of one chunk, written whole or not at all
    batches/<job_id>/output.jsonl          one line per input row, in input order (last but one)
    batches/<job_id>/manifest.json         counts and timings (last)

A job id is derived from the source's hash, the pinned adapter version, the schema and the
options, so submitting the same job again finds it. A worker killed mid-way leaves whole chunks
behind; the job, delivered again, skips them, and `output.jsonl` is assembled from the chunks
only when all exist: every input row exactly once, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from services.serve.client import GatewayClient, RowResult
from shared import adapters
from shared.jobs import JobState, JobStatus, save_status
from shared.schema import get_schema
from shared.settings import Settings
from shared.store import Layout, Store
from shared.tables import ExportRecords, read_export
from shared.uploads import Upload

PIPELINE_VERSION = "1"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
OUTPUT_FILE = "output.jsonl"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class BatchRequest:
    source_key: str
    filename: str
    source_sha256: str
    adapter: str  # name@version, pinned when the job is created
    schema_version: str
    text_column: str | None = None
    sheet: str | None = None

    def job_id(self) -> str:
        canonical = json.dumps({**asdict(self), "pipeline": PIPELINE_VERSION}, sort_keys=True)
        return "bj-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_request(
    store: Store,
    source: Upload,
    filename: str,
    *,
    adapter: str | None,
    default_adapter: str,
    text_column: str | None = None,
    sheet: str | None = None,
) -> BatchRequest:
    """Describe the job of an export checked and stored by `shared.uploads` (parsing it is the
    worker's): the adapter pinned to a version. Raises NotFoundError for an unknown adapter."""
    manifest = adapters.resolve(store, adapter or default_adapter)
    return BatchRequest(
        source_key=source.key,
        filename=filename,
        source_sha256=source.sha256,
        # One version for the whole job: a promotion mid-way must not mix two.
        adapter=f"{manifest['name']}@{manifest['version']}",
        schema_version=get_schema().version,
        text_column=text_column or None,
        sheet=sheet or None,
    )


def is_batch_upload(key: str) -> bool:
    """Whether `key` is one a batch upload writes (`Layout.batch_upload`), in that exact form: a
    batch job must never read a dataset, an ingest upload, an adapter or a cache."""
    parts = key.split("/")
    return (
        len(parts) == 4
        and parts[:2] == ["raw", "batch"]
        and SHA256_HEX.fullmatch(parts[2]) is not None
        and Layout.batch_upload(parts[2], parts[3]) == key
    )


def request_key(job_id: str) -> str:
    return Layout.batch(job_id, "request.json")


def status_key(job_id: str) -> str:
    return Layout.batch(job_id, "status.json")


def chunk_key(job_id: str, index: int) -> str:
    return Layout.batch(job_id, f"chunks/{index:06d}.jsonl")


def output_key(job_id: str) -> str:
    return Layout.batch(job_id, OUTPUT_FILE)


def manifest_key(job_id: str) -> str:
    return Layout.batch(job_id, MANIFEST_FILE)


def chunk_bounds(rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_rows, rows)) for start in range(0, rows, chunk_rows)]


@dataclass
class Progress:
    rows_total: int
    rows_done: int = 0
    rows_failed: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    started: float = 0.0
    rows_this_run: int = 0

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.rows_this_run / elapsed if self.rows_this_run else 0.0
        left = self.rows_total - self.rows_done
        return {
            "rows_total": self.rows_total,
            "rows_done": self.rows_done,
            "rows_failed": self.rows_failed,
            "chunks_total": self.chunks_total,
            "chunks_done": self.chunks_done,
            "rows_per_s": round(rate, 2),
            "eta_s": round(left / rate, 1) if rate else None,
        }


ProgressCallback = Callable[[Progress], None]


def load_rows(store: Store, request: BatchRequest) -> ExportRecords:
    return read_export(
        store.read_bytes(request.source_key),
        request.filename,
        text_column=request.text_column,
        sheet=request.sheet,
    )


def output_line(row: int, row_id: str | None, result: RowResult) -> dict[str, Any]:
    answer = result.answer or {}
    return {
        "row": row,
        "id": row_id,
        "fields": answer.get("fields"),
        "grounded": answer.get("grounded"),
        "spans": answer.get("spans"),
        "adapter": answer.get("adapter"),
        "error": None
        if result.error is None
        else {"type": result.error_type, "message": result.error},
    }


async def extract_chunk(
    client: GatewayClient,
    texts: list[str | None],
    adapter: str,
    concurrency: int,
) -> list[RowResult]:
    """Answers for `texts` in order, at most `concurrency` requests in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str | None) -> RowResult:
        if text is None or not text.strip():
            return RowResult(None, "the row has no text", "invalid_input")
        async with gate:
            return await client.extract(text, adapter)

    return list(await asyncio.gather(*(one(t) for t in texts)))


async def run_batch(
    store: Store,
    job_id: str,
    request: BatchRequest,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Process every missing chunk, then assemble the output and the manifest; idempotent."""
    existing = manifest_key(job_id)
    if store.exists(existing):
        return store.read_json(existing)
    started_at = datetime.now(UTC)
    records = load_rows(store, request).table
    texts = records.column("text").to_pylist()
    ids = records.column("id").to_pylist()
    bounds = chunk_bounds(len(texts), settings.batch_chunk_rows)
    progress = Progress(rows_total=len(texts), chunks_total=len(bounds), started=time.monotonic())
    async with GatewayClient(
        settings.gateway_url,
        api_key=settings.gateway_api_key.get_secret_value(),
        timeout_s=settings.serve_timeout_s * 2,
        max_connections=settings.batch_concurrency,
    ) as client:
        for index, (start, stop) in enumerate(bounds):
            key = chunk_key(job_id, index)
            if store.exists(key):
                progress.rows_done += stop - start
                progress.rows_failed += _failed_rows(store, key)
                progress.chunks_done += 1
                continue
            results = await extract_chunk(
                client, texts[start:stop], request.adapter, settings.batch_concurrency
            )
            lines = [
                json.dumps(output_line(start + i, ids[start + i], r), ensure_ascii=False) + "\n"
                for i, r in enumerate(results)
            ]
            await asyncio.to_thread(store.write_bytes, key, "".join(lines).encode("utf-8"))
            progress.rows_done += stop - start
            progress.rows_this_run += stop - start
            progress.rows_failed += sum(r.error is not None for r in results)
            progress.chunks_done += 1
            if on_progress:
                on_progress(progress)
    await asyncio.to_thread(
        store.write_parts, output_key(job_id), _chunk_contents(store, job_id, len(bounds))
    )
    manifest = {
        "job_id": job_id,
        "request": request.to_dict(),
        "rows": len(texts),
        "rows_failed": progress.rows_failed,
        "output": output_key(job_id),
        "output_uri": store.uri(output_key(job_id)),
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    await asyncio.to_thread(store.write_json, manifest_key(job_id), manifest)
    return manifest


def _chunk_contents(store: Store, job_id: str, chunks: int) -> Iterator[bytes]:
    for index in range(chunks):
        yield store.read_bytes(chunk_key(job_id, index))


def _failed_rows(store: Store, key: str) -> int:
    lines = store.read_bytes(key).decode("utf-8").splitlines()
    return sum(json.loads(line)["error"] is not None for line in lines)


def save_progress(store: Store, job_id: str, progress: Progress) -> None:
    save_status(
        store, status_key(job_id), JobStatus(state=JobState.RUNNING, progress=progress.snapshot())
    )
