"""Closed by default (scenario 16): an API without keys refuses to start on an interface other
machines reach, unless TIQU_ALLOW_NO_AUTH=true says so; the shipped configuration publishes the
APIs on the loopback interface only. Each API is started as a real `tiqu api` process."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.engine_fixtures import API_KEY
from tests.support import ROOT, TIQU, free_port, start_process

pytestmark = [pytest.mark.integration]

SERVICES = ("ingest", "distill", "train", "serve")
START_TIMEOUT_S = 60


def run_until_exit_or_healthy(
    argv: list[str], env: dict[str, str], log: Path, port: int
) -> tuple[int | None, str]:
    """Start `argv`; the exit code once it exits (None when it answers /healthz first), and its
    output. A process still running is stopped."""
    process = start_process(argv, log, env)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            code = process.process.poll()
            if code is not None:
                return code, process.log()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return None, process.log()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"neither exited nor healthy in {START_TIMEOUT_S} s\n{process.log()}")
    finally:
        process.stop()


def test_an_api_without_keys_refuses_a_public_interface(
    service_env: dict[str, str], serve_env_without_engine: dict[str, str], tmp_path: Path, record
) -> None:
    refusals: dict[str, str] = {}
    for service in SERVICES:
        port = free_port()
        env = dict(service_env)
        if service == "serve":
            env |= {k: v for k, v in serve_env_without_engine.items() if k != "TIQU_API_KEYS"}
        argv = [TIQU, "api", service, "--host", "0.0.0.0", "--port", str(port)]
        code, output = run_until_exit_or_healthy(argv, env, tmp_path / f"{service}.log", port)
        assert code is not None and code != 0, (service, code, output)
        assert "Traceback" not in output, output
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1, output
        assert "TIQU_API_KEYS" in lines[0] and "TIQU_ALLOW_NO_AUTH" in lines[0], output
        refusals[service] = f"exit {code}"
    message = lines[0]

    port = free_port()
    argv = [TIQU, "api", "ingest", "--host", "0.0.0.0", "--port", str(port)]
    allowed_env = {**service_env, "TIQU_ALLOW_NO_AUTH": "true"}
    code, output = run_until_exit_or_healthy(argv, allowed_env, tmp_path / "allowed.log", port)
    assert code is None, output
    assert "without authentication" in output, output

    port = free_port()
    argv = [TIQU, "api", "ingest", "--port", str(port)]
    code, output = run_until_exit_or_healthy(argv, service_env, tmp_path / "loopback.log", port)
    assert code is None, output

    port = free_port()
    argv = [TIQU, "api", "ingest", "--host", "0.0.0.0", "--port", str(port)]
    keyed_env = {**service_env, "TIQU_API_KEYS": f"admin:{API_KEY}"}
    process = start_process(argv, tmp_path / "keyed.log", keyed_env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        status = None
        while status is None and time.monotonic() < deadline:
            assert process.process.poll() is None, process.log()
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v1/datasets", timeout=1).status_code
            except httpx.HTTPError:
                time.sleep(0.2)
        assert status == 401
    finally:
        process.stop()

    bad_port = free_port()
    argv = [TIQU, "api", "ingest", "--port", str(bad_port)]
    bad_env = {**service_env, "TIQU_API_KEYS": "root:secret-value-1234"}
    code, output = run_until_exit_or_healthy(argv, bad_env, tmp_path / "bad.log", bad_port)
    assert code is not None and code != 0 and "Traceback" not in output, output
    assert "entry 1" in output and "scope" in output, output
    assert "root" not in output and "secret-value-1234" not in output, output
    record(
        16,
        "`tiqu api ingest`, `distill`, `train` and `serve` with `--host 0.0.0.0`, started with no "
        "TIQU_API_KEYS; then with TIQU_ALLOW_NO_AUTH=true; on 127.0.0.1 with no keys; on 0.0.0.0 "
        "with a key; with a key of an unknown scope",
        f"no keys on 0.0.0.0: {', '.join(f'{s} {c}' for s, c in refusals.items())}, one line "
        f"each, no traceback (“{message.strip()}”); TIQU_ALLOW_NO_AUTH=true: started, with "
        "a warning; loopback without keys: started; 0.0.0.0 with a key: started, 401 without it; "
        "unknown scope: refused to start, naming the entry, echoing neither scope nor key",
    )


def test_the_shipped_configuration_is_not_open(record) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    published: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        command = [str(word) for word in service.get("command") or []]
        if command[:1] == ["api"]:
            published[name] = [str(port) for port in service.get("ports", [])]
    assert len(published) == 4
    for name, ports in published.items():
        assert ports, name
        for port in ports:
            assert port.startswith("127.0.0.1:"), (name, port)
    env_example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert re.search(r"^TIQU_ALLOW_NO_AUTH=false$", env_example, re.MULTILINE)
    assert re.search(r"^TIQU_API_KEYS=$", env_example, re.MULTILINE)
    record(
        16,
        "docker-compose.yml's API services and .env.example read",
        f"{sum(len(p) for p in published.values())} API ports published, all on 127.0.0.1 "
        f"({', '.join(p for ports in published.values() for p in ports)}); .env.example: no keys "
        "and TIQU_ALLOW_NO_AUTH=false, so an API it configures starts on loopback only",
    )
