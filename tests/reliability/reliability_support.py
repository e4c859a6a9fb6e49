"""Helpers of the reliability suite (scenarios 5-12): every API started as a real process, their
operations read from their own /openapi.json, and a raw HTTP client that sends bodies of any size.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

SERVICES = ("ingest", "distill", "train", "serve")
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"})


@dataclass(frozen=True)
class Operation:
    service: str
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def takes_file(self) -> bool:
        content = (self.spec.get("requestBody") or {}).get("content") or {}
        return "multipart/form-data" in content

    @property
    def takes_json(self) -> bool:
        content = (self.spec.get("requestBody") or {}).get("content") or {}
        return "application/json" in content

    def concrete_path(self) -> str:
        """The path with every parameter filled with a well-formed id that does not exist."""
        examples = {
            "dataset_id": "ds-0000000000000000",
            "run_id": "dr-0000000000000000",
            "train_run_id": "tr-0000000000000000",
            "job_id": "bj-0000000000000000",
        }
        path = self.path
        for name, value in examples.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, path
        return path


def operations(service: str, url: str) -> list[Operation]:
    """Every operation a running API describes in its /openapi.json."""
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    found = []
    for path, item in schema["paths"].items():
        for method, spec in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                found.append(Operation(service, method.upper(), path, spec))
    return found


# -- a raw HTTP/1.1 client: bodies of any size, generated as they are sent ---------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    bytes_sent: int
    seconds: float
    peak_rss_growth: int = 0
    rss: list[int] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def _parse(buffer: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """The response in `buffer` once it is complete (Content-Length or chunked), else None."""
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        return (status, headers, rest[:length]) if len(rest) >= length else None
    if headers.get("transfer-encoding") == "chunked":
        body, cursor = b"", rest
        while True:
            size_line, sep, cursor = cursor.partition(b"\r\n")
            if not sep:
                return None
            size = int(size_line, 16)
            if size == 0:
                return status, headers, body
            if len(cursor) < size + 2:
                return None
            body, cursor = body + cursor[:size], cursor[size + 2 :]
    return None


def send_raw(
    url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    prefix: bytes,
    total: int,
    chunked: bool,
    pid: int | None = None,
    timeout: float = 60,
) -> RawResponse:
    """Send `prefix` then filler bytes up to `total` bytes of body (generated on the fly, never
    held whole), declared with Content-Length or chunked; stop sending as soon as the server has
    answered. With `pid`, that process's resident memory is sampled all along."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.setblocking(False)
    head = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    pending = ("\r\n".join(head) + "\r\n\r\n").encode()
    filler = b"x" * (256 * 1024)
    produced = 0
    sent = 0
    received = b""
    samples: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        process = psutil.Process(pid)
        while not sampling.is_set():
            samples.append(process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True) if pid else None
    started = time.monotonic()
    if sampler:
        sampler.start()
    try:
        writing = True
        while time.monotonic() - started < timeout:
            if writing and not pending and produced < total:
                block = prefix if produced == 0 else filler[: total - produced]
                block = block[: total - produced]
                produced += len(block)
                pending = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
                if chunked and produced >= total:
                    pending += b"0\r\n\r\n"
            readable, writable, _ = select.select(
                [sock], [sock] if writing and pending else [], [], 0.5
            )
            if readable:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                received += data
                parsed = _parse(received)
                if parsed is not None:
                    status, response_headers, body = parsed
                    return RawResponse(
                        status,
                        response_headers,
                        body,
                        sent,
                        time.monotonic() - started,
                        (max(samples) - samples[0]) if samples else 0,
                        samples,
                    )
                if not data:
                    raise AssertionError(f"connection closed with no answer after {sent} bytes")
            if writable:
                try:
                    count = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    writing = False  # the server stopped reading: its answer should be there
                    continue
                except BlockingIOError:
                    continue
                sent += count
                pending = pending[count:]
        raise AssertionError(f"no answer within {timeout} s ({sent} bytes sent)")
    finally:
        sampling.set()
        if sampler:
            sampler.join()
        sock.close()


class PeakRss:
    """The largest resident memory of a process, or of any one of its children (a Celery
    worker's pool), sampled every 20 ms while the `with` block runs. A process that passes
    `kill_above` is killed at once: a regression then fails its test instead of taking the
    machine's memory."""

    def __init__(self, pid: int, kill_above: int | None = None) -> None:
        self.root = psutil.Process(pid)
        self.kill_above = kill_above
        self.peak = 0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self, process: psutil.Process) -> int:
        try:
            return process.memory_info().rss
        except psutil.NoSuchProcess:
            return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                rss = self._rss(process)
                self.peak = max(self.peak, rss)
                if self.kill_above is not None and rss > self.kill_above:
                    self.killed = True
                    process.kill()
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self.peak = max(self._rss(p) for p in [self.root, *self.root.children(recursive=True)])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
