"""Scenario 5: vLLM killed (SIGKILL, its whole process group) while the gateway is under load,
then started again on the same port. The gateway is never restarted."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.models import resolve_base_model
from shared.settings import get_settings
from shared.store import Store
from tests.engine_fixtures import API_KEY, auth
from tests.serve.serve_support import register_lora
from tests.support import TIQU, ServiceProcess, free_port, start_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TIMEOUT_S = 10.0
CLIENTS = 4
TEXT = "我叫韩梅梅，电话 13912345678，邮箱 hmm@example.com，快递三天没到，请尽快处理。"


@dataclass
class Call:
    started: float
    ended: float
    status: int
    retry_after: str | None
    body: dict


def start_engine(serve_model: Path, cache: Path, port: int, log: Path) -> ServiceProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIQU_")}
    env.update(
        TIQU_BASE_MODEL=str(serve_model),
        TIQU_MODEL_CACHE=str(cache),
        TIQU_ENGINE_PORT=str(port),
        TIQU_ENGINE_MAX_MODEL_LEN="1024",
        TIQU_ENGINE_MAX_NUM_SEQS="16",
        TIQU_ENGINE_MAX_CPU_LORAS="4",
        # The tiny model needs a few MB of KV cache; a share of the memory would depend on the
        # machine (and fail where vLLM's own process already holds more than that share).
        TIQU_ENGINE_KV_CACHE_GIB="0.25",
        # vLLM's own binding: one core stays free for the gateway and the tests' clients.
        TIQU_ENGINE_CPU_THREADS_BIND="auto",
        PYTHONUNBUFFERED="1",
    )
    return start_process([TIQU, "serve", "engine"], log, env)


def answers(url: str, path: str) -> int | None:
    try:
        return httpx.get(f"{url}{path}", timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_engine_killed_under_load_fails_fast_and_traffic_resumes(
    serve_model: Path, loras, start_api, tmp_path: Path, monkeypatch, record
) -> None:
    port = free_port()
    engine_url = f"http://127.0.0.1:{port}"
    cache = tmp_path / "models"
    engines: list[ServiceProcess] = []
    try:
        engines.append(start_engine(serve_model, cache, port, tmp_path / "engine-1.log"))
        wait_until(lambda: answers(engine_url, "/health") == 200, 300, "engine", engines[0])

        monkeypatch.setenv("TIQU_BASE_MODEL", str(serve_model))
        monkeypatch.setenv("TIQU_MODEL_CACHE", str(cache))
        get_settings.cache_clear()
        register_lora(Store.from_settings(), resolve_base_model(), "extractor", loras.nulls)
        gateway = start_api(
            "serve",
            TIQU_ENGINE_URL=engine_url,
            TIQU_BASE_MODEL=str(serve_model),
            TIQU_MODEL_CACHE=str(cache),
            TIQU_ADAPTER_DIR=str(tmp_path / "served-adapters"),
            TIQU_API_KEYS=API_KEY,
            TIQU_SERVE_MAX_NEW_TOKENS="64",
            TIQU_SERVE_TIMEOUT_S=str(TIMEOUT_S),
        )
        wait_until(lambda: answers(gateway.url, "/readyz") == 200, 120, "gateway", gateway)
        gateway_pid = gateway.process.pid

        calls: list[Call] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(headers=auth(), timeout=TIMEOUT_S * 3) as http:
                while not stop.is_set():
                    started = time.monotonic()
                    response = http.post(f"{gateway.url}/v1/extract", json={"text": TEXT})
                    ended = time.monotonic()
                    calls.append(
                        Call(
                            started,
                            ended,
                            response.status_code,
                            response.headers.get("retry-after"),
                            response.json(),
                        )
                    )
                    if response.status_code != 200:
                        time.sleep(0.1)  # a client honouring Retry-After would wait longer

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(calls) >= 12, 60, "traffic before the kill")
            before = [c.status for c in calls]
            log_at_kill = len(gateway.log())
            killed_at = time.monotonic()
            os.killpg(engines[0].process.pid, signal.SIGKILL)
            engines[0].process.wait(timeout=30)
            wait_until(lambda: answers(gateway.url, "/readyz") == 503, 10, "readyz false")
            not_ready_s = time.monotonic() - killed_at
            time.sleep(3.0)  # the load goes on against a dead engine
            during = [c for c in calls if c.started >= killed_at]

            restarted_at = time.monotonic()
            engines.append(start_engine(serve_model, cache, port, tmp_path / "engine-2.log"))
            wait_until(lambda: answers(engine_url, "/health") == 200, 300, "restart", engines[1])
            engine_back_s = time.monotonic() - restarted_at
            wait_until(lambda: answers(gateway.url, "/readyz") == 200, 60, "ready again")
            ready_s = time.monotonic() - restarted_at
            back_at = time.monotonic()

            def resumed() -> bool:
                recent = [c for c in calls if c.started >= back_at]
                return len(recent) >= 8 and all(c.status == 200 for c in recent[-8:])

            wait_until(resumed, 60, "traffic resumed")
            first_ok = min(c.ended for c in calls if c.started >= restarted_at and c.status == 200)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=TIMEOUT_S * 3)

        assert set(before) == {200}, before
        assert gateway.process.poll() is None and gateway.process.pid == gateway_pid
        outage = [c for c in calls if killed_at <= c.ended and c.started < restarted_at]
        failed = [c for c in outage if c.status != 200]
        assert len(failed) >= CLIENTS, len(failed)
        assert {c.status for c in failed} == {503}, {c.status for c in failed}
        for call in failed:
            assert int(call.retry_after or 0) >= 1
            assert set(call.body["error"]) == {"message", "type", "param", "code"}
            assert call.body["error"]["type"] == "unavailable"
        slowest = max(c.ended - c.started for c in failed)
        assert slowest < TIMEOUT_S + 1, slowest
        after = [c.status for c in calls if c.started >= back_at]
        assert set(after[-8:]) == {200}
        in_flight_at_kill = [c for c in calls if c.started < killed_at <= c.ended]
        assert during
        # The new engine process holds the adapter, and this gateway loaded it there after the
        # kill (the start-up "adapter loaded" line is before `log_at_kill`).
        served = httpx.get(f"{engine_url}/v1/models", timeout=10).json()["data"]
        assert [m["id"] for m in served if m.get("parent")], served
        assert "adapter loaded" in gateway.log()[log_at_kill:]
    finally:
        for engine in engines:
            engine.stop()
    record(
        5,
        f"{CLIENTS} clients in a loop on /v1/extract; the engine's process group SIGKILLed, "
        "left dead 3 s, then `tiqu serve engine` started again on the same port",
        f"{len(failed)} requests during the outage: all 503 with Retry-After and the envelope, "
        f"slowest failure {slowest * 1000:.0f} ms (timeout {TIMEOUT_S:.0f} s); /readyz 503 "
        f"{not_ready_s:.1f} s after the kill; engine back in {engine_back_s:.0f} s, gateway ready "
        f"{ready_s - engine_back_s:.1f} s later (adapter reloaded), first 200 "
        f"{max(0.0, first_ok - restarted_at - engine_back_s):.1f} s after the engine answered; "
        f"same gateway process throughout ({len(in_flight_at_kill)} requests were in flight "
        "at the kill)",
    )
