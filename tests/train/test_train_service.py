"""The train service as deployed: REST API → Celery `train.run` in a real worker → registry.

One tiny-model training goes the whole way: queued over HTTP, trained by the worker (loss going
down), linted, evaluated, registered as v1, promoted with an `adapter.promoted` event, and
reported on `/metrics`; bad requests fail with clear 4xx answers and register nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import adapters
from shared.store import Layout, Store
from tests.support import free_port, wait_until
from tests.train.conftest import DATASET_ID
from tests.train.train_support import listen_for_events, write_distill_run

pytestmark = pytest.mark.integration

EVAL_FILES = ("eval.json", "report.md", "loss.png", "fields.png")


def wait_finished(url: str, train_run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal body
        body = httpx.get(f"{url}/v1/train-runs/{train_run_id}", timeout=5).json()
        return body["state"] in ("ready", "failed")

    wait_until(finished, 300, f"train run {train_run_id}")
    return body


def test_a_training_runs_through_the_worker_and_is_registered_and_promoted(
    start_worker, start_api, train_env: dict[str, str], distill_run: str, redis_url: str, record
) -> None:
    metrics_port = free_port()
    env = {**train_env, "TIQU_TRAIN_THREADS": "1"}
    start_worker("train", TIQU_WORKER_METRICS_PORT=str(metrics_port), **env)
    api = start_api("train", **env)
    events: list[dict[str, Any]] = []
    listener = listen_for_events("adapter.promoted", 1, events)

    response = httpx.post(
        f"{api.url}/v1/train-runs", json={"run_id": distill_run, "seed": 1}, timeout=30
    )
    assert response.status_code == 202, response.text
    train_run_id = response.json()["train_run_id"]
    body = wait_finished(api.url, train_run_id)
    assert body["state"] == "ready", body
    result = body["result"]
    assert result["adapter"] == {"name": "extractor", "version": "v1"}
    assert result["promoted"] and result["promotion"] == "first version of extractor"
    assert body["progress"]["step"] == body["progress"]["total_steps"] == 16

    listener.join(30)
    assert [e["data"]["version"] for e in events] == ["v1"]

    store = Store.from_settings()
    manifest = adapters.resolve(store, "extractor")
    training = manifest["training"]
    losses = [loss for _, loss in training["losses"]]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert manifest["lint"] == "passed" and manifest["hyperparameters"]["seed"] == 1
    assert manifest["run_id"] == distill_run and manifest["dataset_id"] == DATASET_ID
    assert manifest["base_model"]["model_id"] == train_env["TIQU_BASE_MODEL"]
    assert len(manifest["base_model"]["weights_sha256"]) == 64
    for filename in EVAL_FILES:
        assert store.exists(Layout.adapter("extractor", "v1", filename)), filename
    evaluation = json.loads(store.read_bytes(Layout.adapter("extractor", "v1", "eval.json")))
    test = evaluation["sets"]["test"]
    for variant in ("adapter", "base"):
        scores = test[variant]
        assert {"json_valid", "schema_valid", "all_fields_correct"} <= set(scores)
        for field in ("name", "phone", "email", "address", "question"):
            assert {
                "exact_match",
                "precision",
                "recall",
                "f1",
                "hallucinations",
                "omissions",
                "similarity",
            } <= set(scores["fields"][field])
    report = store.read_bytes(Layout.adapter("extractor", "v1", "report.md")).decode()
    assert "valid JSON" in report and "hallucinations" in report and "loss.png" in report

    worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'tiqu_train_runs_total{outcome="promoted"} 1.0' in worker_metrics
    assert "tiqu_train_step" in worker_metrics and "tiqu_train_tokens_per_second" in worker_metrics

    again = httpx.post(
        f"{api.url}/v1/train-runs", json={"run_id": distill_run, "seed": 1}, timeout=30
    )
    assert again.status_code == 200
    assert again.json()["train_run_id"] == train_run_id
    assert adapters.versions(store, "extractor") == ["v1"]
    record(
        14,
        "train: the same training request (distill run, parameters) sent again after it finished",
        "the same train run id, 200 with the result; one registered version (v1), no training",
    )


def test_bad_requests_fail_clearly_and_register_nothing(
    start_api, train_env: dict[str, str], distill_run: str, isolated_settings: Path
) -> None:
    write_distill_run(Store.from_settings(), DATASET_ID, "dr-empty", {"train": [], "test": []})
    api = start_api("train", **train_env)
    cases = [
        ({"run_id": "dr-does-not-exist"}, 404, "distill run dr-does-not-exist not found"),
        ({"run_id": "dr-empty"}, 422, "empty train split"),
        ({"run_id": distill_run, "rank": 32}, 422, "above the serving limit of 16"),
        ({"run_id": distill_run, "name": "Bad Name"}, 422, "adapter name"),
        ({"run_id": distill_run, "epochs": 0}, 422, "epochs"),
    ]
    for body, status, message in cases:
        response = httpx.post(f"{api.url}/v1/train-runs", json=body, timeout=30)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
    assert httpx.get(f"{api.url}/v1/train-runs/tr-0000000000000000", timeout=5).status_code == 404
    assert not (isolated_settings / "adapters").exists()
    assert not (isolated_settings / "train-runs").exists()
