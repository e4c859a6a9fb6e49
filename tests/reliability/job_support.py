"""Helpers of the job-state scenarios (18): the Celery queues as Redis holds them, jobs followed
over HTTP until they settle, and batch jobs against a real gateway and vLLM engine."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from shared.queue import redis_client
from tests.engine_fixtures import API_KEY, auth
from tests.support import ServiceProcess, wait_until

SETTLED = ("ready", "failed")


def queued(queue: str) -> int:
    """Messages waiting in a Celery queue (a Redis list named after it)."""
    return int(redis_client().llen(queue))


def unacked() -> int:
    """Messages delivered to a worker and not acknowledged yet (kombu's Redis ack emulation)."""
    return int(redis_client().hlen("unacked"))


def lose_messages(*queues: str) -> int:
    """Delete the queues' lists, as a flushed or purged Redis does; returns the messages lost."""
    lost = sum(queued(queue) for queue in queues)
    redis_client().delete(*queues)
    return lost


def wait_settled(read: Callable[[], dict[str, Any]], timeout: float, what: str) -> dict[str, Any]:
    """Poll `read` until the job it returns is ready or failed; returns that last answer."""
    body: dict[str, Any] = {}

    def settled() -> bool:
        nonlocal body
        body = read()
        return body["state"] in SETTLED

    try:
        wait_until(settled, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{what} still {body.get('state')!r} after {timeout} s") from exc
    return body


def stays(read: Callable[[], dict[str, Any]], state: str, seconds: float) -> bool:
    """Whether the job `read` returns is still in `state` after `seconds` (or leaves it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if read()["state"] != state:
            return False
        time.sleep(0.5)
    return True


def upload(url: str, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(f"{url}/v1/datasets", files={"file": (path.name, handle)}, timeout=120)


def dataset_state(url: str, dataset_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/datasets/{dataset_id}", timeout=10).json()


def submit_run(url: str, dataset_id: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/distill-runs", json={"dataset_id": dataset_id}, timeout=30)


def run_state(url: str, run_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/distill-runs/{run_id}", timeout=10).json()


def submit_training(url: str, run_id: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/train-runs", json={"run_id": run_id, "seed": 1}, timeout=30)


def training_state(url: str, train_run_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/train-runs/{train_run_id}", timeout=10).json()


def write_batch_export(path: Path, rows: int) -> pd.DataFrame:
    """A CSV of `rows` short complaints, every seventh one empty (an error of the row's own)."""
    frame = pd.DataFrame(
        {
            "工单编号": [f"00{i:04d}" for i in range(rows)],
            "投诉内容": [
                f"我叫用户{i}，电话 1380013{i:04d}，第 {i} 次投诉快递延误。" if i % 7 else ""
                for i in range(rows)
            ],
        }
    )
    frame.to_csv(path, index=False)
    return frame


@dataclass(frozen=True)
class BatchJobs:
    """A gateway on the session's engine with adapter `extractor` promoted, and the settings of
    batch workers that call it (chunks of 4 rows)."""

    gateway: ServiceProcess

    @property
    def url(self) -> str:
        assert self.gateway.url is not None
        return self.gateway.url

    def worker_env(self, **overrides: str) -> dict[str, str]:
        env = {
            "TIQU_GATEWAY_URL": self.url,
            "TIQU_GATEWAY_API_KEY": API_KEY,
            "TIQU_BATCH_CHUNK_ROWS": "4",
            "TIQU_BATCH_CONCURRENCY": "2",
            "TIQU_WORKER_METRICS_PORT": "0",
        }
        return env | overrides

    def submit(self, path: Path) -> httpx.Response:
        with path.open("rb") as handle:
            return httpx.post(
                f"{self.url}/v1/batches",
                files={"file": (path.name, handle, "text/csv")},
                headers=auth(),
                timeout=30,
            )

    def state(self, job_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/batches/{job_id}", headers=auth(), timeout=10).json()

    def output(self, job_id: str) -> httpx.Response:
        return httpx.get(f"{self.url}/v1/batches/{job_id}/output", headers=auth(), timeout=30)

    def output_lines(self, job_id: str) -> list[dict[str, Any]]:
        response = self.output(job_id)
        assert response.status_code == 200, response.text
        return [json.loads(line) for line in response.text.splitlines()]


@pytest.fixture
def batch_jobs(register, loras, start_gateway) -> BatchJobs:
    register("extractor", loras.nulls)
    return BatchJobs(start_gateway())
