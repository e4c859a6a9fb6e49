"""Reading complaint exports (CSV, XLSX, JSONL, Parquet) into one Arrow table shape.

Ingest and batch extraction both accept "whatever the company exported", so the detection of
format, encoding, text column and id column lives here once. Every failure is an
`ExportFileError` with a message a user can act on.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from shared.errors import InvalidInputError

ExportFormat = Literal["csv", "xlsx", "jsonl", "parquet"]

FORMATS_BY_SUFFIX: dict[str, ExportFormat] = {
    ".csv": "csv",
    ".txt": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

TEXT_COLUMN_NAMES = (
    "投诉内容",
    "内容",
    "投诉描述",
    "问题描述",
    "诉求内容",
    "来电内容",
    "投诉",
    "诉求",
    "描述",
    "正文",
    "文本",
    "留言",
    "text",
    "content",
    "complaint",
    "body",
    "message",
    "description",
)
ID_COLUMN_NAMES = (
    "id",
    "工单编号",
    "工单号",
    "投诉编号",
    "编号",
    "序号",
    "ticket_id",
    "ticket",
    "complaint_id",
    "record_id",
)

# Tried in order when a CSV is not UTF-8 (GB18030 covers GBK and GB2312). UTF-16 only with a
# BOM: without one it "decodes" any even-length garbage.
_FALLBACK_ENCODINGS = ("gb18030", "big5")

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source_row", pa.int64()),
        ("source_sheet", pa.string()),
    ]
)


class ExportFileError(InvalidInputError):
    """An export that cannot be read; `code` says why (for APIs and tests)."""


@dataclass(frozen=True)
class ExportRecords:
    """The rows of an export in tiqu's shape, and what was detected to get there."""

    table: pa.Table  # RECORD_SCHEMA
    format: ExportFormat
    text_column: str
    id_column: str | None
    encoding: str | None
    sheets: tuple[str, ...]


def detect_format(filename: str) -> ExportFormat:
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        supported = ", ".join(sorted(FORMATS_BY_SUFFIX))
        raise ExportFileError(
            f"unsupported file type {suffix or '(none)'!r}; supported: {supported}",
            param="file",
            code="unsupported_format",
        )
    return FORMATS_BY_SUFFIX[suffix]


def _normalized(name: str) -> str:
    return str(name).strip().lower().replace(" ", "").replace("_", "")


def detect_column(
    columns: list[str], candidates: tuple[str, ...], override: str | None
) -> str | None:
    """The column named `override`, else the first column matching a known name."""
    if override is not None:
        return override if override in columns else None
    by_normalized = {_normalized(c): c for c in reversed(columns)}
    for candidate in candidates:
        match = by_normalized.get(_normalized(candidate))
        if match is not None:
            return match
    return None


def _columns_hint(columns: list[str]) -> str:
    """The column names for an error message, unless the first row looks like data (a file
    without a header row): then its cells are complaints, names, phones, never to be echoed."""
    if not columns:
        return "the file has no columns"
    if any(len(c) > 32 or "@" in c or sum(ch.isdigit() for ch in c) >= 5 for c in columns):
        return f"its first row ({len(columns)} cells) looks like data, not a header row"
    return "columns are: " + ", ".join(columns)


def _decode_error(tried: list[str]) -> ExportFileError:
    return ExportFileError(
        f"cannot decode the file as text (tried {', '.join(tried)}); save it as UTF-8 or GB18030",
        param="file",
        code="undecodable",
    )


def _read_csv(data: bytes) -> tuple[pa.Table, str]:
    # A UTF-8 file is parsed straight from its bytes (pyarrow validates UTF-8 itself): no decoded
    # copy of a file that may be gigabytes. Other encodings are transcoded first.
    buffer = pa.py_buffer(data)
    if data.startswith(b"\xef\xbb\xbf"):
        candidates: list[str] = ["utf-8-sig"]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8", *_FALLBACK_ENCODINGS]
    for encoding in candidates:
        if encoding in ("utf-8", "utf-8-sig"):
            body = buffer.slice(3) if encoding == "utf-8-sig" else buffer
            try:
                return _parse_utf8_csv(body), encoding
            except _NotUtf8:
                continue
        try:
            transcoded = pa.py_buffer(data.decode(encoding).encode("utf-8"))
        except UnicodeDecodeError:
            continue
        return _parse_utf8_csv(transcoded), encoding
    raise _decode_error(candidates)


class _NotUtf8(ValueError):
    pass


def _parse_utf8_csv(body: pa.Buffer) -> pa.Table:
    """Parse UTF-8 CSV bytes with every column as text; `_NotUtf8` when the bytes are not."""
    head = body.slice(0, min(body.size, 1 << 16)).to_pybytes()
    if body.size > len(head):
        head = head[: head.rfind(b"\n") + 1] or head[:-4]
    try:
        header = next(csv.reader(io.StringIO(head.decode("utf-8"))))
    except UnicodeDecodeError as exc:
        raise _NotUtf8 from exc
    except StopIteration:
        raise ExportFileError("the file is empty", param="file", code="empty_file") from None
    # Every column is read as text: ids such as "00123" must keep their leading zeros.
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(body),
            read_options=pa_csv.ReadOptions(block_size=1 << 24),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=convert,
        )
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower():
            raise _NotUtf8 from exc
        # pyarrow quotes the offending row ("Expected 2 columns, got 3: <row>"): complaint text,
        # personal data, which an error answer must not carry. Its first two parts say enough.
        problem = ": ".join(str(exc).split(": ")[:2])
        raise ExportFileError(
            f"malformed CSV: {problem}", param="file", code="malformed_file"
        ) from exc
    if any(pa.types.is_binary(field.type) for field in table.schema):
        raise _NotUtf8
    return table


def _read_xlsx(data: bytes, sheet: str | None) -> dict[str, pd.DataFrame]:
    try:
        workbook = pd.ExcelFile(io.BytesIO(data), engine="openpyxl")
    except Exception as exc:
        raise ExportFileError(
            "corrupt or unreadable XLSX file (not a valid Excel workbook)",
            param="file",
            code="corrupt_file",
        ) from exc
    names = [str(n) for n in workbook.sheet_names]
    if sheet is not None and sheet not in names:
        raise ExportFileError(
            f"sheet {sheet!r} not found; the workbook has: {', '.join(names)}",
            param="sheet",
            code="sheet_not_found",
        )
    try:
        frames = {
            name: pd.read_excel(workbook, sheet_name=name, dtype=str, keep_default_na=False)
            for name in ([sheet] if sheet else names)
        }
    except Exception as exc:
        raise ExportFileError(
            "corrupt XLSX file: a sheet cannot be read", param="file", code="corrupt_file"
        ) from exc
    return {name: frame for name, frame in frames.items() if not frame.empty}


def _read_jsonl(data: bytes) -> pa.Table:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _decode_error(["utf-8"]) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportFileError(
                f"malformed JSONL at line {number}: {exc.msg}", param="file", code="malformed_file"
            ) from exc
        if not isinstance(value, dict):
            raise ExportFileError(
                f"JSONL line {number} is not an object", param="file", code="malformed_file"
            )
        rows.append(value)
    if not rows:
        raise ExportFileError("the file is empty", param="file", code="empty_file")
    frame = pd.DataFrame.from_records(rows)
    return pa.Table.from_pandas(_as_text(frame), preserve_index=False)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as nullable text (numbers and ids become their string form)."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        mask = values.isna()
        out[str(column)] = values.astype(str).where(~mask, None).astype("string[pyarrow]")
    return pd.DataFrame(out)


def _read_parquet(data: bytes) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ExportFileError(
            "corrupt or unreadable Parquet file", param="file", code="corrupt_file"
        ) from exc


def _records(
    table: pa.Table, text_column: str | None, sheet_name: str | None, first_row: int
) -> tuple[pa.Table, str, str | None]:
    columns = [str(c) for c in table.column_names]
    text_col = detect_column(columns, TEXT_COLUMN_NAMES, text_column)
    if text_col is None:
        wanted = f"column {text_column!r}" if text_column else "a text column"
        raise ExportFileError(
            f"no {wanted} found; {_columns_hint(columns)}. "
            "Name it with --text-column / text_column.",
            param="text_column",
            code="no_text_column",
        )
    id_col = detect_column(columns, ID_COLUMN_NAMES, None)
    rows = table.num_rows
    text = table.column(text_col).cast(pa.string())
    ids = (
        table.column(id_col).cast(pa.string())
        if id_col is not None
        else pa.nulls(rows, pa.string())
    )
    records = pa.table(
        {
            "id": ids,
            "text": text,
            "source_row": pa.array(range(first_row, first_row + rows), pa.int64()),
            "source_sheet": pa.array([sheet_name] * rows, pa.string())
            if sheet_name
            else pa.nulls(rows, pa.string()),
        },
        schema=RECORD_SCHEMA,
    )
    return records, text_col, id_col


def read_export(
    data: bytes, filename: str, *, text_column: str | None = None, sheet: str | None = None
) -> ExportRecords:
    """Parse an export into `RECORD_SCHEMA` rows; raises `ExportFileError` on bad input."""
    fmt = detect_format(filename)
    if not data:
        raise ExportFileError("the file is empty", param="file", code="empty_file")
    encoding: str | None = None
    if fmt == "xlsx":
        frames = _read_xlsx(data, sheet)
        if not frames:
            raise ExportFileError("the workbook has no rows", param="file", code="empty_file")
        parts, text_col, id_col, offset = [], "", None, 0
        for name, frame in frames.items():
            table = pa.Table.from_pandas(_as_text(frame), preserve_index=False)
            records, text_col, id_col = _records(table, text_column, name, offset)
            parts.append(records)
            offset += records.num_rows
        return ExportRecords(pa.concat_tables(parts), fmt, text_col, id_col, None, tuple(frames))
    if fmt == "csv":
        table, encoding = _read_csv(data)
    elif fmt == "jsonl":
        table, encoding = _read_jsonl(data), "utf-8"
    else:
        table = _read_parquet(data)
    records, text_col, id_col = _records(table, text_column, None, 0)
    return ExportRecords(records, fmt, text_col, id_col, encoding, ())
