"""Tasks that raise something unexpected (scenario 18, issue 13 item 5).

Whatever a task raises (a missing or corrupt file in the store, a worker whose settings differ
from the API's, a store that keeps refusing writes until Celery's retries are spent), its job must
end `failed` with a generic error code and no exception text, never stay `running` or `queued`,
and submitting it again must queue it again. Real APIs and Celery workers on real Redis; the
faults are made in the store the processes share.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.serve.batch import chunk_key
from shared.samples import generate_complaints, write_export
from shared.store import Layout, Store
from tests.reliability.job_support import (
    dataset_state,
    queued,
    run_state,
    submit_run,
    submit_training,
    training_state,
    upload,
    wait_settled,
    write_batch_export,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# Long enough for any of these tasks to fail; a job still unsettled after it is stuck.
SETTLE_S = 90


def test_ingest_and_distill_tasks_that_raise_leave_failed_jobs_that_run_again(
    start_api,
    start_worker,
    make_dataset,
    start_stub,
    use_teacher,
    tmp_path: Path,
    redis_url: str,
    record,
) -> None:
    store = Store.from_settings()
    dataset = make_dataset(40, 32)
    stub = start_stub(dataset.labels)
    env = use_teacher(stub.base_url)
    ingest = start_api("ingest")
    distill = start_api("distill", **env)
    export = tmp_path / "complaints.csv"
    write_export(generate_complaints(120, seed=6), "csv", export)

    # The upload is accepted, then its stored file vanishes before a worker reads it
    # (FileNotFoundError); the dataset's clean rows are replaced by bytes that are not Parquet
    # (pyarrow's ArrowInvalid). Neither is one of tiqu's own errors.
    accepted = upload(ingest.url, export)
    assert accepted.status_code == 202, accepted.text
    dataset_id = accepted.json()["dataset_id"]
    for key in store.list("raw"):
        store.delete(key)
    clean_key = Layout.dataset_clean(dataset.dataset_id)
    clean = store.read_bytes(clean_key)
    store.write_bytes(clean_key, b"not a parquet file")
    run_id = submit_run(distill.url, dataset.dataset_id).json()["run_id"]
    start_worker("ingest")
    start_worker("distill", **env)

    failed = [
        wait_settled(lambda: dataset_state(ingest.url, dataset_id), SETTLE_S, "dataset"),
        wait_settled(lambda: run_state(distill.url, run_id), SETTLE_S, "distill run"),
    ]
    assert [f["state"] for f in failed] == ["failed", "failed"], failed
    assert [f["error_code"] for f in failed] == ["internal", "internal"], failed
    for body in failed:
        assert "see the worker log" in body["error"] and str(tmp_path) not in body["error"]

    # The faults repaired, both are submitted again and run to the end.
    store.write_bytes(clean_key, clean)
    again = [upload(ingest.url, export), submit_run(distill.url, dataset.dataset_id)]
    assert [r.status_code for r in again] == [202, 202]
    built = wait_settled(lambda: dataset_state(ingest.url, dataset_id), 120, "dataset")
    labelled = wait_settled(lambda: run_state(distill.url, run_id), 120, "distill run")
    assert (built["state"], labelled["state"]) == ("ready", "ready"), (built, labelled)
    assert built["counts"]["rows"] == 120
    assert labelled["manifest"]["counts"]["rows"] == dataset.rows
    record(
        18,
        "ingest: the uploaded file deleted from the store before the worker read it "
        "(FileNotFoundError); distill: the dataset's clean.parquet overwritten with bytes that "
        "are not Parquet (ArrowInvalid); both repaired and submitted again",
        f"both jobs failed ({failed[0]['error_code']} / {failed[1]['error_code']}, no exception "
        f"text), none left running; submitted again, dataset ready with "
        f"{built['counts']['rows']} rows and distill run ready with "
        f"{labelled['manifest']['counts']['rows']} rows",
    )


def test_a_training_that_raises_before_its_lease_fails_and_is_queued_again(
    start_api,
    start_worker,
    train_env: dict[str, str],
    tiny_model: Path,
    distill_run: str,
    redis_url: str,
    record,
) -> None:
    env = {**train_env, "TIQU_TRAIN_THREADS": "1"}
    api = start_api("train", **env)
    # The worker names the same model by another path: the training's id differs from the API's.
    elsewhere = f"{tiny_model}/../{tiny_model.name}"
    worker = start_worker("train", **{**env, "TIQU_BASE_MODEL": elsewhere})
    accepted = submit_training(api.url, distill_run)
    assert accepted.status_code == 202, accepted.text
    train_run_id = accepted.json()["train_run_id"]

    body = wait_settled(lambda: training_state(api.url, train_run_id), SETTLE_S, "training")
    assert (body["state"], body["error_code"]) == ("failed", "settings_mismatch"), body
    worker.stop()
    again = submit_training(api.url, distill_run)
    assert (again.status_code, again.json()["state"]) == (202, "queued"), again.text
    requeued = queued("train")
    assert requeued == 1
    record(
        18,
        "train: a worker whose base-model path differs from the API's (the task raises before "
        "taking its lease); the training then submitted again",
        f"training {body['state']} ({body['error_code']}), not left queued; submitted again it "
        f"was queued anew ({requeued} message)",
    )


@pytest.mark.slow
def test_batch_tasks_that_raise_or_exhaust_store_retries_leave_failed_jobs(
    batch_jobs, start_worker, tmp_path: Path, redis_url: str, record
) -> None:
    store = Store.from_settings()
    export = tmp_path / "complaints.csv"
    write_batch_export(export, 12)
    accepted = batch_jobs.submit(export)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    source_key = accepted.json()["request"]["source_key"]
    store.delete(source_key)
    start_worker("batch", **batch_jobs.worker_env())
    missing = wait_settled(lambda: batch_jobs.state(job_id), SETTLE_S, "batch job")
    assert (missing["state"], missing["error_code"]) == ("failed", "internal"), missing

    # Submitted again (the upload restores the file), it meets a store that refuses its chunks:
    # a file stands where their folder goes. Celery's retries run out.
    blocker = Path(store.root) / chunk_key(job_id, 0).rsplit("/", 1)[0]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")
    again = batch_jobs.submit(export)
    assert again.status_code == 202, again.text
    exhausted = wait_settled(lambda: batch_jobs.state(job_id), 120, "batch job")
    assert (exhausted["state"], exhausted["error_code"]) == ("failed", "retries_exhausted")
    assert "see the worker log" in exhausted["error"]

    blocker.unlink()
    third = batch_jobs.submit(export)
    assert third.status_code == 202, third.text
    done = wait_settled(lambda: batch_jobs.state(job_id), 180, "batch job")
    assert done["state"] == "ready", done
    lines = batch_jobs.output_lines(job_id)
    assert [line["row"] for line in lines] == list(range(12))
    record(
        18,
        "batch: the uploaded file deleted before the worker read it; submitted again with a "
        "file where the job's chunks folder goes (the store refusing every chunk until Celery's "
        "retries ran out); then repaired and submitted a third time",
        f"failed ({missing['error_code']}), then failed ({exhausted['error_code']}), never left "
        f"running; the third submission ran to ready with {len(lines)} lines for 12 rows",
    )
