"""Fixtures that start real parts: a moto S3 server, Celery workers and API servers on free ports.

Every test process gets its own Redis database number and store folder, so tests never see each
other's queues or datasets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support import TIQU, ServiceProcess, free_port, start_process, wait_until

# The vLLM engine on a tiny model and its gateways, for the serve and end-to-end tests.
# The reliability results table (docs/reliability.md), filled by scenario tests anywhere.
pytest_plugins = ["tests.engine_fixtures", "tests.reliability_report"]
REDIS_BASE_URL = os.environ.get("TIQU_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_REDIS_DB = 13


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every test at its own store folder and the test Redis database."""
    from shared.schema import _cached_schema
    from shared.settings import get_settings

    store = tmp_path / "store"
    monkeypatch.setenv("TIQU_STORE_URL", f"file://{store}")
    monkeypatch.setenv("TIQU_REDIS_URL", f"{REDIS_BASE_URL}/{TEST_REDIS_DB}")
    monkeypatch.setenv("TIQU_LOG_JSON", "true")
    get_settings.cache_clear()
    _cached_schema.cache_clear()
    yield store
    get_settings.cache_clear()
    _cached_schema.cache_clear()


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = f"{REDIS_BASE_URL}/{TEST_REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail(f"Redis does not answer at {url}: run `make redis` (make test does)")
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def s3_server() -> Iterator[str]:
    """A real S3 protocol server (moto) on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def service_env(isolated_settings: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIQU_")}
    env.update(
        TIQU_STORE_URL=f"file://{isolated_settings}",
        TIQU_REDIS_URL=redis_url,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def start_worker(tmp_path: Path, service_env: dict[str, str]) -> Iterator:
    """Start `tiqu worker SERVICE` processes; they are stopped after the test."""
    started: list[ServiceProcess] = []

    def start(service: str, **extra_env: str) -> ServiceProcess:
        env = {**service_env, **extra_env}
        log_path = tmp_path / f"worker-{service}-{len(started)}.log"
        worker = start_process([TIQU, "worker", service], log_path, env)
        started.append(worker)
        wait_until(lambda: "ready." in worker.log(), 60, f"{service} worker start", worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_api(tmp_path: Path, service_env: dict[str, str]) -> Iterator:
    """Start `tiqu api SERVICE` on a free port and wait for /healthz."""
    started: list[ServiceProcess] = []

    def start(service: str, **extra_env: str) -> ServiceProcess:
        port = free_port()
        env = {**service_env, **extra_env}
        log_path = tmp_path / f"api-{service}-{len(started)}.log"
        server = start_process(
            [TIQU, "api", service, "--port", str(port)],
            log_path,
            env,
        )
        server.url = f"http://127.0.0.1:{port}"
        started.append(server)

        def healthy() -> bool:
            try:
                return httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 60, f"{service} API start", server)
        return server

    yield start
    for server in started:
        server.stop()
