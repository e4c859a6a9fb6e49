"""The ingest REST API with a real Celery worker on real Redis, over real HTTP."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from shared.queue import subscribe_events
from shared.samples import generate_complaints, write_export
from shared.store import Layout, Store
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def export_xlsx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "complaints.xlsx"
    write_export(generate_complaints(300, seed=11), "xlsx", out)
    return out


def files_in(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file()) if store.exists() else []


def wait_ready(url: str, dataset_id: str) -> dict:
    body: dict = {}

    def ready() -> bool:
        nonlocal body
        body = httpx.get(f"{url}/v1/datasets/{dataset_id}", timeout=5).json()
        return body["state"] in ("ready", "failed")

    wait_until(ready, 120, f"dataset {dataset_id}")
    return body


def upload(url: str, path: Path, **form: str) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(
            f"{url}/v1/datasets", files={"file": (path.name, handle)}, data=form, timeout=60
        )


def test_upload_is_ingested_by_the_worker(
    start_worker, start_api, export_xlsx: Path, isolated_settings: Path
) -> None:
    metrics_port = free_port()
    start_worker("ingest", TIQU_WORKER_METRICS_PORT=str(metrics_port))
    api = start_api("ingest")
    events: list[dict] = []
    listener = threading.Thread(
        target=lambda: events.extend(subscribe_events(timeout=60)), daemon=True
    )
    listener.start()
    time.sleep(0.5)

    response = upload(api.url, export_xlsx)
    assert response.status_code == 202, response.text
    dataset_id = response.json()["dataset_id"]
    body = wait_ready(api.url, dataset_id)
    assert body["state"] == "ready", body
    wait_until(lambda: any(e["type"] == "dataset.ready" for e in events), 30, "dataset.ready")
    ready = next(e for e in events if e["type"] == "dataset.ready")
    assert ready["data"]["dataset_id"] == dataset_id
    assert ready["data"]["counts"]["rows"] == 300
    assert body["counts"]["rows"] == 300
    assert body["counts"]["clean"] + body["counts"]["rejected"] == 300
    assert body["manifest"]["source"]["sheets"] == ["2026Q1", "2026Q2"]
    # What the console queues a failed ingest again from.
    recorded = Store.from_settings().read_json(Layout.dataset_request(dataset_id))
    assert recorded["filename"] == export_xlsx.name and recorded["raw_key"].startswith("raw/")

    listing = httpx.get(f"{api.url}/v1/datasets", timeout=5).json()
    assert [d["dataset_id"] for d in listing["datasets"]] == [dataset_id]

    worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'tiqu_ingest_rows_total{outcome="clean",reason=""}' in worker_metrics
    api_metrics = httpx.get(f"{api.url}/metrics", timeout=5).text
    assert 'tiqu_ingest_uploads_total{result="accepted"} 1.0' in api_metrics


def test_same_upload_twice_returns_the_same_dataset_without_work(
    start_worker, start_api, export_xlsx: Path, isolated_settings: Path
) -> None:
    start_worker("ingest")
    api = start_api("ingest")
    first = upload(api.url, export_xlsx).json()["dataset_id"]
    wait_ready(api.url, first)
    snapshot = {p: p.stat().st_mtime_ns for p in files_in(isolated_settings)}

    again = upload(api.url, export_xlsx)
    assert again.status_code == 200
    assert again.json()["dataset_id"] == first
    assert again.json()["state"] == "ready"
    time.sleep(1)
    assert {p: p.stat().st_mtime_ns for p in files_in(isolated_settings)} == snapshot


@pytest.mark.parametrize(
    ("filename", "content", "code"),
    [
        ("complaints.docx", b"not a table", "unsupported_format"),
        ("complaints.xlsx", b"PK\x03\x04 broken workbook", "corrupt_file"),
        ("complaints.csv", "编号,日期\n1,2026-01-01\n".encode(), "no_text_column"),
        ("complaints.csv", b"text\n\x80\x80 abc\n", "undecodable"),
        ("complaints.csv", b"", "empty_file"),
    ],
)
def test_bad_upload_is_refused_and_stores_nothing(
    start_api, isolated_settings: Path, tmp_path: Path, filename: str, content: bytes, code: str
) -> None:
    api = start_api("ingest")
    path = tmp_path / filename
    path.write_bytes(content)
    response = upload(api.url, path)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_input"
    assert files_in(isolated_settings) == []


def test_upload_above_the_size_limit_is_refused(
    start_api, isolated_settings: Path, tmp_path: Path
) -> None:
    api = start_api("ingest", TIQU_MAX_UPLOAD_MB="1")
    path = tmp_path / "big.csv"
    path.write_bytes(("text\n" + "投诉内容很长" * 200_000).encode())
    response = upload(api.url, path)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"
    assert files_in(isolated_settings) == []


def test_unknown_dataset_is_404(start_api) -> None:
    api = start_api("ingest")
    for dataset_id in ("ds-0123456789abcdef", "../../etc"):
        response = httpx.get(f"{api.url}/v1/datasets/{dataset_id}", timeout=5)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"


def test_readiness_reports_dependencies(start_api) -> None:
    api = start_api("ingest")
    body = httpx.get(f"{api.url}/readyz", timeout=5).json()
    assert body == {"status": "ready", "checks": {"redis": "ok", "store": "ok"}}
    broken = start_api("ingest", TIQU_REDIS_URL="redis://127.0.0.1:1/0")
    response = httpx.get(f"{broken.url}/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("failed")
