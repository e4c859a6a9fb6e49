"""The demo chain end to end on a tiny model, with the real processes: sample → ingest → distill
(teacher stand-in over HTTP) → train → promote → vLLM + gateway → extract; and a real Prometheus
server scraping the gateway and the engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from shared.schema import get_schema
from tests.engine_fixtures import API_KEY, auth
from tests.support import TIQU, free_port, start_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README_COMPLAINT = (
    "您好，我是李娜，上周在你们网店买的空气净化器一直没发货，客服电话打了三次都说在处理。"
    "我的手机是 139 1234 5678，邮箱 lina.w@example.com，收货地址是杭州市西湖区文三路 269 号 3 幢 "
    "502 室。请尽快发货或者退款！"
)


def tiqu(*args: str, env: dict[str, str], timeout: float = 600) -> str:
    finished = subprocess.run(
        [TIQU, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert finished.returncode == 0, f"tiqu {' '.join(args)}\n{finished.stderr[-3000:]}"
    return finished.stdout


def test_the_demo_chain_on_a_tiny_model(
    engine, service_env, gateway_env, start_gateway, tmp_path: Path
) -> None:
    env = {
        **service_env,
        "TIQU_BASE_MODEL": str(engine.base_model),
        "TIQU_MODEL_CACHE": str(engine.model_cache),
        "TIQU_TRAIN_WORK_DIR": str(tmp_path / "work"),
        "TIQU_TRAIN_EPOCHS": "1",
        "TIQU_TRAIN_BATCH_SIZE": "8",
        "TIQU_TRAIN_LEARNING_RATE": "0.02",
        "TIQU_TRAIN_MAX_LENGTH": "512",
        "TIQU_EVAL_MAX_NEW_TOKENS": "24",
        "TIQU_GATEWAY_API_KEY": API_KEY,
    }
    export = tmp_path / "complaints.csv"
    tiqu("sample", "--rows", "120", "--seed", "3", "--out", str(export), env=env)
    dataset_id = json.loads(tiqu("ingest", str(export), "--json", env=env))["dataset_id"]

    port = free_port()
    labels = export.with_name("complaints.labels.jsonl")
    stub = start_process(
        [TIQU, "teacher-stub", "--labels", str(labels), "--port", str(port)],
        tmp_path / "stub.log",
        env,
    )
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 60, "stub", stub)
        env["TIQU_TEACHER_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        distilled = json.loads(tiqu("distill", dataset_id, "--json", env=env))
    finally:
        stub.stop()
    assert distilled["counts"]["accepted"] > 50

    trained = json.loads(tiqu("train", distilled["run_id"], "--json", env=env))
    assert trained["adapter"] == {"name": "extractor", "version": "v1"}
    assert trained["promoted"] is True

    gateway = start_gateway()
    env["TIQU_GATEWAY_URL"] = gateway.url
    answer = json.loads(tiqu("extract", README_COMPLAINT, env=env))
    schema = get_schema()
    assert answer["adapter"] == "extractor@v1"
    assert list(answer["fields"]) == list(schema.field_names)
    assert schema.errors(answer["fields"]) == []
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'tiqu_extractions_total{adapter="extractor"} 1.0' in metrics
    assert (
        'tiqu_extract_requests_total{adapter="extractor",route="/v1/extract",status="200"} 1.0'
        in metrics
    )


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_the_gateway_and_the_engine(
    engine, register, loras, start_gateway, tmp_path: Path
) -> None:
    register("extractor", loras.nulls)
    gateway = start_gateway()
    for _ in range(3):
        response = httpx.post(
            f"{gateway.url}/v1/extract", json={"text": "快递丢了，电话13800138000"}, headers=auth()
        )
        assert response.status_code == 200
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['{_hostport(gateway.url)}']}}]\n"
        f"  - job_name: vllm\n    static_configs: [{{targets: ['{_hostport(engine.url)}']}}]\n",
        encoding="utf-8",
    )
    server = start_process(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path / "prometheus.log",
        {"PATH": "/usr/bin:/bin"},
    )
    api = f"http://127.0.0.1:{port}/api/v1/query"

    def series(query: str) -> list[dict]:
        try:
            body = httpx.get(api, params={"query": query}, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return []
        return body.get("data", {}).get("result", [])

    try:
        wait_until(lambda: series('tiqu_extractions_total{job="gateway"}'), 60, "tiqu", server)
        wait_until(lambda: series('vllm:num_requests_running{job="vllm"}'), 60, "vllm", server)
        found = series('tiqu_extractions_total{job="gateway",adapter="extractor"}')
        assert float(found[0]["value"][1]) == 3.0
        up = {s["metric"]["job"]: s["value"][1] for s in series("up")}
        assert up == {"gateway": "1", "vllm": "1"}
    finally:
        server.stop()
        time.sleep(0.1)


def _hostport(url: str) -> str:
    return url.removeprefix("http://")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
