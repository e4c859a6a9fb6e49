"""A batch job resumed by a worker with another chunk size (scenario 18, issue 13 item 7).

The chunk size a job started with is recorded in the job; a worker restarted with a different
TIQU_BATCH_CHUNK_ROWS resumes with the recorded one, and the output is checked to hold exactly
one line per input row, in order. A real batch worker killed with SIGKILL mid-job, the gateway
on the session's engine.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from services.serve.batch import chunk_key
from shared.jobs import job_lease_held
from shared.store import Store
from tests.reliability.job_support import (
    wait_settled,
    write_batch_export,
)
from tests.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]

ROWS = 60


def test_a_batch_resumed_with_another_chunk_size_keeps_every_row_once(
    batch_jobs, start_worker, tmp_path: Path, redis_url: str, record
) -> None:
    store = Store.from_settings()
    export = tmp_path / "complaints.csv"
    frame = write_batch_export(export, ROWS)
    worker = start_worker("batch", **batch_jobs.worker_env(TIQU_BATCH_CHUNK_ROWS="4"))
    accepted = batch_jobs.submit(export)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    wait_until(lambda: store.exists(chunk_key(job_id, 2)), 120, "three chunks done")
    worker.stop(signal.SIGKILL)
    wait_until(lambda: not job_lease_held("batch", job_id), 30, "the dead worker's lease to lapse")
    chunks = store.list(f"batches/{job_id}/chunks")
    before = {key: store.read_bytes(key) for key in chunks}

    start_worker("batch", **batch_jobs.worker_env(TIQU_BATCH_CHUNK_ROWS="7"))
    again = batch_jobs.submit(export)
    assert (again.status_code, again.json()["job_id"]) == (202, job_id), again.text
    done = wait_settled(lambda: batch_jobs.state(job_id), 180, "batch job")
    assert done["state"] == "ready", done
    lines = batch_jobs.output_lines(job_id)
    assert [line["row"] for line in lines] == list(range(ROWS))
    assert [line["id"] for line in lines] == frame["工单编号"].tolist()
    assert done["manifest"]["rows"] == ROWS
    kept = sum(store.read_bytes(key) == data for key, data in before.items())
    assert kept == len(before)
    assert done["manifest"]["chunk_rows"] == 4
    record(
        18,
        f"batch: {ROWS}-row job in chunks of 4; worker SIGKILLed after "
        f"{len(before)} chunks, restarted with TIQU_BATCH_CHUNK_ROWS=7, job submitted again",
        f"{len(lines)} output lines for {ROWS} rows, rows 0-{ROWS - 1} in order, ids kept; "
        f"the {kept} chunks written before the kill kept unchanged (chunk size recorded in "
        f"the job: {done['manifest']['chunk_rows']})",
    )
