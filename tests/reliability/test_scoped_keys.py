"""Scoped keys (scenario 16): a key reaches only the routes of its scope, on every operation of
every API's own /openapi.json; a route that declares no scope is refused to every key; a batch
job reads only a file that a batch upload wrote, never a dataset, an adapter or a cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from shared.models import resolve_base_model
from shared.settings import get_settings
from shared.store import Layout, Store
from tests.engine_fixtures import API_KEY
from tests.reliability.reliability_support import HEALTH_PATHS, Operation, operations
from tests.serve.serve_support import build_lora, register_lora
from tests.support import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCOPED_KEYS = {
    "extract": "extract-key-3b9d",
    "batch": "batch-key-71c2",
    "admin": "admin-key-0e5a",
}
# One scope per key, and a plain key (every scope, as the tests' fixtures use).
KEYS_SETTING = ",".join(f"{scope}:{key}" for scope, key in SCOPED_KEYS.items()) + f",{API_KEY}"


def expected_scope(service: str, path: str) -> str:
    """The scope the README promises for a route: the gateway's batch jobs need `batch`, its
    extraction routes `extract`; everything on the ingest, distill and train APIs `admin`."""
    if service != "serve":
        return "admin"
    return "batch" if path.startswith("/v1/batches") else "extract"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def scoped_apis(
    start_api, serve_env_without_engine: dict[str, str]
) -> Iterator[dict[str, ServiceProcess]]:
    """The four APIs as real processes, each accepting the three scoped keys and the plain one."""
    started = {
        name: start_api(name, TIQU_API_KEYS=KEYS_SETTING) for name in ("ingest", "distill", "train")
    }
    started["serve"] = start_api(
        "serve", **{**serve_env_without_engine, "TIQU_API_KEYS": KEYS_SETTING}
    )
    yield started


def test_each_key_reaches_only_the_routes_of_its_scope(scoped_apis, record) -> None:
    refused = 0
    accepted = 0
    checked: list[Operation] = []
    for name, server in scoped_apis.items():
        assert server.url is not None
        for operation in operations(name, server.url):
            if operation.path in HEALTH_PATHS:
                continue
            checked.append(operation)
            url = f"{server.url}{operation.concrete_path()}"
            needed = expected_scope(name, operation.path)
            for scope, key in SCOPED_KEYS.items():
                response = httpx.request(operation.method, url, headers=bearer(key), timeout=30)
                what = (name, operation.method, operation.path, scope)
                if scope == needed:
                    assert response.status_code not in (401, 403), (what, response.text)
                    accepted += 1
                    continue
                assert response.status_code == 403, (what, response.status_code, response.text)
                error = response.json()["error"]
                assert error["type"] == "forbidden" and needed in error["message"], what
                refused += 1
            full = httpx.request(operation.method, url, headers=bearer(API_KEY), timeout=30)
            assert full.status_code not in (401, 403), (name, operation.path, full.text)
            assert operation.spec.get("x-tiqu-scope") == needed, (name, operation.path)
    services = {op.service for op in checked}
    assert services == {"ingest", "distill", "train", "serve"}
    assert len(checked) >= 11
    assert refused == 2 * len(checked) and accepted == len(checked)
    record(
        16,
        f"keys `extract:`, `batch:` and `admin:` (one scope each) and a plain key, on every "
        f"non-health operation of the 4 APIs' openapi.json ({len(checked)})",
        f"{refused}/{refused} calls with a key of another scope answered 403 `forbidden` naming "
        f"the scope needed; the right scope got through on {accepted}/{len(checked)} (no 401/403); "
        "each operation declares its scope (`x-tiqu-scope`); the plain key reached all",
    )


def test_a_route_that_declares_no_scope_is_refused_to_every_key(record) -> None:
    from shared.api import KeyScope, create_app, parse_api_keys, scoped_route

    app = create_app(
        service="scope-check",
        title="scope check",
        description="A route without a scope",
        api_keys=parse_api_keys(KEYS_SETTING),
    )
    declared = APIRouter(route_class=scoped_route(KeyScope.extract))
    forgotten = APIRouter()

    @declared.get("/v1/declared")
    def with_scope() -> dict[str, bool]:
        return {"ok": True}

    @forgotten.get("/v1/forgotten")
    def without_scope() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(declared)
    app.include_router(forgotten)
    statuses: dict[str, list[int]] = {"declared": [], "forgotten": []}
    with TestClient(app) as client:
        for key in [API_KEY, *SCOPED_KEYS.values()]:
            for route in statuses:
                statuses[route].append(client.get(f"/v1/{route}", headers=bearer(key)).status_code)
        refusal = client.get("/v1/forgotten", headers=bearer(API_KEY)).json()["error"]
    assert statuses["forgotten"] == [403] * 4
    assert statuses["declared"] == [200, 200, 403, 403]
    assert refusal["type"] == "forbidden"
    record(
        16,
        "a route added without a scope, beside a route with one, called with a plain key and with "
        "each scoped key",
        f"route without a scope: {statuses['forgotten']} (refused to every key, the plain one "
        f"included); route with the `extract` scope: {statuses['declared']}",
    )


@pytest.fixture
def promoted_adapter(serve_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A LoRA registered and promoted as `extractor` in the test's store, so that a batch job
    submitted to the gateway finds its adapter."""
    monkeypatch.setenv("TIQU_BASE_MODEL", str(serve_model))
    monkeypatch.setenv("TIQU_MODEL_CACHE", str(tmp_path / "models"))
    get_settings.cache_clear()
    folder = build_lora(serve_model, tmp_path / "lora", seed=5)
    register_lora(Store.from_settings(), resolve_base_model(), "extractor", folder)
    return "extractor"


def test_a_batch_store_key_names_only_a_batch_upload(
    start_api, serve_env_without_engine, dataset, promoted_adapter: str, tmp_path: Path, record
) -> None:
    gateway = start_api("serve", **{**serve_env_without_engine, "TIQU_API_KEYS": KEYS_SETTING})
    store = Store.from_settings()
    ingested = Layout.dataset_clean(dataset.dataset_id)
    assert store.exists(ingested)
    personal = pd.read_json(dataset.labels, lines=True)
    phones = [p for p in personal["phone"].dropna().astype(str) if p]
    names = [n for n in personal["name"].dropna().astype(str) if len(n) >= 2]
    assert phones and names
    other_objects = [
        ingested,
        Layout.dataset_manifest(dataset.dataset_id),
        *[key for key in store.list("raw") if not key.startswith("raw/batch/")],
        f"adapters/{promoted_adapter}/v1/adapter_config.json",
        f"raw/batch/../../{ingested}",
        f"raw/batch/x/../../../{ingested}",
        f"/{ingested}",
    ]
    assert len(other_objects) >= 7  # the ingest upload of the dataset is among them
    url = f"{gateway.url}/v1/batches"
    answers = []
    # The plain key has every scope, the batch key only `batch`: neither reads past batch uploads.
    for client_key in (API_KEY, SCOPED_KEYS["batch"]):
        for key in other_objects:
            response = httpx.post(
                url, data={"store_key": key}, headers=bearer(client_key), timeout=60
            )
            answers.append(response)
            assert 400 <= response.status_code < 500, (key, response.status_code, response.text)
            assert response.json()["error"]["param"] == "store_key", response.text
            leaked = [v for v in phones + names if v in response.text]
            assert not leaked, (key, response.text)
    assert store.children("batches") == [], "a job was created"

    export = tmp_path / "batch.csv"
    pd.DataFrame({"投诉内容": ["我叫王芳，电话13800138000，快递丢了", "发票一直没开"]}).to_csv(
        export, index=False
    )
    uploaded = httpx.post(
        url,
        files={"file": (export.name, export.read_bytes(), "text/csv")},
        headers=bearer(SCOPED_KEYS["batch"]),
        timeout=60,
    )
    assert uploaded.status_code == 202, uploaded.text
    source_key = uploaded.json()["request"]["source_key"]
    assert source_key.startswith("raw/batch/"), source_key
    again = httpx.post(
        url, data={"store_key": source_key}, headers=bearer(SCOPED_KEYS["batch"]), timeout=60
    )
    assert again.status_code in (200, 202), again.text
    assert again.json()["job_id"] == uploaded.json()["job_id"]
    statuses = sorted({r.status_code for r in answers})
    record(
        16,
        "`POST /v1/batches` with the batch key and a plain key, `store_key` naming "
        f"{len(other_objects)} objects no batch upload wrote: the real ingested dataset's "
        "clean.parquet and manifest, its raw ingest upload, an adapter's config, `..` and "
        "absolute paths",
        f"all {len(answers)} answered {statuses} on `store_key`; 0 jobs created; none of the "
        f"dataset's {len(phones)} phones or {len(names)} names in any answer; the key of a batch "
        "upload (`raw/batch/…`) submitted again found the same job",
    )
