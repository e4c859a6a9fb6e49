"""Helpers for tests that start real processes: free ports, process handles, polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The `tiqu` command of the virtualenv running the tests.
TIQU = str(Path(sys.executable).with_name("tiqu"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start_process(argv: list[str], log_path: Path, env: dict[str, str]) -> ServiceProcess:
    handle = log_path.open("wb")
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    return ServiceProcess(process, log_path)


def wait_until(predicate, timeout: float, what: str, process: ServiceProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.process.poll() is not None:
            raise AssertionError(f"{what}: process exited early\n{process.log()[-4000:]}")
        time.sleep(0.2)
    tail = process.log()[-4000:] if process else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
