"""Transient failures never stored as final results (scenario 18, issue 13 item 6).

A batch job whose gateway refuses the worker's key, and a distill run whose teacher fails most
requests, must end `failed` (a resubmission runs them again), not `ready` with their errors
written out as answers; a resubmission after the cause is gone finishes them, keeping what was
good. Real APIs, Celery workers, the teacher stand-in, and the gateway on the session's engine.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from shared.settings import get_settings
from shared.store import Layout, Store
from tests.reliability.job_support import (
    queued,
    run_state,
    submit_run,
    wait_settled,
    write_batch_export,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROWS = 24


@pytest.mark.slow
def test_a_batch_job_refused_by_the_gateway_fails_and_runs_again(
    batch_jobs, start_worker, tmp_path: Path, redis_url: str, record
) -> None:
    export = tmp_path / "complaints.csv"
    frame = write_batch_export(export, ROWS)
    wrong = start_worker("batch", **batch_jobs.worker_env(TIQU_GATEWAY_API_KEY="wrong-key"))
    accepted = batch_jobs.submit(export)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    refused = wait_settled(lambda: batch_jobs.state(job_id), 120, "batch job")
    assert (refused["state"], refused["error_code"]) == ("failed", "gateway_unauthorized")
    assert batch_jobs.output(job_id).status_code == 404
    wrong.stop()

    # With the right key, a resubmission runs the job again instead of returning its errors.
    start_worker("batch", **batch_jobs.worker_env())
    again = batch_jobs.submit(export)
    assert (again.status_code, again.json()["state"]) == (202, "queued"), again.text
    done = wait_settled(lambda: batch_jobs.state(job_id), 180, "batch job")
    assert done["state"] == "ready", done
    lines = batch_jobs.output_lines(job_id)
    assert [line["row"] for line in lines] == list(range(ROWS))
    own_errors = sum(1 for text in frame["投诉内容"] if not text)
    errors = [line["error"]["type"] for line in lines if line["error"]]
    assert errors == ["invalid_input"] * own_errors
    record(
        18,
        f"batch: {ROWS}-row job run by a worker with a wrong gateway key (every row 401), then "
        "submitted again with the right key",
        f"job {refused['state']} ({refused['error_code']}), no output stored; the resubmission "
        f"was queued (202), not answered with the errors, and ended {done['state']} with "
        f"{len(lines)} lines, {len(errors)} errors, all the rows' own (empty text)",
    )


def test_a_distill_run_with_most_teacher_requests_failing_fails_and_resumes(
    make_dataset,
    start_stub,
    use_teacher,
    start_api,
    start_worker,
    redis_url: str,
    record,
) -> None:
    dataset = make_dataset(40, 33)
    stub = start_stub(dataset.labels, rate_500=0.6)
    env = use_teacher(stub.base_url, teacher_max_attempts=1)
    api = start_api("distill", **env)
    start_worker("distill", **env)
    store = Store.from_settings()

    run_id = submit_run(api.url, dataset.dataset_id).json()["run_id"]
    failed = wait_settled(lambda: run_state(api.url, run_id), 120, "distill run")
    assert (failed["state"], failed["error_code"]) == ("failed", "teacher_errors"), failed
    run_files = store.list(Layout.distill_run(dataset.dataset_id, run_id, ""))
    # No output of a failed run: only its state and the request to queue it again from.
    assert sorted(key.rsplit("/", 1)[-1] for key in run_files) == ["request.json", "status.json"]
    threshold = get_settings().distill_max_error_ratio
    answered = len(store.list("cache/teacher"))
    asked = stub.state.chat_requests
    errors = asked - answered
    assert errors / dataset.rows > threshold

    # The teacher recovers: the run, submitted again, asks only what failed.
    assert httpx.put(f"{stub.url}/stub/faults", json={"rate_500": 0.0}).status_code == 200
    again = submit_run(api.url, dataset.dataset_id)
    assert (again.status_code, again.json()["state"]) == (202, "queued"), again.text
    assert queued("distill") <= 1
    done = wait_settled(lambda: run_state(api.url, run_id), 120, "distill run")
    assert done["state"] == "ready", done
    teacher = done["manifest"]["teacher"]
    counts = done["manifest"]["counts"]
    assert teacher["cached_answers"] == answered
    assert stub.state.chat_requests - asked == dataset.rows - answered
    assert counts["rows"] == dataset.rows and counts["rejected_by_reason"]["teacher_error"] == 0
    record(
        18,
        f"distill: {dataset.rows}-row run, teacher answering 500 to 60 % of requests, one "
        f"attempt each (TIQU_DISTILL_MAX_ERROR_RATIO {threshold}); the teacher then recovered "
        "and the run was submitted again",
        f"{errors} of {dataset.rows} rows failed ({errors / dataset.rows:.0%}): run "
        f"{failed['state']} ({failed['error_code']}), no files written; submitted again, "
        f"{answered} cached answers reused, {dataset.rows - answered} asked again, ready with "
        f"{counts['accepted']} accepted and 0 teacher errors",
    )
