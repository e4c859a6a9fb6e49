"""Hostile files (scenario 17): decompression bombs, deep nesting, uploads held in memory and
uploads without number.

The upload routes (ingest's POST /v1/datasets, the gateway's POST /v1/batches) run as real
processes, and the ingest worker too where a file gets past the upload checks. Every bomb is
built on disk as it is written, so the test itself stays small; each process's resident memory
is sampled while it works, and killed past 2 GiB so that a regression fails here instead of
taking the machine's memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.store import Layout, Store
from shared.tables import ExportFileError, ExportLimits, check_export, read_export
from tests.reliability.reliability_support import PeakRss
from tests.support import ServiceProcess, wait_until

MIB = 1024**2
GIB = 1024**3
RSS_BOUND = 512 * MIB
# The gateway holds its tokenizer (over 500 MiB) before any upload: its bound is what an upload
# may add to what it held idle.
GROWTH_BOUND = 64 * MIB
KILL_ABOVE = 2 * GIB
TEXT = "网络太慢了，要求退费"
ENVELOPE_KEYS = {"message", "type", "param", "code"}


@dataclass(frozen=True)
class HostileFile:
    path: Path
    what: str  # for the report: what it is, its size on disk and once decoded
    code: str  # the error code it must be refused with


def xlsx_zip_bomb(path: Path, sheet_bytes: int) -> HostileFile:
    """A real workbook whose one sheet holds `sheet_bytes` of rows, deflated as it is written."""
    workbook = openpyxl.Workbook()
    workbook.active.append(["投诉内容"])
    workbook.active.append([TEXT])
    small = io.BytesIO()
    workbook.save(small)
    source = zipfile.ZipFile(small)
    sheet = "xl/worksheets/sheet1.xml"
    head, _, tail = source.read(sheet).decode().partition("</sheetData>")
    row = f'<row><c t="inlineStr"><is><t>{TEXT}</t></is></c></row>'.encode()
    block = row * (MIB // len(row))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
        for info in source.infolist():
            if info.filename != sheet:
                bomb.writestr(info, source.read(info.filename))
        with bomb.open(sheet, "w", force_zip64=True) as out:
            out.write(head.encode())
            written = 0
            while written < sheet_bytes:
                out.write(block)
                written += len(block)
            out.write(b"</sheetData>" + tail.encode())
    return HostileFile(
        path,
        f"xlsx zip bomb ({path.stat().st_size / MIB:.1f} MiB, a sheet of "
        f"{written / GIB:.2f} GiB XML)",
        "decompressed_too_large",
    )


def parquet_rle_bomb(path: Path, rows: int) -> HostileFile:
    """`rows` copies of one text, dictionary- and run-length encoded: a few bytes per million."""
    batch = 10_000_000
    codes = pa.array(np.zeros(batch, np.int32))
    table = pa.table({"text": pa.DictionaryArray.from_arrays(codes, pa.array([TEXT]))})
    # Without the stored Arrow schema a reader sees a plain string column.
    with pq.ParquetWriter(path, table.schema, store_schema=False, write_statistics=False) as out:
        for _ in range(rows // batch):
            out.write_table(table, row_group_size=batch)
    return HostileFile(
        path,
        f"parquet RLE bomb ({path.stat().st_size / MIB:.1f} MiB, {rows:,} rows of one text)",
        "too_many_rows",
    )


def parquet_long_value_bomb(path: Path, rows: int, value_bytes: int) -> HostileFile:
    """Few rows, but each one the same long text from a dictionary: tiny on disk, and far beyond
    any memory once decoded. Its footer declares nothing a cheap check could refuse."""
    value = "投" * (value_bytes // 3)
    codes = pa.array(np.zeros(rows, np.int32))
    table = pa.table({"text": pa.DictionaryArray.from_arrays(codes, pa.array([value]))})
    pq.write_table(table, path, store_schema=False, write_statistics=False, compression="zstd")
    return HostileFile(
        path,
        f"parquet of {rows:,} rows of one {value_bytes / MIB:.1f} MiB text "
        f"({path.stat().st_size:,} bytes, {rows * value_bytes / GIB:,.0f} GiB decoded)",
        "decompressed_too_large",
    )


def jsonl_nesting_bomb(path: Path, depth: int, valid_lines_before: int = 0) -> HostileFile:
    line = json.dumps({"id": "A1", "text": TEXT}, ensure_ascii=False) + "\n"
    with path.open("w", encoding="utf-8") as out:
        out.write(line * valid_lines_before)
        out.write('{"text": ' + "[" * depth + "]" * depth + "}\n")
    where = f" after {valid_lines_before:,} valid lines" if valid_lines_before else ""
    return HostileFile(
        path,
        f"JSONL line nested {depth:,} deep{where} ({path.stat().st_size / MIB:.1f} MiB)",
        "too_deep",
    )


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> list[HostileFile]:
    folder = tmp_path_factory.mktemp("bombs")
    return [
        xlsx_zip_bomb(folder / "complaints.xlsx", int(2.2 * GIB)),
        parquet_rle_bomb(folder / "complaints.parquet", 500_000_000),
        jsonl_nesting_bomb(folder / "complaints.jsonl", 100_000),
    ]


def upload(url: str, route: str, path: Path, headers: dict[str, str]) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(
            f"{url}{route}", files={"file": (path.name, handle)}, headers=headers, timeout=180
        )


def watched_upload(
    server: ServiceProcess, route: str, path: Path, headers: dict[str, str]
) -> tuple[httpx.Response, PeakRss]:
    with PeakRss(server.process.pid, kill_above=KILL_ABOVE) as rss:
        try:
            response = upload(str(server.url), route, path, headers)
        except httpx.HTTPError as exc:
            raise AssertionError(
                f"{path.name}: no answer ({exc!r}); peak RSS {rss.peak / MIB:.0f} MiB, "
                f"killed past {KILL_ABOVE / GIB:.0f} GiB: {rss.killed}"
            ) from exc
    return response, rss


def assert_refused(response: httpx.Response, bomb: HostileFile) -> None:
    assert 400 <= response.status_code < 500, (bomb.what, response.status_code, response.text)
    error = response.json()["error"]
    assert set(response.json()) == {"error"} and set(error) == ENVELOPE_KEYS, response.text
    assert error["code"] == bomb.code, (bomb.what, error)


@pytest.fixture
def upload_api(
    request: pytest.FixtureRequest, start_api, key_headers: dict[str, str]
) -> Callable[[str], tuple[ServiceProcess, str, dict[str, str]]]:
    """An API taking uploads: its process, its upload route and the headers it needs."""

    def start(service: str) -> tuple[ServiceProcess, str, dict[str, str]]:
        if service == "ingest":
            return start_api("ingest"), "/v1/datasets", {}
        env = request.getfixturevalue("serve_env_without_engine")
        return start_api("serve", **env), "/v1/batches", key_headers

    return start


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("service", ["ingest", "serve"])
def test_bombs_are_refused_at_upload_within_the_memory_bound(
    service: str, upload_api, bombs: list[HostileFile], isolated_settings: Path, record
) -> None:
    server, route, headers = upload_api(service)
    with PeakRss(server.process.pid) as idle:
        time.sleep(1)
    bound = RSS_BOUND if service == "ingest" else idle.peak + GROWTH_BOUND
    outcomes = []
    for bomb in bombs:
        response, rss = watched_upload(server, route, bomb.path, headers)
        assert_refused(response, bomb)
        assert rss.peak < bound, (bomb.what, rss.peak / MIB, idle.peak / MIB)
        outcomes.append((bomb, response, rss))
    assert server.process.poll() is None, server.log()[-3000:]
    assert not (isolated_settings / "raw").exists()  # nothing refused was stored
    record(
        17,
        f"{service} API, POST {route}: "
        + "; ".join(bomb.what for bomb in bombs)
        + ", each uploaded while the API process's RSS was sampled every 20 ms",
        "; ".join(
            f"{bomb.path.suffix[1:]}: {response.status_code} {response.json()['error']['code']}"
            for bomb, response, _ in outcomes
        )
        + f"; peak RSS of the API process {max(r.peak for _, _, r in outcomes) / MIB:.0f} MiB, "
        f"{idle.peak / MIB:.0f} MiB idle before (bound {bound / MIB:.0f} MiB); nothing stored",
    )


@pytest.mark.integration
@pytest.mark.slow
def test_a_bomb_past_the_upload_checks_fails_its_job_in_the_worker(
    start_api, start_worker, tmp_path: Path, record
) -> None:
    """What the footer or the first megabytes cannot show is caught where the file is parsed:
    in the worker, which reads it under the same limits and fails the job with their code."""
    hostile = [
        parquet_long_value_bomb(tmp_path / "long.parquet", 200_000, 512 * 1024),
        jsonl_nesting_bomb(tmp_path / "late.jsonl", 100_000, valid_lines_before=100_000),
    ]
    api = start_api("ingest")
    worker = start_worker("ingest")
    finished = []
    with PeakRss(worker.process.pid, kill_above=KILL_ABOVE) as worker_rss:
        for bomb in hostile:
            response, api_rss = watched_upload(api, "/v1/datasets", bomb.path, {})
            assert response.status_code == 202, (bomb.what, response.status_code, response.text)
            dataset_id = response.json()["dataset_id"]
            body: dict = {}

            def done(dataset_id: str = dataset_id) -> bool:
                nonlocal body
                body = httpx.get(f"{api.url}/v1/datasets/{dataset_id}", timeout=10).json()
                return body["state"] in ("ready", "failed")

            wait_until(done, 180, f"{bomb.what} processed", worker)
            assert body["state"] == "failed", (bomb.what, body)
            assert body["error_code"] == bomb.code, (bomb.what, body)
            assert api_rss.peak < RSS_BOUND, (bomb.what, api_rss.peak / MIB)
            finished.append((bomb, body, api_rss.peak))
    assert not worker_rss.killed and worker_rss.peak < RSS_BOUND, worker_rss.peak / MIB
    assert worker.process.poll() is None, worker.log()[-3000:]
    record(
        17,
        "ingest API + worker: " + "; ".join(bomb.what for bomb in hostile) + ", uploaded",
        "; ".join(
            f"{b.path.suffix[1:]}: 202, then job {body['state']} with {body['error_code']}"
            for b, body, _ in finished
        )
        + f"; peak RSS of the API {max(p for _, _, p in finished) / MIB:.0f} MiB, of the worker "
        f"{worker_rss.peak / MIB:.0f} MiB (bound {RSS_BOUND // MIB} MiB)",
    )


@pytest.mark.integration
@pytest.mark.slow
def test_an_upload_goes_to_the_store_without_being_held_in_memory(
    start_api, tmp_path: Path, isolated_settings: Path, record
) -> None:
    path = tmp_path / "complaints.csv"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for start in range(0, 3_000_000, 100_000):
            first = b"id,text\n" if start == 0 else b""
            block = (
                first
                + "".join(f"{i},{TEXT}第{i}次\n" for i in range(start, start + 100_000)).encode()
            )
            out.write(block)
            digest.update(block)
    size = path.stat().st_size
    api = start_api("ingest")
    with PeakRss(api.process.pid, kill_above=KILL_ABOVE) as rss:
        baseline = rss.peak
        response = upload(str(api.url), "/v1/datasets", path, {})
    assert response.status_code == 202, response.text
    growth = rss.peak - baseline
    stored = Store(f"file://{isolated_settings}")
    key = Layout.raw(digest.hexdigest(), path.name)
    assert stored.exists(key)
    with stored.open_read(key) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == digest.hexdigest()
    assert growth < 64 * MIB, growth / MIB
    record(
        17,
        f"a {size / MIB:.0f} MiB CSV uploaded to the ingest API",
        f"202; the API process grew by {growth / MIB:.1f} MiB at most (bound 64 MiB): the body "
        "is spooled to disk, hashed and copied to the store in 1 MiB parts, never held whole; the "
        "stored object has the upload's sha256",
    )


def stalled_upload(url: str, declared: int) -> socket.socket:
    """An upload that sends its headers and the start of its file, then waits."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    boundary = "tiqu-stall"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\ntext\n"
    ).encode()
    head = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + part + TEXT.encode() * 1000)
    return sock


@pytest.mark.integration
def test_uploads_beyond_the_bound_get_429_with_retry_after(
    start_api, tmp_path: Path, record
) -> None:
    api = start_api("ingest", TIQU_MAX_CONCURRENT_UPLOADS="2")
    small = tmp_path / "complaints.csv"
    small.write_text(f"text\n{TEXT}\n", encoding="utf-8")
    stalled = [stalled_upload(str(api.url), 10 * MIB) for _ in range(2)]
    try:
        time.sleep(1)  # both are in the API, reading their bodies
        refused = upload(str(api.url), "/v1/datasets", small, {})
        assert refused.status_code == 429, (refused.status_code, refused.text)
        assert refused.json()["error"]["type"] == "overloaded"
        assert set(refused.json()["error"]) == ENVELOPE_KEYS
        retry_after = int(refused.headers["retry-after"])
        assert retry_after >= 1
    finally:
        stalled.pop().close()
    answers: list[int] = []

    def admitted() -> bool:
        answers.append(upload(str(api.url), "/v1/datasets", small, {}).status_code)
        return answers[-1] != 429

    wait_until(admitted, 15, "an upload admitted once a slot is free")
    for sock in stalled:
        sock.close()
    assert answers[-1] == 202, answers
    record(
        17,
        "an ingest API with TIQU_MAX_CONCURRENT_UPLOADS=2: two uploads held open mid-body, a "
        "third sent",
        f"the third answered 429 overloaded with Retry-After: {retry_after} in the envelope; once "
        f"one held upload was closed, the next answered {answers[-1]}",
    )


# -- the limits themselves, on the functions both the API's checks and the workers use ----------

SMALL = ExportLimits(max_rows=50, max_cells=120, max_decompressed_bytes=256 * 1024)


def xlsx_bytes(rows: int, columns: int) -> bytes:
    workbook = openpyxl.Workbook()
    workbook.active.append(["投诉内容", *(f"c{i}" for i in range(1, columns))])
    for _ in range(rows):
        workbook.active.append([TEXT] * columns)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, store_schema=False)
    return out.getvalue()


def zip_of_many_entries(entries: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for index in range(entries):
            archive.writestr(f"x/{index}", b"")
    return out.getvalue()


CAPPED = {
    "csv rows": ("x.csv", ("text\n" + f"{TEXT}\n" * 51).encode(), "too_many_rows"),
    "csv cells": ("x.csv", ("text,a,b\n" + f"{TEXT},1,2\n" * 41).encode(), "too_many_cells"),
    "csv columns": ("x.csv", ("text" + ",a" * 20_000 + "\n").encode(), "too_many_columns"),
    "xlsx cells": ("x.xlsx", xlsx_bytes(41, 3), "too_many_cells"),
    "xlsx rows": ("x.xlsx", xlsx_bytes(51, 1), "too_many_rows"),
    "xlsx decompressed": ("x.xlsx", xlsx_bytes(5000, 1), "decompressed_too_large"),
    "zip entries": ("x.xlsx", zip_of_many_entries(20_000), "too_many_entries"),
    "parquet rows": ("x.parquet", parquet_bytes(pa.table({"text": [TEXT] * 51})), "too_many_rows"),
    "parquet decoded": (
        "x.parquet",
        parquet_bytes(
            pa.table(
                {
                    "text": pa.DictionaryArray.from_arrays(
                        pa.array(np.zeros(40, np.int32)), pa.array(["投" * 30_000])
                    )
                }
            )
        ),
        "decompressed_too_large",
    ),
    "jsonl rows": ("x.jsonl", ('{"text": "' + TEXT + '"}\n').encode() * 51, "too_many_rows"),
    "jsonl depth": ("x.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "too_deep"),
    "jsonl line": ("x.jsonl", b'{"text": "' + b"a" * (5 * MIB) + b'"}\n', "line_too_long"),
}


@pytest.mark.parametrize("case", CAPPED)
def test_the_worker_reader_refuses_files_past_the_limits(case: str) -> None:
    filename, data, code = CAPPED[case]
    with pytest.raises(ExportFileError) as refused:
        read_export(data, filename, limits=SMALL)
    assert refused.value.code == code
    assert refused.value.status_code == 413


@pytest.mark.parametrize(
    "case", ["xlsx decompressed", "zip entries", "parquet rows", "jsonl depth"]
)
def test_the_upload_check_refuses_what_headers_and_footers_show(case: str) -> None:
    filename, data, code = CAPPED[case]
    with pytest.raises(ExportFileError) as refused:
        check_export(io.BytesIO(data), filename, limits=SMALL)
    assert refused.value.code == code


def test_files_within_the_limits_still_read() -> None:
    for filename, data in [
        ("x.csv", ("text\n" + f"{TEXT}\n" * 50).encode()),
        ("x.xlsx", xlsx_bytes(50, 1)),
        ("x.parquet", parquet_bytes(pa.table({"text": [TEXT] * 50}))),
        ("x.jsonl", ('{"text": "' + TEXT + '"}\n').encode() * 50),
    ]:
        check_export(io.BytesIO(data), filename, limits=SMALL)
        assert read_export(data, filename, limits=SMALL).table.num_rows == 50, filename


def test_a_number_of_more_digits_than_python_converts_is_a_malformed_line() -> None:
    data = b'{"text": "' + TEXT.encode() + b'", "n": ' + b"1" * 5000 + b"}\n"
    with pytest.raises(ExportFileError) as refused:
        read_export(data, "x.jsonl")
    assert refused.value.code == "malformed_file"
    with pytest.raises(ExportFileError) as refused:
        check_export(io.BytesIO(data), "x.jsonl")
    assert refused.value.code == "malformed_file"
