"""From export bytes to a stored, versioned dataset: read, clean, validate, de-duplicate, write.

The dataset id is derived from the file's content and the ingest options, so the same file
ingested twice maps to the same dataset and the second call does no work. Files are written
`clean.parquet` and `rejected.parquet` first and `manifest.json` last: a dataset exists exactly
when its manifest does, so a crash never leaves a half-written dataset visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.cleaning import RejectReason, clean_texts, reject_reasons
from shared.dedup import (
    dedup_keys,
    find_exact_duplicates,
    find_near_duplicates,
    minhash_signatures,
)
from shared.schema import get_schema
from shared.settings import Settings, get_settings
from shared.store import Layout, Store
from shared.tables import ExportRecords, read_export

log = logging.getLogger(__name__)

# Bump when cleaning or de-duplication rules change: it is part of every dataset id.
PIPELINE_VERSION = "1"
CLEAN_CHUNK_ROWS = 100_000
REJECTED_TEXT_PREVIEW = 500

ProgressCallback = Callable[[str, int, int], None]

CLEAN_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source_row", pa.int64()),
        ("source_sheet", pa.string()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source_row", pa.int64()),
        ("source_sheet", pa.string()),
        ("reason", pa.string()),
        ("duplicate_of_row", pa.int64()),
        ("text", pa.string()),
    ]
)


@dataclass(frozen=True)
class IngestOptions:
    """Everything that changes the content of a dataset; all of it goes into the id."""

    text_column: str | None = None
    sheet: str | None = None
    min_chars: int = 5
    max_chars: int = 4000
    min_text_ratio: float = 0.3
    near_dup_threshold: float = 0.8

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        text_column: str | None = None,
        sheet: str | None = None,
    ) -> IngestOptions:
        settings = settings or get_settings()
        return cls(
            text_column=text_column,
            sheet=sheet,
            min_chars=settings.ingest_min_chars,
            max_chars=settings.ingest_max_chars,
            min_text_ratio=settings.ingest_min_text_ratio,
            near_dup_threshold=settings.ingest_near_dup_threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CleanedRows:
    clean: pa.Table
    rejected: pa.Table
    counts: dict[str, Any]


@dataclass(frozen=True)
class IngestResult:
    dataset_id: str
    manifest: dict[str, Any]
    reused: bool


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_id_for(source_sha256: str, options: IngestOptions) -> str:
    """A stable id from the file content, the options and the pipeline version."""
    basis = json.dumps(
        {"source": source_sha256, "options": options.to_dict(), "pipeline": PIPELINE_VERSION},
        sort_keys=True,
    )
    return "ds-" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _clean_in_chunks(texts: pa.ChunkedArray, progress: ProgressCallback) -> pa.ChunkedArray:
    total = len(texts)
    chunks = []
    for start in range(0, total, CLEAN_CHUNK_ROWS):
        chunks.append(clean_texts(texts.slice(start, CLEAN_CHUNK_ROWS)))
        progress("clean", min(start + CLEAN_CHUNK_ROWS, total), total)
    return (
        pa.chunked_array(chunks, type=pa.string()) if chunks else pa.chunked_array([], pa.string())
    )


def clean_records(
    records: pa.Table, options: IngestOptions, progress: ProgressCallback = _no_progress
) -> CleanedRows:
    """Clean, validate and de-duplicate export rows; every input row ends up in one output."""
    total = records.num_rows
    cleaned = _clean_in_chunks(records.column("text"), progress)
    reasons = reject_reasons(
        cleaned,
        min_chars=options.min_chars,
        max_chars=options.max_chars,
        min_text_ratio=options.min_text_ratio,
    )
    valid = pc.is_null(reasons).to_numpy(zero_copy_only=False)
    progress("validate", total, total)

    keys = dedup_keys(cleaned)
    exact_of = find_exact_duplicates(keys, valid)
    progress("duplicates", total, total)

    candidates = np.flatnonzero(valid & (exact_of < 0))
    near_of = np.full(total, -1, dtype=np.int64)
    if len(candidates):
        signatures = minhash_signatures(keys.take(pa.array(candidates)))
        local = find_near_duplicates(
            signatures, np.ones(len(candidates), dtype=bool), threshold=options.near_dup_threshold
        )
        matched = local >= 0
        near_of[candidates[matched]] = candidates[local[matched]]
        del signatures
    del keys
    progress("near-duplicates", total, total)

    # Reasons as small integer codes (0 = kept) so every step below stays vectorized.
    reason_names = [r.value for r in RejectReason]
    positions = pc.index_in(reasons, value_set=pa.array(reason_names)).to_numpy(
        zero_copy_only=False
    )
    code = np.where(valid, 0, np.nan_to_num(positions, nan=0).astype(np.int64) + 1)
    code[exact_of >= 0] = reason_names.index(RejectReason.DUPLICATE.value) + 1
    code[near_of >= 0] = reason_names.index(RejectReason.NEAR_DUPLICATE.value) + 1
    original = np.where(exact_of >= 0, exact_of, near_of)
    keep = code == 0

    source_row = records.column("source_row")
    ids = pc.coalesce(
        records.column("id"),
        pc.binary_join_element_wise("row-", pc.cast(source_row, pa.string()), ""),
    )
    keep_mask = pa.array(keep)
    clean = pa.table(
        {
            "id": ids.filter(keep_mask),
            "text": cleaned.filter(keep_mask),
            "source_row": source_row.filter(keep_mask),
            "source_sheet": records.column("source_sheet").filter(keep_mask),
        },
        schema=CLEAN_SCHEMA,
    )
    drop = np.flatnonzero(~keep)
    drop_idx = pa.array(drop, pa.int64())
    source_rows = source_row.to_numpy()
    duplicate_of = np.where(original[drop] >= 0, source_rows[np.maximum(original[drop], 0)], -1)
    rejected = pa.table(
        {
            "id": ids.take(drop_idx),
            "source_row": source_row.take(drop_idx),
            "source_sheet": records.column("source_sheet").take(drop_idx),
            "reason": pa.array(np.asarray(reason_names, dtype=object)[code[drop] - 1], pa.string()),
            "duplicate_of_row": pa.array(duplicate_of, pa.int64(), mask=duplicate_of < 0),
            "text": pc.utf8_slice_codeunits(
                pc.fill_null(records.column("text").take(drop_idx), ""), 0, REJECTED_TEXT_PREVIEW
            ),
        },
        schema=REJECTED_SCHEMA,
    )
    per_code = np.bincount(code, minlength=len(reason_names) + 1)
    counts = {
        "rows": total,
        "clean": clean.num_rows,
        "rejected": rejected.num_rows,
        "rejected_by_reason": {name: int(per_code[i + 1]) for i, name in enumerate(reason_names)},
    }
    return CleanedRows(clean, rejected, counts)


def load_manifest(store: Store, dataset_id: str) -> dict[str, Any] | None:
    key = Layout.dataset_manifest(dataset_id)
    return store.read_json(key) if store.exists(key) else None


def ingest_bytes(
    data: bytes,
    filename: str,
    options: IngestOptions,
    store: Store,
    *,
    progress: ProgressCallback = _no_progress,
    records: ExportRecords | None = None,
) -> IngestResult:
    """Turn an export into a dataset in `store`, or return the existing identical dataset.

    Raises `ExportFileError` for unreadable input before anything is written.
    """
    started = time.perf_counter()
    source_sha = sha256_hex(data)
    dataset_id = dataset_id_for(source_sha, options)
    existing = load_manifest(store, dataset_id)
    if existing is not None:
        log.info("dataset already exists", extra={"dataset_id": dataset_id})
        return IngestResult(dataset_id, existing, reused=True)

    progress("read", 0, 1)
    if records is None:
        records = read_export(data, filename, text_column=options.text_column, sheet=options.sheet)
    progress("read", records.table.num_rows, records.table.num_rows)
    result = clean_records(records.table, options, progress)

    raw_key = Layout.raw(source_sha, filename)
    if not store.exists(raw_key):
        store.write_bytes(raw_key, data)
    store.write_parquet(Layout.dataset_clean(dataset_id), result.clean)
    store.write_parquet(Layout.dataset_rejected(dataset_id), result.rejected)
    manifest = {
        "dataset_id": dataset_id,
        "created_at": datetime.now(UTC).isoformat(),
        "schema_version": get_schema().version,
        "pipeline_version": PIPELINE_VERSION,
        "source": {
            "filename": filename,
            "sha256": source_sha,
            "bytes": len(data),
            "format": records.format,
            "encoding": records.encoding,
            "sheets": list(records.sheets),
            "text_column": records.text_column,
            "id_column": records.id_column,
            "key": raw_key,
        },
        "settings": options.to_dict(),
        "counts": result.counts,
        "files": {
            "clean": Layout.dataset_clean(dataset_id),
            "rejected": Layout.dataset_rejected(dataset_id),
        },
        "duration_s": round(time.perf_counter() - started, 3),
    }
    store.write_json(Layout.dataset_manifest(dataset_id), manifest)
    progress("write", records.table.num_rows, records.table.num_rows)
    log.info(
        "dataset written",
        extra={
            "dataset_id": dataset_id,
            "rows": result.counts["rows"],
            "clean": result.counts["clean"],
        },
    )
    return IngestResult(dataset_id, manifest, reused=False)
