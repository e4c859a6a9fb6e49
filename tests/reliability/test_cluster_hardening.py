"""Scenario 21, inside the cluster: vLLM answers its /v1 routes (completions, adapter loading)
only to the engine key the gateway holds, and Redis only to the password the services hold."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from shared.samples import generate_complaints, write_export
from tests.engine_fixtures import API_KEY, ENGINE_KEY, Engine, Loras, auth
from tests.reliability.test_redis import RedisServer
from tests.support import TIQU, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_PASSWORD = "redis-pass-3b7f"


def status(method: str, url: str, **kwargs) -> int:
    return httpx.request(method, url, timeout=30, **kwargs).status_code


def test_the_engine_answers_only_the_gateway_key(
    engine: Engine, loras: Loras, register, start_api, gateway_env, start_gateway, record
) -> None:
    register("extractor", loras.nulls)
    admin_calls = [
        ("GET", "/v1/models", None),
        ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(loras.nulls)}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "extractor"}),
        ("POST", "/v1/completions", {"model": "tiqu-base", "prompt": "hi", "max_tokens": 1}),
    ]
    refused = []
    for method, path, body in admin_calls:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": ENGINE_KEY}):
            refused.append(status(method, f"{engine.url}{path}", json=body, headers=headers))
    assert set(refused) == {401}, refused
    assert status("GET", f"{engine.url}/v1/models", headers=engine.headers) == 200

    keyless = start_api("serve", **{**gateway_env, "TIQU_ENGINE_API_KEY": ""})
    with_key = start_gateway()  # waits until ready: the keyless one had as long to get there
    answer = httpx.post(
        f"{with_key.url}/v1/extract", json={"text": "快递三天没到，电话13800138000"}, headers=auth()
    )
    assert answer.status_code == 200, answer.text
    keyless_ready = status("GET", f"{keyless.url}/readyz")
    keyless_answer = httpx.post(
        f"{keyless.url}/v1/extract", json={"text": "快递三天没到"}, headers=auth(), timeout=30
    )
    assert keyless_ready == 503 and keyless_answer.status_code == 503, keyless_answer.text
    assert ENGINE_KEY not in keyless.log() + with_key.log()

    def engine_dry_run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TIQU, "serve", "engine", "--dry-run"],
            env={
                "TIQU_ENGINE_HOST": "0.0.0.0",
                "TIQU_BASE_MODEL": str(engine.base_model),
                "TIQU_MODEL_CACHE": str(engine.model_cache),
                "PATH": "/usr/bin:/bin",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )

    open_engine = engine_dry_run()
    assert open_engine.returncode == 2 and "Traceback" not in open_engine.stderr
    assert "without TIQU_ENGINE_API_KEY" in open_engine.stderr
    dry_run = engine_dry_run(TIQU_ENGINE_API_KEY=ENGINE_KEY)
    assert dry_run.returncode == 0, dry_run.stderr
    assert 'VLLM_API_KEY="$TIQU_ENGINE_API_KEY"' in dry_run.stdout
    assert ENGINE_KEY not in dry_run.stdout + dry_run.stderr
    record(
        21,
        f"vLLM started by `tiqu serve engine` with TIQU_ENGINE_API_KEY; {len(admin_calls)} of "
        "its /v1 routes (models, load/unload adapter, completions) called with no key, a wrong "
        "key and the key without Bearer; gateways with and without the key; the engine "
        "started on 0.0.0.0 without a key",
        f"{len(refused)}/{len(refused)} calls answered {sorted(set(refused))}; the key accepted; "
        f"gateway with the key ready and extracting (200), without it /readyz {keyless_ready} "
        f"and /v1/extract {keyless_answer.status_code}; the key in no log and not in "
        "`--dry-run`'s printed command; `tiqu serve engine` on 0.0.0.0 without a key exits "
        f"{open_engine.returncode} with one line",
    )


def test_redis_answers_only_the_services_password(
    tmp_path: Path, start_api, start_worker, record
) -> None:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder, password=REDIS_PASSWORD).start()
    try:
        no_password = {"TIQU_REDIS_URL": server.url, "TIQU_API_KEYS": API_KEY}
        env = {**no_password, "TIQU_REDIS_PASSWORD": REDIS_PASSWORD}
        locked_out = start_api("ingest", **no_password)
        ingest = start_api("ingest", **env)
        worker = start_worker("ingest", **env)
        locked_out_ready = status("GET", f"{locked_out.url}/readyz")
        assert locked_out_ready == 503
        wait_until(lambda: status("GET", f"{ingest.url}/readyz") == 200, 30, "ingest ready")

        export = tmp_path / "complaints.csv"
        write_export(generate_complaints(40, seed=21), "csv", export)
        with export.open("rb") as handle:
            accepted = httpx.post(
                f"{ingest.url}/v1/datasets",
                files={"file": (export.name, handle)},
                headers=auth(),
                timeout=60,
            )
        assert accepted.status_code == 202, accepted.text
        dataset_url = f"{ingest.url}/v1/datasets/{accepted.json()['dataset_id']}"

        def state() -> str:
            return httpx.get(dataset_url, headers=auth(), timeout=10).json()["state"]

        wait_until(lambda: state() in ("ready", "failed"), 120, "dataset")
        assert state() == "ready"
        logs = locked_out.log() + ingest.log() + worker.log()
        assert REDIS_PASSWORD not in logs
        assert server.client().dbsize() > 0  # the queue and results went through this server
    finally:
        server.kill()
    record(
        21,
        "redis-server with requirepass; one ingest API without TIQU_REDIS_PASSWORD, one API "
        "and a worker with it; a 40-row CSV uploaded",
        f"without the password /readyz {locked_out_ready}; with it ready and the dataset "
        "ready through the password-protected Redis; the password in no process log",
    )
