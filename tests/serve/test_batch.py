"""Batch jobs: a real Celery worker on queue `batch` calling a real gateway and vLLM engine."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from services.serve.batch import chunk_key
from shared.cleaning import clean_text
from shared.jobs import job_lease_held
from shared.store import Store
from tests.engine_fixtures import API_KEY, auth
from tests.reliability.job_support import write_batch_export
from tests.support import TIQU, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def submit(url: str, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(
            f"{url}/v1/batches",
            files={"file": (path.name, handle, "text/csv")},
            headers=auth(),
            timeout=30,
        )


def output_lines(url: str, job_id: str) -> list[dict]:
    response = httpx.get(f"{url}/v1/batches/{job_id}/output", headers=auth(), timeout=30)
    assert response.status_code == 200
    return [json.loads(line) for line in response.text.splitlines()]


def test_a_killed_batch_worker_resumes_to_a_complete_ordered_output(
    register, loras, start_gateway, start_worker, tmp_path: Path, record
) -> None:
    register("extractor", loras.nulls)
    gateway = start_gateway()
    worker_env = {
        "TIQU_GATEWAY_URL": gateway.url,
        "TIQU_GATEWAY_API_KEY": API_KEY,
        "TIQU_BATCH_CHUNK_ROWS": "4",
        "TIQU_BATCH_CONCURRENCY": "2",
        "TIQU_WORKER_METRICS_PORT": "0",
    }
    worker = start_worker("batch", **worker_env)
    export = tmp_path / "complaints.csv"
    frame = write_batch_export(export, 60)
    accepted = submit(gateway.url, export)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert accepted.json()["request"]["adapter"] == "extractor@v1"
    store = Store.from_settings()
    wait_until(lambda: store.exists(chunk_key(job_id, 2)), 120, "three chunks done")
    worker.stop(signal.SIGKILL)
    progress = httpx.get(f"{gateway.url}/v1/batches/{job_id}", headers=auth(), timeout=10).json()
    assert progress["state"] == "running"
    assert 0 < progress["progress"]["rows_done"] < 60
    assert progress["progress"]["rows_per_s"] > 0
    wait_until(lambda: not job_lease_held("batch", job_id), 30, "the dead worker's lease to lapse")
    chunks_before = {k for k in store.list(f"batches/{job_id}/chunks")}
    # Mark the finished chunks' answers: a worker that recomputed them would lose the mark.
    kept_rows = set()
    for key in chunks_before:
        marked = [{**json.loads(line), "kept": True} for line in store.read_bytes(key).splitlines()]
        kept_rows |= {line["row"] for line in marked}
        store.write_bytes(key, b"".join(json.dumps(line).encode() + b"\n" for line in marked))

    start_worker("batch", **worker_env)
    again = submit(gateway.url, export)
    assert (again.status_code, again.json()["job_id"]) == (202, job_id)

    def ready() -> bool:
        state = httpx.get(f"{gateway.url}/v1/batches/{job_id}", headers=auth(), timeout=10)
        return state.json()["state"] == "ready"

    wait_until(ready, 180, "batch job ready")
    lines = output_lines(gateway.url, job_id)
    assert [line["row"] for line in lines] == list(range(60))
    assert [line["id"] for line in lines] == frame["工单编号"].tolist()
    for line, text in zip(lines, frame["投诉内容"], strict=True):
        if text and clean_text(text):
            assert line["error"] is None and line["adapter"] == "extractor@v1"
            assert set(line["fields"]) == {"name", "phone", "email", "address", "question"}
            for name, value in line["fields"].items():
                span = line["spans"][name]
                if value is not None and span["status"] == "exact":
                    # Offsets index the row's text as it was in the uploaded file.
                    assert text[span["start"] : span["end"]] == value
                elif value is not None:
                    assert span["status"] in ("normalized", "fuzzy")
        else:
            assert line["error"]["type"] == "invalid_input"
    # Chunks finished before the kill were not recomputed; the others were.
    assert kept_rows and {line["row"] for line in lines if line.get("kept")} == kept_rows
    done = httpx.get(f"{gateway.url}/v1/batches/{job_id}", headers=auth(), timeout=10).json()
    assert done["manifest"]["rows"] == 60 and done["output"].endswith("output.jsonl")
    resubmitted = submit(gateway.url, export)
    assert (resubmitted.status_code, resubmitted.json()["job_id"]) == (200, job_id)
    record(
        1,
        "batch: 60-row job in chunks of 4; worker SIGKILLed after 3 chunks, restarted, "
        "job resubmitted",
        f"{len(lines)} output lines for 60 rows, rows 0-59 in order, ids kept, "
        f"{len(chunks_before)} finished chunks ({len(kept_rows)} rows) not recomputed: their "
        "lines, marked in the store before the restart, reach the output with the mark",
    )
    record(
        14,
        "batch: the same file and adapter submitted 3 times",
        f"one job id ({job_id}); 202 while orphaned, 200 once ready, no second output",
    )


def test_batch_cli_and_bad_uploads(register, loras, start_gateway, tmp_path: Path, service_env):
    register("extractor", loras.nulls)
    gateway = start_gateway()
    export = tmp_path / "few.csv"
    frame = write_batch_export(export, 9)
    out = tmp_path / "out.jsonl"
    env = {
        **service_env,
        "TIQU_GATEWAY_URL": gateway.url,
        "TIQU_GATEWAY_API_KEY": API_KEY,
        "TIQU_BATCH_CHUNK_ROWS": "4",
    }
    finished = subprocess.run(
        [TIQU, "batch", str(export), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    assert "9 rows" in finished.stdout
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == frame["工单编号"].tolist()

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    refused = submit(gateway.url, bad)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "no_text_column"
    missing = subprocess.run(
        [TIQU, "batch", str(tmp_path / "nope.csv")], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
