"""A queued job whose queue message was lost (scenario 18, issue 13 item 4).

A job's status says `queued` from the moment it is accepted; its message lives in Redis, which
can lose it (a flush, a purge, a restart without AOF). Submitting the job again must notice that
no message, no delivered-but-unacknowledged copy and no lease is behind the `queued` status and
queue it again, for each of the four job kinds, while a job whose message is still there is
never queued twice. Real APIs and Celery workers on real Redis.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.samples import generate_complaints, write_export
from tests.reliability.job_support import (
    dataset_state,
    lose_messages,
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


def test_queued_ingest_and_distill_jobs_whose_messages_were_lost_are_queued_again(
    start_api,
    start_worker,
    make_dataset,
    start_stub,
    use_teacher,
    tmp_path: Path,
    redis_url: str,
    record,
) -> None:
    dataset = make_dataset(40, 31)
    stub = start_stub(dataset.labels)
    env = use_teacher(stub.base_url)
    ingest = start_api("ingest")
    distill = start_api("distill", **env)
    export = tmp_path / "complaints.csv"
    write_export(generate_complaints(200, seed=5), "csv", export)

    accepted = upload(ingest.url, export)
    run = submit_run(distill.url, dataset.dataset_id)
    assert (accepted.status_code, run.status_code) == (202, 202), (accepted.text, run.text)
    dataset_id, run_id = accepted.json()["dataset_id"], run.json()["run_id"]
    assert (queued("ingest"), queued("distill")) == (1, 1)
    lost = lose_messages("ingest", "distill")

    # Submitted again: the queued status with nothing behind it is queued anew.
    again = [upload(ingest.url, export), submit_run(distill.url, dataset.dataset_id)]
    assert [r.status_code for r in again] == [202, 202]
    assert [r.json()["state"] for r in again] == ["queued", "queued"]
    requeued = (queued("ingest"), queued("distill"))
    # A third time, with the message there: nothing is queued twice.
    upload(ingest.url, export)
    submit_run(distill.url, dataset.dataset_id)
    third = (queued("ingest"), queued("distill"))
    assert requeued == third == (1, 1), (requeued, third)

    started = time.monotonic()
    start_worker("ingest")
    start_worker("distill", **env)
    built = wait_settled(lambda: dataset_state(ingest.url, dataset_id), 120, "dataset")
    labelled = wait_settled(lambda: run_state(distill.url, run_id), 120, "distill run")
    finished_s = time.monotonic() - started
    assert (built["state"], labelled["state"]) == ("ready", "ready"), (built, labelled)
    assert built["counts"]["rows"] == 200
    assert labelled["manifest"]["counts"]["rows"] == dataset.rows
    assert (queued("ingest"), queued("distill")) == (0, 0)
    record(
        18,
        "ingest upload and distill run accepted with no worker running; their Redis queue "
        "lists deleted (messages lost, status still queued); both submitted again, then a "
        "third time; workers started",
        f"{lost} messages lost; the resubmission queued each job again ({requeued[0]} + "
        f"{requeued[1]} messages), the third added none ({third[0]} + {third[1]}); dataset "
        f"ready with {built['counts']['rows']} rows and distill run ready with "
        f"{labelled['manifest']['counts']['rows']} rows {finished_s:.0f} s after the workers "
        "started",
    )


def test_a_queued_training_whose_message_was_lost_is_queued_again(
    start_api, start_worker, train_env: dict[str, str], distill_run: str, redis_url: str, record
) -> None:
    env = {**train_env, "TIQU_TRAIN_THREADS": "1"}
    api = start_api("train", **env)
    accepted = submit_training(api.url, distill_run)
    assert accepted.status_code == 202, accepted.text
    train_run_id = accepted.json()["train_run_id"]
    lost = lose_messages("train")

    again = submit_training(api.url, distill_run)
    assert (again.status_code, again.json()["state"]) == (202, "queued"), again.text
    requeued = queued("train")
    submit_training(api.url, distill_run)
    third = queued("train")
    assert requeued == third == 1, (requeued, third)

    start_worker("train", **env)
    body = wait_settled(lambda: training_state(api.url, train_run_id), 300, "training")
    assert body["state"] == "ready", body
    assert body["result"]["adapter"] == {"name": "extractor", "version": "v1"}
    record(
        18,
        "training accepted with no worker running; the Redis train queue deleted (message "
        "lost); submitted again, then a third time; a worker started",
        f"{lost} message lost; the resubmission queued it again ({requeued} message), the third "
        f"added none ({third}); training ready, adapter {body['result']['adapter']['name']} "
        f"{body['result']['adapter']['version']} registered after "
        f"{body['progress']['step']} steps",
    )


@pytest.mark.slow
def test_a_queued_batch_job_whose_message_was_lost_is_queued_again(
    batch_jobs, start_worker, tmp_path: Path, redis_url: str, record
) -> None:
    export = tmp_path / "complaints.csv"
    write_batch_export(export, 20)
    accepted = batch_jobs.submit(export)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    lost = lose_messages("batch")

    again = batch_jobs.submit(export)
    assert (again.status_code, again.json()["state"]) == (202, "queued"), again.text
    requeued = queued("batch")
    batch_jobs.submit(export)
    third = queued("batch")
    assert requeued == third == 1, (requeued, third)

    start_worker("batch", **batch_jobs.worker_env())
    body = wait_settled(lambda: batch_jobs.state(job_id), 180, "batch job")
    assert body["state"] == "ready", body
    lines = batch_jobs.output_lines(job_id)
    assert [line["row"] for line in lines] == list(range(20))
    record(
        18,
        "20-row batch job accepted with no worker running; the Redis batch queue deleted "
        "(message lost); submitted again, then a third time; a worker started",
        f"{lost} message lost; the resubmission queued it again ({requeued} message), the third "
        f"added none ({third}); job ready with {len(lines)} output lines for 20 rows",
    )
