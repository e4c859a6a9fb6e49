"""The console's jobs pages: jobs read from a real store, scopes, 404 pages, the batch output
download, and failed jobs queued again on a real Redis."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.distill import tasks as distill_tasks
from services.distill.run import DistillOptions, RunProgress
from services.ingest.pipeline import IngestOptions, ingest_bytes
from services.serve import batch
from services.serve.console import jobs
from services.serve.console.jobs import JobKind, duration_text, list_jobs, read_job
from services.serve.console.web import KEY_COOKIE
from services.train import tasks as train_tasks
from services.train.request import TrainParams, TrainRequest
from shared.jobs import JobState, JobStatus, load_status, save_status
from shared.queue import app as celery_app
from shared.settings import get_settings
from shared.store import Layout, Store
from tests.console.conftest import console_app

ADMIN_KEY = "admin-key-for-console-tests"
BATCH_KEY = "batch-key-for-console-tests"
EXTRACT_KEY = "extract-key-for-console-tests"
EXPORT_CSV = (
    "id,text\n"
    "1,我叫王芳，电话13800138000，快递丢了三天了\n"
    "2,我叫王芳，电话13800138000，快递丢了三天了\n"
    "3,短\n"
    "4,李雷投诉：订单号12345一直没有发货\n"
)
DISTILL_RUN_ID = "dr-00000000000000aa-0123456789ab"
TRAIN_RUN_ID = "tr-00000000000000bb"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def store() -> Store:
    return Store.from_settings()


@pytest.fixture
def console() -> FastAPI:
    return console_app([jobs.router], f"admin:{ADMIN_KEY},batch:{BATCH_KEY},extract:{EXTRACT_KEY}")


def client(app: FastAPI, key: str | None) -> TestClient:
    return TestClient(app, cookies={KEY_COOKIE: key} if key else None, follow_redirects=False)


def ready_dataset(store: Store) -> str:
    """A dataset built by the real ingest pipeline: 2 clean rows, 1 too short, 1 duplicate."""
    result = ingest_bytes(EXPORT_CSV.encode("utf-8"), "export.csv", IngestOptions(), store)
    save_status(store, Layout.dataset_status(result.dataset_id), JobStatus(state=JobState.READY))
    return result.dataset_id


def failed_dataset(store: Store) -> str:
    """A dataset failed before tiqu recorded ingest requests: nothing to queue again from."""
    dataset_id = "ds-00000000000000ff"
    failed = JobStatus(
        state=JobState.FAILED, error="the export has no text column", error_code="no_text_column"
    )
    save_status(store, Layout.dataset_status(dataset_id), failed)
    return dataset_id


def failed_ingest(store: Store) -> str:
    dataset_id = "ds-00000000000000fe"
    request = {
        "raw_key": f"raw/{'1' * 64}/export.csv",
        "filename": "export.csv",
        "options": IngestOptions().to_dict(),
    }
    store.write_json(Layout.dataset_request(dataset_id), request)
    failed = JobStatus(state=JobState.FAILED, error="internal error", error_code="internal")
    save_status(store, Layout.dataset_status(dataset_id), failed)
    return dataset_id


def failed_distill(store: Store) -> str:
    dataset_id = "ds-00000000000000aa"  # the dataset DISTILL_RUN_ID names
    request = {
        "dataset_id": dataset_id,
        "run_id": DISTILL_RUN_ID,
        "options": DistillOptions.from_settings().to_dict(),
    }
    store.write_json(distill_tasks.request_key(dataset_id, DISTILL_RUN_ID), request)
    failed = JobStatus(state=JobState.FAILED, error="teacher errors", error_code="teacher_errors")
    save_status(store, distill_tasks.status_key(dataset_id, DISTILL_RUN_ID), failed)
    return DISTILL_RUN_ID


def running_distill(store: Store, updated_at: datetime = T0) -> str:
    progress = RunProgress(stage="label", total=10, done=4, accepted=3, rejected=1)
    status = JobStatus(state=JobState.RUNNING, updated_at=updated_at, progress=progress.as_dict())
    save_status(store, jobs.status_key(JobKind.DISTILL, DISTILL_RUN_ID) or "", status)
    return DISTILL_RUN_ID


def batch_request() -> batch.BatchRequest:
    return batch.BatchRequest(
        source_key=f"raw/batch/{'0' * 64}/export.csv",
        filename="export.csv",
        source_sha256="0" * 64,
        adapter="demo@v1",
        schema_version="1",
    )


def ready_batch(store: Store) -> tuple[str, bytes]:
    """A finished batch job of 3 rows, 1 failed; returns its id and output."""
    request = batch_request()
    job_id = request.job_id()
    output = b'{"row": 0}\n{"row": 1}\n{"row": 2, "error": {"type": "invalid_input"}}\n'
    store.write_json(batch.request_key(job_id), request.to_dict())
    store.write_bytes(batch.output_key(job_id), output)
    store.write_json(
        batch.manifest_key(job_id),
        {"job_id": job_id, "rows": 3, "rows_failed": 1, "output": batch.output_key(job_id)},
    )
    progress = {"rows_total": 3, "rows_done": 3, "rows_failed": 1}
    save_status(store, batch.status_key(job_id), JobStatus(state=JobState.READY, progress=progress))
    return job_id, output


def failed_batch(store: Store) -> str:
    request = batch_request()
    job_id = request.job_id()
    store.write_json(batch.request_key(job_id), request.to_dict())
    failed = JobStatus(
        state=JobState.FAILED,
        error="the gateway refused the batch worker's key (401)",
        error_code="gateway_unauthorized",
    )
    save_status(store, batch.status_key(job_id), failed)
    return job_id


def failed_training(store: Store) -> str:
    request = TrainRequest(
        run_id=DISTILL_RUN_ID,
        name="demo",
        params=TrainParams.from_settings(get_settings()),
        promote=True,
    )
    store.write_json(train_tasks.request_key(TRAIN_RUN_ID), request.to_dict())
    failed = JobStatus(state=JobState.FAILED, error="internal error", error_code="internal")
    save_status(store, train_tasks.status_key(TRAIN_RUN_ID), failed)
    return TRAIN_RUN_ID


# -- reading the store ----------------------------------------------------------------------


def test_a_ready_dataset_shows_its_manifests_counts_and_reasons(store: Store) -> None:
    dataset_id = ready_dataset(store)
    job = read_job(store, JobKind.DATASET, dataset_id)
    assert job is not None
    assert (job.state, job.percent) == (JobState.READY, 100.0)
    assert job.counts == {"clean": 2, "rejected": 2}
    assert job.reasons == {"too_short": 1, "duplicate": 1}


def test_a_running_batch_job_has_percent_and_eta_from_its_progress(store: Store) -> None:
    job_id = batch_request().job_id()
    progress = {"rows_total": 200, "rows_done": 50, "rows_failed": 5, "eta_s": 125.0}
    save_status(
        store, batch.status_key(job_id), JobStatus(state=JobState.RUNNING, progress=progress)
    )
    job = read_job(store, JobKind.BATCH, job_id)
    assert job is not None
    assert (job.percent, job.eta) == (25.0, "2 min 05 s")
    assert job.counts == {"answered": 45, "failed": 5}


def test_a_training_reports_steps_while_training_and_its_stage_otherwise(store: Store) -> None:
    stepping = {"stage": "train", "step": 30, "total_steps": 120, "eta_s": 3720}
    save_status(
        store,
        train_tasks.status_key(TRAIN_RUN_ID),
        JobStatus(state=JobState.RUNNING, progress=stepping),
    )
    job = read_job(store, JobKind.TRAIN, TRAIN_RUN_ID)
    assert job is not None and (job.percent, job.eta) == (25.0, "1 h 02 min")

    registering = {**stepping, "stage": "register", "stage_done": 0, "stage_total": 1}
    save_status(
        store,
        train_tasks.status_key(TRAIN_RUN_ID),
        JobStatus(state=JobState.RUNNING, progress=registering),
    )
    job = read_job(store, JobKind.TRAIN, TRAIN_RUN_ID)
    assert job is not None and (job.percent, job.eta, job.progress.stage) == (0.0, None, "register")


def test_jobs_are_listed_newest_first_and_capped(store: Store) -> None:
    ids = [f"bj-{index:016x}" for index in range(4)]
    for age, job_id in enumerate(ids):
        status = JobStatus(state=JobState.QUEUED, updated_at=T0 - timedelta(minutes=age))
        save_status(store, batch.status_key(job_id), status)
    store.write_json(Layout.batch("not-a-job", "status.json"), {"state": "queued"})
    assert [job.job_id for job in list_jobs(store, JobKind.BATCH)] == ids
    assert [job.job_id for job in list_jobs(store, JobKind.BATCH, limit=2)] == ids[:2]


def test_distill_runs_are_found_under_their_datasets(store: Store) -> None:
    run_id = running_distill(store)
    [job] = list_jobs(store, JobKind.DISTILL)
    assert (job.job_id, job.percent, job.progress.stage) == (run_id, 40.0, "label")
    assert job.counts == {"accepted": 3, "rejected": 1}


def test_durations_read_as_people_say_them() -> None:
    assert [duration_text(s) for s in (0, 42.4, 185, 3600)] == [
        "0 s",
        "42 s",
        "3 min 05 s",
        "1 h 00 min",
    ]


# -- pages ------------------------------------------------------------------------------------


def test_an_admin_key_sees_datasets_and_distill_runs_and_a_note_instead_of_batch_jobs(
    console: FastAPI, store: Store
) -> None:
    dataset_id = ready_dataset(store)
    run_id = running_distill(store)
    batch_id, _ = ready_batch(store)
    page = client(console, ADMIN_KEY).get("/console/jobs")
    assert page.status_code == 200
    assert f'href="/console/jobs/dataset/{dataset_id}"' in page.text
    assert f'href="/console/jobs/distill/{run_id}"' in page.text
    assert "too_short <strong>1</strong>" in page.text
    assert 'value="40.0"' in page.text  # the distill run's <progress>
    assert batch_id not in page.text
    batches = page.text.split('id="batch-jobs"')[1].split("</section>")[0]
    assert "lacks the 'batch' scope" in batches


def test_a_batch_key_sees_batch_jobs_and_a_note_instead_of_datasets(
    console: FastAPI, store: Store
) -> None:
    dataset_id = ready_dataset(store)
    batch_id, _ = ready_batch(store)
    visitor = client(console, BATCH_KEY)
    page = visitor.get("/console/jobs")
    assert page.status_code == 200
    assert f'href="/console/jobs/batch/{batch_id}"' in page.text
    assert dataset_id not in page.text
    datasets = page.text.split('id="dataset-jobs"')[1].split("</section>")[0]
    assert "lacks the 'admin' scope" in datasets
    assert visitor.get(f"/console/jobs/dataset/{dataset_id}").status_code == 403


def test_a_key_with_neither_scope_is_refused_and_no_key_goes_to_the_login(
    console: FastAPI,
) -> None:
    refused = client(console, EXTRACT_KEY).get("/console/jobs")
    assert refused.status_code == 403 and "Not allowed" in refused.text
    anonymous = client(console, None).get("/console/jobs")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/console/login?next=/console/jobs"


@pytest.mark.parametrize(
    ("key", "path", "message"),
    [
        (BATCH_KEY, "/console/jobs/batch/bj-0000000000000000", "No batch job bj-0000000000000000"),
        (BATCH_KEY, "/console/jobs/batch/bj-NOT-AN-ID", "No batch job bj-NOT-AN-ID here."),
        (ADMIN_KEY, "/console/jobs/train/tr-0000000000000000/progress", "No train job"),
        (ADMIN_KEY, "/console/jobs/distill/dr-1/progress", "No distill job dr-1 here."),
        (ADMIN_KEY, "/console/jobs/model/m-1", "There are no model jobs."),
        (BATCH_KEY, "/console/jobs/batch/bj-0000000000000000/output", "has no output (yet)"),
    ],
)
def test_an_unknown_job_or_kind_is_a_404_page(
    console: FastAPI, key: str, path: str, message: str
) -> None:
    answer = client(console, key).get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert message in answer.text and "Traceback" not in answer.text


def test_a_running_jobs_progress_polls_and_a_ready_ones_stops_at_100(
    console: FastAPI, store: Store
) -> None:
    run_id = running_distill(store)
    admin = client(console, ADMIN_KEY)
    running = admin.get(f"/console/jobs/distill/{run_id}/progress", headers={"HX-Request": "true"})
    assert running.status_code == 200
    assert (
        'hx-trigger="every 1s"' in running.text and '<span id="percent">40%</span>' in running.text
    )
    assert "<html" not in running.text  # a fragment, not a page

    counts = RunProgress(stage="done", total=0, done=0, accepted=9, rejected=1).as_dict()
    status = JobStatus(state=JobState.READY, progress=counts)
    save_status(store, jobs.status_key(JobKind.DISTILL, run_id) or "", status)
    ready = admin.get(f"/console/jobs/distill/{run_id}/progress")
    assert '<span id="percent">100%</span>' in ready.text and "hx-trigger" not in ready.text


def test_a_ready_batch_jobs_page_offers_its_output_for_download(
    console: FastAPI, store: Store
) -> None:
    job_id, output = ready_batch(store)
    visitor = client(console, BATCH_KEY)
    detail = visitor.get(f"/console/jobs/batch/{job_id}")
    assert detail.status_code == 200
    assert f'href="/console/jobs/batch/{job_id}/output"' in detail.text
    assert '"adapter": "demo@v1"' in html.unescape(detail.text)  # the request that started it
    assert "answered <strong>2</strong> · failed <strong>1</strong>" in detail.text
    download = visitor.get(f"/console/jobs/batch/{job_id}/output")
    assert download.status_code == 200 and download.content == output
    assert download.headers["content-disposition"] == f'attachment; filename="{job_id}.jsonl"'
    assert client(console, ADMIN_KEY).get(f"/console/jobs/batch/{job_id}/output").status_code == 403


def test_a_failed_dataset_without_a_recorded_request_says_why_it_is_not_queued_again(
    console: FastAPI, store: Store
) -> None:
    dataset_id = failed_dataset(store)
    admin = client(console, ADMIN_KEY)
    detail = admin.get(f"/console/jobs/dataset/{dataset_id}")
    assert "the export has no text column" in detail.text and "no_text_column" in detail.text
    assert 'id="resubmit-refusal"' in detail.text and "/resubmit" not in detail.text
    refused = admin.post(f"/console/jobs/dataset/{dataset_id}/resubmit")
    assert refused.status_code == 409
    assert load_status(store, Layout.dataset_status(dataset_id)).state == JobState.FAILED


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The Redis the task queue sends to (the Celery app's broker, whatever database it uses);
    the messages a test leaves there are taken out again."""
    client = redis.Redis.from_url(celery_app.conf.broker_url)
    client.ping()
    before = {queue: client.llen(queue) for queue in ("ingest", "distill", "train", "batch")}
    yield client
    for queue, length in before.items():
        while client.llen(queue) > length:
            client.lpop(queue)  # Celery pushes on the left: the newest messages are first


@pytest.mark.parametrize(
    ("kind", "make_failed", "key"),
    [
        ("dataset", failed_ingest, ADMIN_KEY),
        ("distill", failed_distill, ADMIN_KEY),
        ("train", failed_training, ADMIN_KEY),
        ("batch", failed_batch, BATCH_KEY),
    ],
)
def test_a_failed_job_is_queued_again_from_its_stored_request(
    console: FastAPI,
    store: Store,
    redis_url: str,
    broker: redis.Redis,
    kind: str,
    make_failed: Callable[[Store], str],
    key: str,
) -> None:
    job_id = make_failed(store)
    visitor = client(console, key)
    detail = visitor.get(f"/console/jobs/{kind}/{job_id}")
    assert f'action="/console/jobs/{kind}/{job_id}/resubmit"' in detail.text
    assert '<button type="submit">Queue it again</button>' in detail.text

    answer = visitor.post(f"/console/jobs/{kind}/{job_id}/resubmit")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/jobs/{kind}/{job_id}"
    job = read_job(store, JobKind(kind), job_id)
    assert job is not None and job.state == JobState.QUEUED
    queue = "ingest" if kind == "dataset" else kind
    message = json.loads(broker.lindex(queue, 0))
    assert message["headers"]["id"] == f"{queue}-{job_id}"
    _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    stored = store.read_json(jobs.request_key(JobKind(kind), job_id) or "")
    expected = {
        "dataset": {"dataset_id": job_id, **stored},
        "distill": stored,
        "train": {"train_run_id": job_id, "request": stored},
        "batch": {"job_id": job_id, "request": stored},
    }
    assert kwargs == expected[kind]

    again = visitor.post(f"/console/jobs/{kind}/{job_id}/resubmit")
    assert again.status_code == 409  # queued now: nothing to queue again
