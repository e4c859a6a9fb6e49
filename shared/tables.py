"""Reading complaint exports (CSV, XLSX, JSONL, Parquet) into one Arrow table shape.

Ingest and batch extraction both accept "whatever the company exported", so the detection of
format, encoding, text column and id column lives here once. Every failure is an
`ExportFileError` with a message a user can act on.

An export may be hostile: a zip that inflates to gigabytes, a Parquet file of a billion
run-length-encoded rows, JSON nested a hundred thousand deep. Two functions read them, both under
`ExportLimits` checked before anything is materialized:

- `check_export`, in the API processes: only what a file's first megabyte, zip directory or
  Parquet footer shows, in bounded memory and time, so that most bad files get their 4xx at upload;
- `read_export`, in the workers (and the CLI): the whole file, counting rows, cells and decoded
  bytes as it goes, so that what no header shows fails the job with the same codes.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from shared.errors import InvalidInputError
from shared.json_scan import nesting_exceeds
from shared.settings import Settings, get_settings

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


# What `check_export` reads of a CSV or JSONL upload: its header row and first lines.
HEAD_BYTES = 1 << 20
# Excel's own column limit; pyarrow would make a column of every name of a longer header.
MAX_COLUMNS = 16_384
# Records are flat objects; `json.loads` recurses once per level of nesting.
MAX_JSON_DEPTH = 64
MAX_JSONL_LINE_BYTES = 4 << 20
# A workbook has tens of parts; zipfile builds an object per central directory entry.
MAX_ZIP_ENTRIES = 10_000
# pyarrow decodes a Parquet footer whole; a few kilobytes per row group are plenty.
MAX_PARQUET_FOOTER_BYTES = 16 << 20
PARQUET_BATCH_ROWS = 65_536
_ZIP_END_RECORD = b"PK\x05\x06"
_ZIP_END_RECORD_BYTES = 22


class ExportFileError(InvalidInputError):
    """An export that cannot be read; `code` says why (for APIs and tests)."""


class ExportLimitError(ExportFileError):
    """An export past one of the `ExportLimits` (or a fixed bound of the formats above): 413."""

    status_code = 413
    error_type = "payload_too_large"


@dataclass(frozen=True)
class ExportLimits:
    """How much of an export may be parsed: checked before or while parsing, never after."""

    max_rows: int
    max_cells: int
    max_decompressed_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ExportLimits:
        settings = settings or get_settings()
        return cls(
            max_rows=settings.ingest_max_rows,
            max_cells=settings.ingest_max_cells,
            max_decompressed_bytes=settings.ingest_max_decompressed_mb * 1024 * 1024,
        )

    def check_rows(self, rows: int) -> None:
        if rows > self.max_rows:
            raise ExportLimitError(
                f"the file has more than {self.max_rows:,} rows (TIQU_INGEST_MAX_ROWS)",
                param="file",
                code="too_many_rows",
            )

    def check_cells(self, cells: int) -> None:
        if cells > self.max_cells:
            raise ExportLimitError(
                f"the file has more than {self.max_cells:,} cells (TIQU_INGEST_MAX_CELLS)",
                param="file",
                code="too_many_cells",
            )

    def check_decompressed(self, size: int) -> None:
        if size > self.max_decompressed_bytes:
            raise ExportLimitError(
                f"the file decompresses or decodes to more than "
                f"{self.max_decompressed_bytes // (1024 * 1024):,} MiB "
                "(TIQU_INGEST_MAX_DECOMPRESSED_MB)",
                param="file",
                code="decompressed_too_large",
            )


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


def _text_column(columns: list[str], override: str | None) -> str:
    """The text column among `columns` (named, or detected); `no_text_column` if there is none."""
    found = detect_column(columns, TEXT_COLUMN_NAMES, override)
    if found is None:
        wanted = f"column {override!r}" if override else "text column"
        raise ExportFileError(
            f"no {wanted} found; {_columns_hint(columns)}. "
            "Name it with --text-column / text_column.",
            param="text_column",
            code="no_text_column",
        )
    return found


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


def _csv_encodings(data: bytes) -> list[str]:
    """The encodings to try, in order, for a CSV starting with `data`."""
    if data.startswith(b"\xef\xbb\xbf"):
        return ["utf-8-sig"]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ["utf-16"]
    return ["utf-8", *_FALLBACK_ENCODINGS]


def _csv_header(text: str) -> list[str]:
    """The names of the header row at the start of `text`."""
    try:
        header = next(csv.reader(io.StringIO(text)))
    except StopIteration:
        raise ExportFileError("the file is empty", param="file", code="empty_file") from None
    except csv.Error as exc:
        raise ExportFileError(
            f"malformed CSV header: {exc}", param="file", code="malformed_file"
        ) from exc
    if len(header) > MAX_COLUMNS:
        raise ExportLimitError(
            f"the header has {len(header):,} columns; at most {MAX_COLUMNS:,} are read",
            param="file",
            code="too_many_columns",
        )
    return header


def _check_csv_head(head: bytes, whole: bool, text_column: str | None) -> None:
    """Encoding, header row and text column of a CSV, from its first bytes."""
    candidates = _csv_encodings(head)
    for encoding in candidates:
        # Incrementally: a head cut inside a character is not an undecodable file.
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            text = decoder.decode(head, final=whole)
        except UnicodeDecodeError:
            continue
        _text_column(_csv_header(text), text_column)
        return
    raise _decode_error(candidates)


def _read_csv(data: bytes, limits: ExportLimits) -> tuple[pa.Table, str]:
    # A UTF-8 file is parsed straight from its bytes (pyarrow validates UTF-8 itself): no decoded
    # copy of a file that may be gigabytes. Other encodings are transcoded first.
    buffer = pa.py_buffer(data)
    candidates = _csv_encodings(data)
    for encoding in candidates:
        if encoding in ("utf-8", "utf-8-sig"):
            body = buffer.slice(3) if encoding == "utf-8-sig" else buffer
            try:
                return _parse_utf8_csv(body, limits), encoding
            except _NotUtf8:
                continue
        try:
            transcoded = pa.py_buffer(data.decode(encoding).encode("utf-8"))
        except UnicodeDecodeError:
            continue
        return _parse_utf8_csv(transcoded, limits), encoding
    raise _decode_error(candidates)


class _NotUtf8(ValueError):
    pass


def _parse_utf8_csv(body: pa.Buffer, limits: ExportLimits) -> pa.Table:
    """Parse UTF-8 CSV bytes with every column as text; `_NotUtf8` when the bytes are not.

    Block by block, counting rows and cells: a file of short lines never becomes a table above
    the limits."""
    head = body.slice(0, min(body.size, HEAD_BYTES)).to_pybytes()
    try:
        header = _csv_header(codecs.getincrementaldecoder("utf-8")().decode(head, final=False))
    except UnicodeDecodeError as exc:
        raise _NotUtf8 from exc
    # Every column is read as text: ids such as "00123" must keep their leading zeros.
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        reader = pa_csv.open_csv(
            pa.BufferReader(body),
            read_options=pa_csv.ReadOptions(block_size=1 << 24),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=convert,
        )
        batches, rows = [], 0
        for batch in reader:
            rows += batch.num_rows
            limits.check_rows(rows)
            limits.check_cells(rows * batch.num_columns)
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=reader.schema)
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


def _corrupt_xlsx() -> ExportFileError:
    return ExportFileError(
        "corrupt or unreadable XLSX file (not a valid Excel workbook)",
        param="file",
        code="corrupt_file",
    )


def _zip_entries(handle: IO[bytes]) -> int:
    """The entry count a zip's end record declares, read before zipfile makes an object of each."""
    size = handle.seek(0, io.SEEK_END)
    tail_size = min(size, _ZIP_END_RECORD_BYTES + 0xFFFF)  # the record and the longest comment
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(_ZIP_END_RECORD)
    if at < 0 or len(tail) - at < _ZIP_END_RECORD_BYTES:
        raise _corrupt_xlsx()
    return int.from_bytes(tail[at + 10 : at + 12], "little")  # (0xFFFF: a zip64 count)


def _check_zip(handle: IO[bytes], limits: ExportLimits) -> None:
    """Refuse a workbook whose zip directory holds too many entries, or declares more inflated
    bytes than the limit, before anything is inflated. zipfile never inflates a member past its
    declared size, and deflate (the only method allowed) never more than it is asked for at once,
    so the declared sizes bound what openpyxl reads."""
    entries = _zip_entries(handle)
    if entries > MAX_ZIP_ENTRIES:
        raise ExportLimitError(
            f"the workbook's zip holds more than {MAX_ZIP_ENTRIES:,} entries",
            param="file",
            code="too_many_entries",
        )
    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _corrupt_xlsx() from exc
    if any(m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) for m in members):
        raise _corrupt_xlsx()
    limits.check_decompressed(sum(m.file_size for m in members))


def _cell_text(value: Any) -> str:
    """A cell as pandas' `read_excel(dtype=str, keep_default_na=False)` gave it: empty cells
    "", whole numbers without ".0", dates as `2026-01-01 00:00:00`."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return str(dt.datetime.combine(value, dt.time()))
    return str(value)


def _column_names(header: tuple[Any, ...], width: int) -> list[str]:
    """Header cells as column names: empty ones `Unnamed: N`, repeated ones `name.1`, `name.2`."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for index in range(width):
        value = header[index] if index < len(header) else None
        name = f"Unnamed: {index}" if value is None or value == "" else _cell_text(value)
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
    return names


@dataclass
class _Counts:
    """Rows and cells read so far, across the sheets of a workbook."""

    limits: ExportLimits
    rows: int = 0
    cells: int = 0

    def add(self, cells: int) -> None:
        self.rows += 1
        self.cells += cells
        self.limits.check_rows(self.rows)
        self.limits.check_cells(self.cells)


def _trimmed(values: tuple[Any, ...]) -> tuple[Any, ...]:
    end = len(values)
    while end and values[end - 1] is None:
        end -= 1
    return values[:end]


def _sheet_table(worksheet: Any, counts: _Counts) -> pa.Table | None:
    """A sheet's rows under its first non-empty row as header, every cell as text, as pandas read
    them (blank rows between data rows stay, as empty rows: `source_row` numbers match the
    sheet's); None when it has no data rows. Openpyxl streams the sheet; rows and cells are
    counted as they come."""
    header: tuple[Any, ...] | None = None
    rows: list[tuple[Any, ...]] = []
    for cells in worksheet.iter_rows(values_only=True):
        values = _trimmed(cells)
        if header is None and values:
            header = values
            continue
        # Every row read counts, blank or not, padded as openpyxl pads it to the sheet's
        # declared width: what it costs to read, whatever it holds.
        counts.add(len(cells))
        if header is not None:
            rows.append(values)
    while rows and not rows[-1]:  # trailing blank rows are dropped, blank rows between kept
        rows.pop()
    if header is None or not rows:
        return None
    width = max(len(header), *(len(r) for r in rows))
    columns = {
        name: pa.array(
            [_cell_text(row[index]) if index < len(row) else "" for row in rows], pa.string()
        )
        for index, name in enumerate(_column_names(header, width))
    }
    return pa.table(columns)


def _read_xlsx(data: bytes, sheet: str | None, limits: ExportLimits) -> dict[str, pa.Table]:
    # Imported here: only the roles that read exports (ingest, batch) install openpyxl.
    import openpyxl

    _check_zip(io.BytesIO(data), limits)
    try:
        workbook = openpyxl.load_workbook(
            io.BytesIO(data), read_only=True, data_only=True, keep_links=False
        )
    except Exception as exc:
        raise _corrupt_xlsx() from exc
    try:
        names = [str(n) for n in workbook.sheetnames]
        if sheet is not None and sheet not in names:
            raise ExportFileError(
                f"sheet {sheet!r} not found; the workbook has: {', '.join(names)}",
                param="sheet",
                code="sheet_not_found",
            )
        counts = _Counts(limits)
        tables = {}
        for name in [sheet] if sheet else names:
            table = _sheet_table(workbook[name], counts)
            if table is not None:
                tables[name] = table
    except ExportFileError:
        raise
    except Exception as exc:
        raise ExportFileError(
            "corrupt XLSX file: a sheet cannot be read", param="file", code="corrupt_file"
        ) from exc
    finally:
        workbook.close()
    return tables


def _check_jsonl_line(line: bytes, number: int) -> None:
    """Refuse a line too long or too deeply nested to hand to `json.loads`."""
    if len(line) > MAX_JSONL_LINE_BYTES:
        raise ExportLimitError(
            f"JSONL line {number} is longer than {MAX_JSONL_LINE_BYTES // (1024 * 1024)} MiB",
            param="file",
            code="line_too_long",
        )
    if nesting_exceeds(line, MAX_JSON_DEPTH):
        raise ExportLimitError(
            f"JSONL line {number} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels",
            param="file",
            code="too_deep",
        )


def _jsonl_records(lines: list[bytes], limits: ExportLimits) -> list[dict[str, Any]]:
    """The objects of complete JSONL lines (numbered from 1), blank lines skipped, counted as
    they are parsed."""
    records: list[dict[str, Any]] = []
    cells = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        _check_jsonl_line(line, number)
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise _decode_error(["utf-8"]) from None
        except json.JSONDecodeError as exc:
            raise ExportFileError(
                f"malformed JSONL at line {number}: {exc.msg}", param="file", code="malformed_file"
            ) from exc
        except ValueError as exc:  # a number of more digits than Python converts
            raise ExportFileError(
                f"malformed JSONL at line {number}: {exc}", param="file", code="malformed_file"
            ) from exc
        if not isinstance(value, dict):
            raise ExportFileError(
                f"JSONL line {number} is not an object", param="file", code="malformed_file"
            )
        records.append(value)
        cells += len(value)
        limits.check_rows(len(records))
        limits.check_cells(cells)
    return records


def _check_jsonl_head(
    head: bytes, whole: bool, text_column: str | None, limits: ExportLimits
) -> None:
    """The first lines of a JSONL: objects, not nested too deep, one of them with a text field.

    The last line of a cut head is only measured (a line longer than the head: its start)."""
    head = head.removeprefix(b"\xef\xbb\xbf")
    complete, _, rest = (head, b"", b"") if whole else head.rpartition(b"\n")
    lines = complete.split(b"\n")
    _check_jsonl_line(rest, len(lines) + 1)
    records = _jsonl_records(lines, limits)
    if not records:
        if whole:
            raise ExportFileError("the file is empty", param="file", code="empty_file")
        return
    _text_column(list(dict.fromkeys(str(k) for r in records for k in r)), text_column)


def _read_jsonl(data: bytes, limits: ExportLimits) -> pa.Table:
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    rows = _jsonl_records(lines, limits)
    del lines  # a copy of the file, not needed to build the table
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


def _corrupt_parquet() -> ExportFileError:
    return ExportFileError("corrupt or unreadable Parquet file", param="file", code="corrupt_file")


def _open_parquet(handle: IO[bytes], read_dictionary: list[str] | None = None) -> pq.ParquetFile:
    """A Parquet file's footer, once its magic bytes and declared length are checked."""
    size = handle.seek(0, io.SEEK_END)
    handle.seek(0)
    head = handle.read(4)
    handle.seek(max(size - 8, 0))
    tail = handle.read(8)
    if size < 12 or head != b"PAR1" or tail[4:] != b"PAR1":
        raise _corrupt_parquet()
    footer = int.from_bytes(tail[:4], "little")
    if footer > size - 12:
        raise _corrupt_parquet()
    if footer > MAX_PARQUET_FOOTER_BYTES:
        raise ExportLimitError(
            f"the Parquet footer is larger than {MAX_PARQUET_FOOTER_BYTES // (1024 * 1024)} MiB",
            param="file",
            code="footer_too_large",
        )
    handle.seek(0)
    try:
        return pq.ParquetFile(handle, read_dictionary=read_dictionary)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _corrupt_parquet() from exc


def _parquet_columns(
    parquet: pq.ParquetFile, text_column: str | None, limits: ExportLimits
) -> list[str]:
    """The columns to read (text, and id if any), once the footer's row count and the declared
    decoded size of those columns are within the limits."""
    metadata = parquet.metadata
    try:
        names = [str(n) for n in parquet.schema_arrow.names]
    except (pa.ArrowException, ValueError) as exc:  # a stored Arrow schema that is not one
        raise _corrupt_parquet() from exc
    text_col = _text_column(names, text_column)
    id_col = detect_column(names, ID_COLUMN_NAMES, None)
    wanted = [text_col] + ([id_col] if id_col not in (None, text_col) else [])
    limits.check_rows(metadata.num_rows)
    limits.check_cells(metadata.num_rows * len(wanted))
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    leaves = [i for i, path in enumerate(paths) if path.split(".")[0] in wanted]
    limits.check_decompressed(
        sum(
            metadata.row_group(group).column(leaf).total_uncompressed_size
            for group in range(metadata.num_row_groups)
            for leaf in leaves
        )
    )
    return wanted


_VARIABLE_WIDTH = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)


def _decoded_bytes(column: pa.Array) -> int:
    """What a column holds once its dictionary, if any, is expanded."""
    if not isinstance(column, pa.DictionaryArray):
        return column.nbytes
    dictionary = column.dictionary
    kind = dictionary.type
    if not any(is_kind(kind) for is_kind in _VARIABLE_WIDTH):
        dictionary = dictionary.cast(pa.string())  # the text each value becomes
    lengths = pc.take(pc.binary_length(dictionary), column.indices)
    return int(pc.sum(lengths).as_py() or 0) + 4 * len(column)


def _read_parquet(data: bytes, text_column: str | None, limits: ExportLimits) -> pa.Table:
    """The text and id columns, batch by batch, dictionaries kept until their expanded size is
    known: a long value repeated a million times is counted, not decoded."""
    wanted = _parquet_columns(_open_parquet(io.BytesIO(data)), text_column, limits)
    parquet = _open_parquet(io.BytesIO(data), read_dictionary=wanted)
    batches, rows, decoded = [], 0, 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
            rows += batch.num_rows
            limits.check_rows(rows)
            decoded += sum(_decoded_bytes(column) for column in batch.columns)
            limits.check_decompressed(decoded)
            batches.append(
                pa.record_batch(
                    [
                        c.dictionary_decode() if isinstance(c, pa.DictionaryArray) else c
                        for c in batch.columns
                    ],
                    names=batch.schema.names,
                )
            )
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _corrupt_parquet() from exc
    if not batches:
        return pa.table({name: pa.array([], pa.string()) for name in wanted})
    return pa.Table.from_batches(batches)


def _records(
    table: pa.Table, text_column: str | None, sheet_name: str | None, first_row: int
) -> tuple[pa.Table, str, str | None]:
    columns = [str(c) for c in table.column_names]
    text_col = _text_column(columns, text_column)
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


def check_export(
    handle: IO[bytes],
    filename: str,
    *,
    text_column: str | None = None,
    limits: ExportLimits | None = None,
) -> None:
    """Check an upload in bounded memory and time, without parsing it: its format, and what its
    first megabyte (CSV, JSONL), zip directory (XLSX) or footer (Parquet) shows. Raises
    `ExportFileError` (`ExportLimitError` past a limit); `read_export` checks the rest."""
    limits = limits or ExportLimits.from_settings()
    fmt = detect_format(filename)
    size = handle.seek(0, io.SEEK_END)
    if not size:
        raise ExportFileError("the file is empty", param="file", code="empty_file")
    if fmt == "xlsx":
        _check_zip(handle, limits)
    elif fmt == "parquet":
        _parquet_columns(_open_parquet(handle), text_column, limits)
    else:
        handle.seek(0)
        head = handle.read(HEAD_BYTES)
        if fmt == "csv":
            _check_csv_head(head, len(head) == size, text_column)
        else:
            _check_jsonl_head(head, len(head) == size, text_column, limits)
        if len(head) == size:
            # A text file this small is parsed whole in bounded memory: every error it has is
            # answered at upload, not left for a job to fail on.
            read_export(head, filename, text_column=text_column, limits=limits)
    handle.seek(0)


def read_export(
    data: bytes,
    filename: str,
    *,
    text_column: str | None = None,
    sheet: str | None = None,
    limits: ExportLimits | None = None,
) -> ExportRecords:
    """Parse an export into `RECORD_SCHEMA` rows under `limits` (default: the settings');
    raises `ExportFileError` on bad input, `ExportLimitError` past a limit."""
    limits = limits or ExportLimits.from_settings()
    fmt = detect_format(filename)
    if not data:
        raise ExportFileError("the file is empty", param="file", code="empty_file")
    encoding: str | None = None
    if fmt == "xlsx":
        tables = _read_xlsx(data, sheet, limits)
        if not tables:
            raise ExportFileError("the workbook has no rows", param="file", code="empty_file")
        parts, text_col, id_col, offset = [], "", None, 0
        for name, table in tables.items():
            records, text_col, id_col = _records(table, text_column, name, offset)
            parts.append(records)
            offset += records.num_rows
        return ExportRecords(pa.concat_tables(parts), fmt, text_col, id_col, None, tuple(tables))
    if fmt == "csv":
        table, encoding = _read_csv(data, limits)
    elif fmt == "jsonl":
        table, encoding = _read_jsonl(data, limits), "utf-8"
    else:
        table = _read_parquet(data, text_column, limits)
    records, text_col, id_col = _records(table, text_column, None, 0)
    return ExportRecords(records, fmt, text_col, id_col, encoding, ())
