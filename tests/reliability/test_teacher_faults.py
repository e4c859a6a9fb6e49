"""Teacher faults (scenario 4) against the stand-in teacher over real HTTP: 429 with Retry-After,
500, timeouts, malformed and truncated bodies, answers cut mid-body by a dropped connection,
connection refused, 400 and 401. Attempts are bounded, backoff honours Retry-After, a request
the teacher refuses as bad is sent once, and every row that failed is recorded with its reason.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest

from services.distill.run import DistillOptions, run_distill
from services.distill.teacher import TeacherClient, TeacherConfig, TeacherError, TeacherFatalError
from shared.store import Store
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MAX_ATTEMPTS = 3
RETRY_AFTER_S = 0.4
# The error kind the client records for each fault the stand-in injects.
KIND_OF_FAULT = {
    "rate_limited": "rate_limited",
    "server_error": "server_error",
    "timeout": "timeout",
    "malformed": "malformed_response",
    "disconnected": "connection",
}


def test_a_run_through_every_transport_fault_records_each_failed_row_with_its_reason(
    make_dataset, start_stub, use_teacher, read_run_file, record
) -> None:
    dataset = make_dataset(120, 61)
    stub = start_stub(
        dataset.labels,
        seed=5,
        rate_429=0.12,
        retry_after_s=RETRY_AFTER_S,
        rate_500=0.12,
        rate_timeout=0.06,
        timeout_sleep_s=3,
        rate_malformed=0.12,
        rate_disconnect=0.12,
        rate_truncated=0.05,
    )
    use_teacher(
        stub.base_url,
        teacher_max_attempts=MAX_ATTEMPTS,
        teacher_timeout_s=0.5,
        teacher_max_concurrency=8,
        # The failed rows are what this run records: it must finish with all of them.
        distill_max_error_ratio=1,
    )
    started = time.monotonic()
    result = run_distill(dataset.dataset_id, DistillOptions.from_settings(), Store.from_settings())
    elapsed = time.monotonic() - started
    counts = result.manifest["counts"]
    log = httpx.get(f"{stub.url}/stub/requests", params={"limit": 20_000}).json()

    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in log:
        attempts[entry["key"]].append(entry)
    assert len(attempts) == dataset.rows
    # Bounded: never more than MAX_ATTEMPTS requests for one row.
    assert max(len(tries) for tries in attempts.values()) == MAX_ATTEMPTS
    # Backoff after a 429 is at least its Retry-After.
    gaps = [
        later["at"] - earlier["at"]
        for tries in attempts.values()
        for earlier, later in itertools.pairwise(tries)
        if earlier["outcome"] == "rate_limited"
    ]
    assert gaps and min(gaps) >= RETRY_AFTER_S - 0.02
    injected = Counter(entry["outcome"] for entry in log)
    assert set(KIND_OF_FAULT) <= set(injected), injected

    # Every row is in the output once; a row whose last attempt failed is rejected as
    # teacher_error with the kind of that last fault, and its error message.
    failed_last = Counter(
        KIND_OF_FAULT[tries[-1]["outcome"]]
        for tries in attempts.values()
        if tries[-1]["outcome"] != "ok"
    )
    rejected = read_run_file(dataset.dataset_id, result.run_id, "rejected.jsonl")
    kept = [
        r
        for split in ("train", "val", "test")
        for r in read_run_file(dataset.dataset_id, result.run_id, f"{split}.jsonl")
    ]
    ids = Counter(r["id"] for r in rejected + kept)
    assert len(ids) == dataset.rows and set(ids.values()) == {1}
    teacher_errors = [r for r in rejected if r["reason"] == "teacher_error"]
    assert Counter(r["answers"][0]["error_kind"] for r in teacher_errors) == failed_last
    assert all(r["answers"][0]["error"] for r in teacher_errors)
    assert counts["rejected_by_reason"]["teacher_error"] == sum(failed_last.values()) > 0
    assert counts["teacher_errors_by_kind"] == dict(failed_last)
    truncated = [r for r in rejected if r["reason"] == "parse_error"]
    assert truncated and all(r["answers"][0]["content"] for r in truncated)
    assert Counter(r["reason"] for r in rejected) == {
        k: v for k, v in counts["rejected_by_reason"].items() if v
    }

    faults = ", ".join(f"{injected[name]} {name}" for name in KIND_OF_FAULT)
    record(
        4,
        f"distill run of {dataset.rows} rows through the stand-in teacher injecting 429 "
        f"(Retry-After {RETRY_AFTER_S} s), 500, timeouts, malformed bodies, bodies cut mid-way "
        f"by a dropped connection and truncated JSON; at most {MAX_ATTEMPTS} attempts",
        f"{len(log)} requests ({faults}); at most {MAX_ATTEMPTS} per row; shortest wait after a "
        f"429 {min(gaps):.2f} s; {counts['accepted']} accepted, "
        f"{counts['rejected_by_reason']['teacher_error']} teacher_error rows recorded with their "
        f"last fault ({dict(failed_last)}), {len(truncated)} parse_error rows with the raw "
        f"answer; every row once; {elapsed:.1f} s",
    )


def config(base_url: str, **overrides: Any) -> TeacherConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": "stub-key",
        "model": "tiqu-stub",
        "temperature": 0.0,
        "timeout_s": 5.0,
        "max_concurrency": 4,
        "max_attempts": 5,
        "requests_per_minute": 0,
        "tokens_per_minute": 0,
        "price_input_per_1k": 0.0,
        "price_output_per_1k": 0.0,
        "json_schema": False,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    return TeacherConfig(**{**values, **overrides})


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"<complaint>\n{text}\n</complaint>"}]


def test_bad_requests_are_sent_once_and_a_refused_key_or_port_stops_the_run(
    make_dataset, start_stub, record
) -> None:
    stub = start_stub(make_dataset(10, 62).labels)

    async def bad_request() -> TeacherError:
        async with TeacherClient(config(stub.base_url)) as teacher:
            with pytest.raises(TeacherError) as error:
                await teacher.chat([])  # the stand-in answers 400: no messages
            return error.value

    four_hundred = asyncio.run(bad_request())
    assert not isinstance(four_hundred, TeacherFatalError)
    assert (four_hundred.status, four_hundred.attempts) == (400, 1)
    assert stub.state.outcomes == {"bad_request": 1}

    async def wrong_key() -> list[Any]:
        async with TeacherClient(config(stub.base_url, api_key="wrong-key")) as teacher:
            return await asyncio.gather(
                *(teacher.chat(messages(f"投诉{i}")) for i in range(40)), return_exceptions=True
            )

    refused = asyncio.run(wrong_key())
    unauthorized = stub.state.outcomes.get("unauthorized", 0)
    assert all(isinstance(r, TeacherFatalError) and r.status == 401 for r in refused)
    assert all(r.attempts <= 1 for r in refused)
    # At most the requests already in flight (the concurrency bound, 4) when the first 401 came.
    assert 1 <= unauthorized <= 4

    async def closed_port() -> tuple[TeacherFatalError, float]:
        base_url = f"http://127.0.0.1:{free_port()}/v1"
        started = time.monotonic()
        async with TeacherClient(config(base_url)) as teacher:
            with pytest.raises(TeacherFatalError) as error:
                await teacher.preflight()
        return error.value, time.monotonic() - started

    unreachable, seconds = asyncio.run(closed_port())
    assert "connection refused" in unreachable.message and seconds < 2
    record(
        4,
        "teacher client: a request the teacher answers 400; 40 requests with a key it "
        "answers 401; a teacher URL whose port refuses connections",
        f"400: 1 attempt, the row's own error; 401: {unauthorized} requests reached the "
        f"teacher for 40 asked, all 40 ended at once with the same fatal 401 error; "
        f"connection refused: reported in {seconds:.2f} s with the URL to fix",
    )
