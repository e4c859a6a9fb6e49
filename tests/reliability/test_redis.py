"""Redis killed with `kill -9` while jobs are queued (scenario 3), on a redis-server of the test's
own with AOF (`appendfsync everysec`), as deployed: after a restart on the same files no
acknowledged job is lost, every API is ready again within seconds, and APIs and workers
reconnect by themselves, without being restarted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from shared.samples import generate_complaints, write_export
from shared.settings import get_settings
from shared.store import Layout, Store
from tests.reliability.job_support import upload
from tests.support import ServiceProcess, free_port, start_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

APIS = ("ingest", "distill", "train")
READY_WITHIN_S = 30


class RedisServer:
    """`redis-server` with AOF on a free port; `kill()` is `kill -9`, `start()` reuses its files."""

    def __init__(self, folder: Path, password: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: ServiceProcess | None = None
        self.starts = 0

    def start(self) -> RedisServer:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            *(["--requirepass", self.password] if self.password else []),
        ]
        self.starts += 1
        self.process = start_process(argv, self.folder / f"redis-{self.starts}.log", {})
        client = redis.Redis.from_url(self.url, password=self.password or None, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, 30, "redis-server start", self.process)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.stop(signal.SIGKILL)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, password=self.password or None, socket_timeout=5)


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder).start()
    monkeypatch.setenv("TIQU_REDIS_URL", server.url)
    get_settings.cache_clear()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.stop(signal.SIGKILL)


def readyz(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code
    except httpx.HTTPError:
        return 0


def finished(url: str) -> bool:
    return httpx.get(url, timeout=10).json()["state"] in ("ready", "failed")


def test_redis_killed_with_queued_jobs_loses_none_and_everything_reconnects(
    own_redis: RedisServer,
    make_dataset,
    start_stub,
    use_teacher,
    start_api,
    start_worker,
    tmp_path: Path,
    record,
) -> None:
    dataset = make_dataset(60, 71)
    stub = start_stub(dataset.labels)
    env = {"TIQU_REDIS_URL": own_redis.url, **use_teacher(stub.base_url)}
    apis = {name: start_api(name, **env) for name in APIS}
    pids = {name: api.process.pid for name, api in apis.items()}
    assert all(readyz(api.url) == 200 for api in apis.values())

    # Jobs acknowledged (202) with no worker running: three uploads, two distill runs.
    exports = []
    for seed in (81, 82, 83):
        path = tmp_path / f"upload-{seed}.csv"
        write_export(generate_complaints(200, seed=seed), "csv", path)
        exports.append(path)
    accepted_uploads = [upload(apis["ingest"].url, path) for path in exports]
    assert [r.status_code for r in accepted_uploads] == [202] * 3
    dataset_ids = [r.json()["dataset_id"] for r in accepted_uploads]
    # Two runs of the dataset (options differ, so do their ids).
    limits = (20, 30)
    accepted_runs = [
        httpx.post(
            f"{apis['distill'].url}/v1/distill-runs",
            json={"dataset_id": dataset.dataset_id, "limit": limit},
            timeout=10,
        )
        for limit in limits
    ]
    run_ids = [r.json()["run_id"] for r in accepted_runs]
    client = own_redis.client()
    assert (client.llen("ingest"), client.llen("distill")) == (3, 2)

    time.sleep(1.5)  # appendfsync everysec: what was acknowledged a second ago is on disk
    own_redis.kill()
    assert all(readyz(api.url) == 503 for api in apis.values())
    body = httpx.get(f"{apis['ingest'].url}/readyz", timeout=5).json()
    assert body["checks"]["redis"].startswith("failed")
    # While Redis is away a new job is refused with 503, not acknowledged and lost.
    extra = tmp_path / "while-down.csv"
    write_export(generate_complaints(50, seed=84), "csv", extra)
    refused = upload(apis["ingest"].url, extra)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["type"] == "unavailable"

    restarted = time.monotonic()
    own_redis.start()
    ready_after: dict[str, float] = {}
    deadline = restarted + READY_WITHIN_S
    while len(ready_after) < len(apis) and time.monotonic() < deadline:
        for name, api in apis.items():
            if name not in ready_after and readyz(api.url) == 200:
                ready_after[name] = time.monotonic() - restarted
        time.sleep(0.1)
    assert set(ready_after) == set(apis), f"not ready within {READY_WITHIN_S} s: {ready_after}"
    assert {name: api.process.pid for name, api in apis.items()} == pids
    assert all(api.process.poll() is None for api in apis.values())
    client = own_redis.client()
    assert (client.llen("ingest"), client.llen("distill")) == (3, 2), "queued jobs lost"

    workers = {
        "ingest": start_worker("ingest", **env),
        "distill": start_worker("distill", **env),
    }
    for dataset_id in dataset_ids:
        wait_until(
            lambda d=dataset_id: finished(f"{apis['ingest'].url}/v1/datasets/{d}"),
            120,
            f"dataset {dataset_id}",
        )
    for run_id in run_ids:
        wait_until(
            lambda r=run_id: finished(f"{apis['distill'].url}/v1/distill-runs/{r}"),
            120,
            f"distill run {run_id}",
        )
    store = Store.from_settings()
    for dataset_id in dataset_ids:
        manifest = store.read_json(Layout.dataset_manifest(dataset_id))
        assert manifest["counts"]["rows"] == 200
    for limit, run_id in zip(limits, run_ids, strict=True):
        manifest = store.read_json(Layout.distill_run(dataset.dataset_id, run_id, "manifest.json"))
        assert manifest["counts"]["rows"] == limit

    # Running workers survive a second kill -9 of Redis and take new work after it.
    own_redis.kill()
    time.sleep(2)
    second = time.monotonic()
    own_redis.start()
    wait_until(lambda: readyz(apis["ingest"].url) == 200, READY_WITHIN_S, "ingest ready again")
    late = upload(apis["ingest"].url, extra)
    assert late.status_code == 202, late.text
    wait_until(
        lambda: finished(f"{apis['ingest'].url}/v1/datasets/{late.json()['dataset_id']}"),
        90,
        "upload after the second restart",
    )
    worker_back_s = time.monotonic() - second
    assert all(w.process.poll() is None for w in workers.values())
    assert (own_redis.client().llen("ingest"), own_redis.client().hlen("unacked")) == (0, 0)

    slowest = max(ready_after.values())
    record(
        3,
        "redis-server with AOF (appendfsync everysec) killed -9 with 3 uploads and 2 distill "
        "runs acknowledged and queued (no worker), restarted on the same files; workers then "
        "started; Redis killed and restarted again under the running workers",
        f"5/5 queued jobs kept and finished (3 datasets of 200 rows, distill runs of "
        f"{limits[0]} and {limits[1]} rows, all rows counted); /readyz 503 while down, 200 again "
        f"{ready_after['ingest']:.1f} / {ready_after['distill']:.1f} / "
        f"{ready_after['train']:.1f} s after the restart (ingest / distill / train, "
        f"slowest {slowest:.1f} s) with the same API processes; an upload while down got "
        f"503; the same workers finished a new upload {worker_back_s:.0f} s after the second "
        "restart",
    )
