"""Batch extraction: every row of an export through the gateway, resumable chunk by chunk.

    batches/<job_id>/request.json          what was asked (source, adapter version, columns)
    batches/<job_id>/status.json           state and progress (rows done, rows/s, ETA)
    batches/<job_id>/chunking.json         the chunk size, recorded by the job's first run
    batches/<job_id>/chunks/000000.jsonl   the answers of one chunk, written whole or not at all
    batches/<job_id>/output.jsonl          one line per input row, in input order (last but one)
    batches/<job_id>/manifest.json         counts and timings (last)

A job id is derived from the source's hash, the pinned adapter version, the schema and the
options, so submitting the same job again finds it. A worker killed mid-way leaves whole chunks
behind; the job, delivered again, cuts its rows with the chunk size it started with (whatever
TIQU_BATCH_CHUNK_ROWS says now), skips the chunks that hold exactly their rows, and `output.jsonl`
is assembled from the chunks only when all exist, and checked: every input row exactly once, in
order.

A row's answer is stored only when it is final: a chunk whose rows failed for reasons not their
own (the gateway unreachable, overloaded or failing) beyond TIQU_BATCH_MAX_ERROR_RATIO, or any
row the gateway refused for the worker's key, fails the job without writing the chunk, and a
resubmission resumes there.
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
from shared.errors import TiquError, UnavailableError
from shared.jobs import JobState, JobStatus, save_status
from shared.schema import get_schema
from shared.settings import Settings
from shared.store import Layout, Store
from shared.tables import ExportRecords, read_export
from shared.uploads import Upload

# Part of every job id. 2: failed rows of the job's (not the row's) are no longer final answers.
PIPELINE_VERSION = "2"
BATCH_JOB_ID = re.compile(r"^bj-[0-9a-f]{16}$")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
OUTPUT_FILE = "output.jsonl"
MANIFEST_FILE = "manifest.json"
CHUNKING_FILE = "chunking.json"
# Errors of a row's own text (empty, too long, refused): trying again cannot help, so they are
# the row's answer. Any other error (gateway unreachable, overloaded or failing) is the job's.
ROW_ERROR_TYPES = frozenset({"invalid_input", "payload_too_large"})
# The gateway refusing the worker's key: no row can succeed.
AUTH_STATUSES = frozenset({401, 403})


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


def output_ready(store: Store, job_id: str) -> bool:
    """Whether `job_id` names a batch job whose output is whole: its manifest is written last."""
    return BATCH_JOB_ID.match(job_id) is not None and store.exists(manifest_key(job_id))


def stream_output(store: Store, job_id: str) -> Iterator[bytes]:
    """The output of a finished job in blocks of 1 MiB, never held whole."""
    with store.open_read(output_key(job_id)) as handle:
        while block := handle.read(1 << 20):
            yield block


def chunk_rows_of(store: Store, job_id: str, configured: int) -> int:
    """The job's chunk size: the one its first run recorded (now, with `configured`, if none
    did), so that a resumed job cuts its rows as before whatever TIQU_BATCH_CHUNK_ROWS says."""
    key = Layout.batch(job_id, CHUNKING_FILE)
    store.create(key, json.dumps({"chunk_rows": configured}).encode("utf-8"))
    return int(store.read_json(key)["chunk_rows"])


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


def check_chunk(results: list[RowResult], index: int, max_error_ratio: float) -> None:
    """Raise UnavailableError, before chunk `index` is stored, when its errors are the job's
    rather than its rows': a key the gateway refuses, or more failed rows than the ratio allows.
    """
    refused = next((r for r in results if r.status in AUTH_STATUSES), None)
    if refused is not None:
        raise UnavailableError(
            f"the gateway refused the batch worker's key ({refused.status}); set "
            "TIQU_GATEWAY_API_KEY to a key with the extract scope and submit the job again",
            code="gateway_unauthorized",
        )
    failed = sum(r.error is not None and r.error_type not in ROW_ERROR_TYPES for r in results)
    if failed > max_error_ratio * len(results):
        raise UnavailableError(
            f"{failed} of the {len(results)} rows of chunk {index} failed for reasons not their "
            "own (gateway unreachable, overloaded or failing); nothing of the chunk was stored: "
            "submit the job again once the gateway answers",
            code="too_many_row_errors",
        )


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
    chunk_rows = await asyncio.to_thread(chunk_rows_of, store, job_id, settings.batch_chunk_rows)
    bounds = chunk_bounds(len(texts), chunk_rows)
    progress = Progress(rows_total=len(texts), chunks_total=len(bounds), started=time.monotonic())
    async with GatewayClient(
        settings.gateway_url,
        api_key=settings.gateway_api_key.get_secret_value(),
        timeout_s=settings.serve_timeout_s * 2,
        max_connections=settings.batch_concurrency,
    ) as client:
        for index, (start, stop) in enumerate(bounds):
            key = chunk_key(job_id, index)
            failed_before = await asyncio.to_thread(_failed_rows, store, key, start, stop)
            if failed_before is not None:
                progress.rows_done += stop - start
                progress.rows_failed += failed_before
                progress.chunks_done += 1
                continue
            results = await extract_chunk(
                client, texts[start:stop], request.adapter, settings.batch_concurrency
            )
            check_chunk(results, index, settings.batch_max_error_ratio)
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
    written = 0

    def chunk_contents() -> Iterator[bytes]:
        nonlocal written
        for index in range(len(bounds)):
            content = store.read_bytes(chunk_key(job_id, index))
            written += content.count(b"\n")
            yield content

    await asyncio.to_thread(store.write_parts, output_key(job_id), chunk_contents())
    if written != len(texts):
        raise TiquError(
            f"the output has {written} lines for {len(texts)} rows", code="output_mismatch"
        )
    manifest = {
        "job_id": job_id,
        "request": request.to_dict(),
        "rows": len(texts),
        "rows_failed": progress.rows_failed,
        "chunk_rows": chunk_rows,
        "output": output_key(job_id),
        "output_uri": store.uri(output_key(job_id)),
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    await asyncio.to_thread(store.write_json, manifest_key(job_id), manifest)
    return manifest


def _failed_rows(store: Store, key: str, start: int, stop: int) -> int | None:
    """The failed rows of a chunk stored before, or None when it must be computed: absent, or
    not holding exactly rows `start`..`stop` - 1 (cut with another chunk size)."""
    try:
        lines = [json.loads(line) for line in store.read_bytes(key).decode("utf-8").splitlines()]
    except FileNotFoundError:
        return None
    if [line["row"] for line in lines] != list(range(start, stop)):
        return None
    return sum(line["error"] is not None for line in lines)


def save_progress(store: Store, job_id: str, progress: Progress) -> None:
    save_status(
        store, status_key(job_id), JobStatus(state=JobState.RUNNING, progress=progress.snapshot())
    )
