"""The teacher client against the real offline stub, served over HTTP on a free port."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.distill.parsing import AnswerParseError, parse_teacher_json
from services.distill.stub import LabelIndex, StubConfig, StubServer, load_labels
from services.distill.teacher import (
    TeacherClient,
    TeacherConfig,
    TeacherError,
    TeacherFatalError,
    estimate_cost,
    parse_retry_after,
)
from shared.logging import configure_logging
from shared.samples import FIELDS, generate_complaints, write_export
from shared.settings import get_settings
from tests.support import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabelIndex, list[dict[str, Any]]]:
    """A small sample export's labels, indexed once for every stub of this module."""
    out = tmp_path_factory.mktemp("teacher") / "complaints.jsonl"
    labels_path = write_export(generate_complaints(80, seed=11), "jsonl", out)
    rows = [json.loads(line) for line in labels_path.read_text(encoding="utf-8").splitlines()]
    originals = [r for r in rows if r["kind"] == "original" and not r["injection"]]
    return load_labels([labels_path]), originals


@pytest.fixture
def stub(labelled: tuple[LabelIndex, list[dict[str, Any]]]) -> Iterator[Any]:
    """Start a stub with the given faults: `stub(rate_500=0.5, ...)`."""
    servers: list[StubServer] = []

    def start(**faults: Any) -> StubServer:
        server = StubServer(StubConfig(**faults), index=labelled[0]).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def config(base_url: str, **overrides: Any) -> TeacherConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": "stub-key",
        "model": "tiqu-stub",
        "temperature": 0.0,
        "timeout_s": 5.0,
        "max_concurrency": 8,
        "max_attempts": 5,
        "requests_per_minute": 0,
        "tokens_per_minute": 0,
        "price_input_per_1k": 0.0,
        "price_output_per_1k": 0.0,
        "json_schema": False,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    values.update(overrides)
    return TeacherConfig(**values)


def messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "从投诉中抽取投诉人的联系方式，输出 JSON。"},
        {"role": "user", "content": f"<complaint>\n{text}\n</complaint>"},
    ]


def expected(row: dict[str, Any]) -> dict[str, Any]:
    return {field: row[field] for field in FIELDS}


async def ask_all(client: TeacherClient, rows: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    return await asyncio.gather(*(client.chat(messages(r["text"]), **kwargs) for r in rows))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stats(server: StubServer) -> dict[str, Any]:
    return httpx.get(f"{server.url}/stats").json()


def test_answers_come_back_with_labels_usage_and_cost(stub, labelled) -> None:
    server = stub()
    rows = labelled[1][:10]
    cfg = config(server.base_url, price_input_per_1k=0.002, price_output_per_1k=0.008)

    async def main() -> tuple[list[Any], TeacherClient]:
        async with TeacherClient(cfg) as teacher:
            await teacher.preflight()
            return await ask_all(teacher, rows), teacher

    replies, teacher = run(main())
    assert [parse_teacher_json(r.content) for r in replies] == [expected(r) for r in rows]
    assert all(r.attempts == 1 and r.finish_reason == "stop" for r in replies)
    assert all(not r.usage_estimated and r.prompt_tokens > 0 for r in replies)
    usage = teacher.usage
    assert usage.succeeded == usage.requests == 10 and usage.retries == 0
    assert usage.prompt_tokens == sum(r.prompt_tokens for r in replies)
    assert usage.completion_tokens == sum(r.completion_tokens for r in replies)
    assert usage.cost == pytest.approx(
        estimate_cost(usage.prompt_tokens, usage.completion_tokens, cfg)
    )
    assert usage.cost == pytest.approx(
        usage.prompt_tokens / 1000 * 0.002 + usage.completion_tokens / 1000 * 0.008
    )
    # Preflight listed the model: it cost one GET and no chat call.
    assert stats(server)["models_requests"] == 1
    assert stats(server)["chat_requests"] == 10


def test_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIQU_TEACHER_BASE_URL", "https://api.example.com/v1")
    monkeypatch.setenv("TIQU_TEACHER_API_KEY", "sk-secret")
    monkeypatch.setenv("TIQU_TEACHER_MODEL", "deepseek-chat")
    monkeypatch.setenv("TIQU_TEACHER_MAX_CONCURRENCY", "32")
    monkeypatch.setenv("TIQU_TEACHER_PRICE_OUTPUT_PER_1K", "0.5")
    get_settings.cache_clear()
    cfg = TeacherConfig.from_settings()
    assert (cfg.base_url, cfg.api_key, cfg.model) == (
        "https://api.example.com/v1",
        "sk-secret",
        "deepseek-chat",
    )
    assert cfg.max_concurrency == 32 and cfg.price_output_per_1k == 0.5
    assert "sk-secret" not in repr(cfg)


def test_429_waits_at_least_retry_after(stub, labelled) -> None:
    server = stub(rate_429=0.3, retry_after_s=1, seed=3)
    rows = labelled[1][:8]

    async def main() -> tuple[list[Any], TeacherClient]:
        async with TeacherClient(config(server.base_url, max_attempts=8)) as teacher:
            return await ask_all(teacher, rows), teacher

    replies, teacher = run(main())
    assert [parse_teacher_json(r.content) for r in replies] == [expected(r) for r in rows]
    log = httpx.get(f"{server.url}/stub/requests").json()
    limited = [e for e in log if e["outcome"] == "rate_limited"]
    assert limited, "the seed should produce some 429s"
    by_attempt = {(e["key"], e["attempt"]): e for e in log}
    for entry in limited:
        following = by_attempt[(entry["key"], entry["attempt"] + 1)]
        # Backoff alone would be ≤ 0.05 s here: the wait comes from Retry-After.
        assert following["at"] - entry["at"] >= 0.95
    assert teacher.usage.retries_by_reason == {"rate_limited": len(limited)}
    assert teacher.usage.attempts_by_outcome["429"] == len(limited)
    assert max(r.attempts for r in replies) > 1


def test_a_500_then_success(stub, labelled) -> None:
    server = stub(fail_first=1)
    rows = labelled[1][:5]

    async def main() -> tuple[list[Any], TeacherClient]:
        async with TeacherClient(config(server.base_url)) as teacher:
            return await ask_all(teacher, rows), teacher

    replies, teacher = run(main())
    assert [parse_teacher_json(r.content) for r in replies] == [expected(r) for r in rows]
    assert [r.attempts for r in replies] == [2] * 5
    assert stats(server)["outcomes"] == {"server_error": 5, "ok": 5}
    assert teacher.usage.retries_by_reason == {"server_error": 5}
    assert teacher.usage.attempts_by_outcome == {"500": 5, "200": 5}


def test_timeouts_are_retried(stub, labelled) -> None:
    server = stub(rate_timeout=0.5, timeout_sleep_s=2.0, seed=1)
    rows = labelled[1][:6]

    async def main() -> tuple[list[Any], TeacherClient]:
        cfg = config(server.base_url, timeout_s=0.3, max_attempts=10)
        async with TeacherClient(cfg) as teacher:
            return await ask_all(teacher, rows), teacher

    replies, teacher = run(main())
    assert [parse_teacher_json(r.content) for r in replies] == [expected(r) for r in rows]
    timeouts = stats(server)["outcomes"]["timeout"]
    assert timeouts > 0
    assert teacher.usage.attempts_by_outcome["timeout"] == timeouts
    assert teacher.usage.retries_by_reason["timeout"] == timeouts


def test_malformed_bodies_are_retried(stub, labelled) -> None:
    server = stub(rate_malformed=0.5, seed=2)
    rows = labelled[1][:10]

    async def main() -> tuple[list[Any], TeacherClient]:
        async with TeacherClient(config(server.base_url, max_attempts=10)) as teacher:
            return await ask_all(teacher, rows), teacher

    replies, teacher = run(main())
    assert [parse_teacher_json(r.content) for r in replies] == [expected(r) for r in rows]
    malformed = stats(server)["outcomes"]["malformed"]
    assert malformed > 0
    assert teacher.usage.attempts_by_outcome["malformed_response"] == malformed


def test_think_and_fence_answers_parse_and_truncated_ones_do_not(stub, labelled) -> None:
    server = stub(rate_think=1, rate_fence=1)
    rows = labelled[1][:4]

    async def main(base_url: str) -> list[Any]:
        async with TeacherClient(config(base_url)) as teacher:
            return await ask_all(teacher, rows)

    replies = run(main(server.base_url))
    for reply, row in zip(replies, rows, strict=True):
        assert reply.content.startswith("<think>") and "```json" in reply.content
        assert parse_teacher_json(reply.content) == expected(row)

    truncated = stub(rate_truncated=1)
    for reply in run(main(truncated.base_url)):
        assert reply.finish_reason == "length"
        with pytest.raises(AnswerParseError, match="truncated"):
            parse_teacher_json(reply.content)


def test_attempts_are_bounded(stub, labelled) -> None:
    server = stub(fail_first=100)

    async def main() -> TeacherClient:
        async with TeacherClient(config(server.base_url, max_attempts=3)) as teacher:
            with pytest.raises(TeacherError) as error:
                await teacher.chat(messages(labelled[1][0]["text"]))
            assert not isinstance(error.value, TeacherFatalError)
            assert (error.value.kind, error.value.status, error.value.attempts) == (
                "server_error",
                500,
                3,
            )
            return teacher

    teacher = run(main())
    assert stats(server)["chat_requests"] == 3
    assert teacher.usage.failures_by_kind == {"server_error": 1}
    assert teacher.usage.failed == 1 and teacher.usage.retries == 2


def test_exactly_one_attempt_on_400(stub) -> None:
    server = stub()

    async def main() -> None:
        async with TeacherClient(config(server.base_url)) as teacher:
            with pytest.raises(TeacherError) as error:
                await teacher.chat([])
            assert not isinstance(error.value, TeacherFatalError)
            assert (error.value.kind, error.value.status, error.value.attempts) == (
                "bad_request",
                400,
                1,
            )
            assert "messages" in error.value.message
            # The client stays usable: a 400 belongs to one row, not to the run.
            reply = await teacher.chat(messages("另一条投诉"))
            assert reply.attempts == 1

    run(main())
    assert stats(server)["outcomes"] == {"bad_request": 1, "ok": 1}


def test_wrong_key_fails_fast_with_one_clear_message(stub) -> None:
    server = stub()

    async def main() -> None:
        async with TeacherClient(config(server.base_url, api_key="sk-wrong-key-123")) as teacher:
            with pytest.raises(TeacherFatalError) as error:
                await teacher.preflight()
            message = str(error.value)
            assert "rejected the API key" in message and "TIQU_TEACHER_API_KEY" in message
            assert server.base_url in message
            assert "sk-wrong-key-123" not in message
            with pytest.raises(TeacherFatalError):
                await teacher.chat(messages("x"))

    run(main())
    assert stats(server)["models_requests"] == 1
    assert stats(server)["chat_requests"] == 0


def test_a_401_during_a_run_stops_every_request(stub) -> None:
    server = stub()

    async def main() -> list[Any]:
        cfg = config(server.base_url, api_key="wrong", max_concurrency=4)
        async with TeacherClient(cfg) as teacher:
            texts = [f"投诉{i}" for i in range(40)]
            return await asyncio.gather(
                *(teacher.chat(messages(t)) for t in texts), return_exceptions=True
            )

    results = run(main())
    assert all(isinstance(r, TeacherFatalError) and r.status == 401 for r in results)
    # At most the requests already in flight when the first 401 came back.
    assert stats(server)["chat_requests"] <= 4


def test_unknown_model_fails_preflight_naming_the_available_ones(stub) -> None:
    server = stub()

    async def main() -> None:
        async with TeacherClient(config(server.base_url, model="gpt-nonexistent")) as teacher:
            with pytest.raises(TeacherFatalError) as error:
                await teacher.preflight()
            message = str(error.value)
            assert "'gpt-nonexistent' is not listed" in message and "tiqu-stub" in message
            assert "TIQU_TEACHER_MODEL" in message
        async with TeacherClient(config(server.base_url, model="gpt-nonexistent")) as teacher:
            with pytest.raises(TeacherFatalError, match="model or URL not found") as error:
                await teacher.chat(messages("x"))
            assert error.value.status == 404 and error.value.attempts == 1

    run(main())


def test_preflight_falls_back_to_a_tiny_chat_when_models_is_missing(stub) -> None:
    server = stub()
    server.app.router.routes[:] = [
        r for r in server.app.router.routes if getattr(r, "path", "") != "/v1/models"
    ]

    async def main() -> TeacherClient:
        async with TeacherClient(config(server.base_url)) as teacher:
            await teacher.preflight()
            return teacher

    teacher = run(main())
    assert stats(server)["chat_requests"] == 1
    assert teacher.usage.attempts_by_outcome == {"404": 1, "200": 1}

    async def wrong_path() -> None:
        async with TeacherClient(config(server.url + "/api")) as teacher:
            with pytest.raises(TeacherFatalError, match="not found"):
                await teacher.preflight()

    run(wrong_path())


def test_closed_port_fails_fast() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"

    async def main() -> None:
        started = time.monotonic()
        async with TeacherClient(config(base_url)) as teacher:
            with pytest.raises(TeacherFatalError) as error:
                await teacher.preflight()
        assert time.monotonic() - started < 2
        message = str(error.value)
        assert base_url in message and "connection refused" in message
        assert "TIQU_TEACHER_BASE_URL" in message

    run(main())


def test_without_preflight_consecutive_connection_errors_abort_the_run() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"

    async def main() -> TeacherClient:
        cfg = config(base_url, max_concurrency=16, max_attempts=5, backoff_base_s=0.05)
        async with TeacherClient(cfg) as teacher:
            results = await asyncio.gather(
                *(teacher.chat(messages(f"投诉{i}")) for i in range(200)),
                return_exceptions=True,
            )
        fatal = [r for r in results if isinstance(r, TeacherFatalError)]
        assert len(fatal) >= 190
        assert "10 connection failures in a row" in str(fatal[0])
        return teacher

    started = time.monotonic()
    teacher = run(main())
    assert time.monotonic() - started < 5
    # Ten failures in a row, plus those already on the wire: not 200 × 5 attempts.
    assert teacher.usage.attempts <= 10 + 16


def test_dns_failure_is_named() -> None:
    async def main() -> None:
        async with TeacherClient(config("http://no-such-teacher.invalid/v1")) as teacher:
            with pytest.raises(TeacherFatalError, match="does not resolve"):
                await teacher.preflight()

    run(main())


def test_not_a_url_is_refused_at_once() -> None:
    with pytest.raises(TeacherFatalError, match="not an http"):
        TeacherClient(config("api.deepseek.com/v1"))


def test_concurrency_bound_is_respected(stub) -> None:
    server = stub(latency_ms=60)

    async def main() -> None:
        async with TeacherClient(config(server.base_url, max_concurrency=4)) as teacher:
            await asyncio.gather(*(teacher.chat(messages(f"投诉{i}")) for i in range(24)))

    started = time.monotonic()
    run(main())
    elapsed = time.monotonic() - started
    assert stats(server)["max_in_flight"] == 4
    assert elapsed >= 24 / 4 * 0.06 * 0.9


def test_requests_per_minute_spreads_requests(stub) -> None:
    server = stub()

    async def main() -> None:
        cfg = config(server.base_url, requests_per_minute=300, max_concurrency=16)
        async with TeacherClient(cfg) as teacher:
            await asyncio.gather(*(teacher.chat(messages(f"投诉{i}")) for i in range(15)))

    run(main())
    times = sorted(e["at"] for e in httpx.get(f"{server.url}/stub/requests").json())
    # 5 a second with a burst of 5: the last of 15 goes out ~2 s after the first, and no
    # stretch of time holds more than the burst plus what the rate refills meanwhile.
    assert times[-1] - times[0] >= 1.8
    for first in range(len(times)):
        for last in range(first + 1, len(times)):
            allowed = 5 + 5 * (times[last] - times[first]) + 0.5
            assert last - first + 1 <= allowed, "requests faster than the budget"


def test_tokens_per_minute_paces_by_reported_usage(stub) -> None:
    server = stub()

    async def size() -> int:
        async with TeacherClient(config(server.base_url)) as teacher:
            reply = await teacher.chat(messages("投诉0"), max_tokens=50)
            return reply.prompt_tokens + reply.completion_tokens

    per_request = run(size())

    async def main() -> None:
        # Two requests' worth of tokens a second.
        cfg = config(server.base_url, tokens_per_minute=per_request * 120)
        async with TeacherClient(cfg) as teacher:
            await asyncio.gather(
                *(teacher.chat(messages(f"投诉{i}"), max_tokens=50) for i in range(1, 7))
            )

    started = time.monotonic()
    run(main())
    # Six requests at two a second, two of them in the first burst: about 2 s.
    assert time.monotonic() - started >= 1.5


def test_json_schema_is_sent_as_response_format(stub, labelled) -> None:
    server = stub()
    row = labelled[1][0]
    schema = {
        "type": "object",
        "properties": {"name": {"type": ["string", "null"]}, "phone": {"type": ["string", "null"]}},
        "required": ["name", "phone"],
        "additionalProperties": False,
    }

    async def main(json_schema: bool) -> dict[str, Any]:
        async with TeacherClient(config(server.base_url, json_schema=json_schema)) as teacher:
            reply = await teacher.chat(messages(row["text"]), response_schema=schema)
            return parse_teacher_json(reply.content)

    # The stub answers the fields of the schema it was sent, so this shows it went out.
    assert run(main(True)) == {"name": row["name"], "phone": row["phone"]}
    assert run(main(False)) == expected(row)


def test_metrics_count_attempts_retries_and_tokens(stub, labelled) -> None:
    server = stub(fail_first=1)

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    before = {
        "500": sample("tiqu_teacher_requests_total", {"status": "500"}),
        "200": sample("tiqu_teacher_requests_total", {"status": "200"}),
        "retries": sample("tiqu_teacher_retries_total", {"reason": "server_error"}),
        "prompt": sample("tiqu_teacher_tokens_total", {"kind": "prompt"}),
        "cost": sample("tiqu_teacher_cost_total"),
        "seconds": sample("tiqu_teacher_request_seconds_count"),
    }

    async def main() -> TeacherClient:
        cfg = config(server.base_url, price_input_per_1k=1.0)
        async with TeacherClient(cfg) as teacher:
            await teacher.chat(messages(labelled[1][0]["text"]))
            return teacher

    teacher = run(main())
    assert sample("tiqu_teacher_requests_total", {"status": "500"}) == before["500"] + 1
    assert sample("tiqu_teacher_requests_total", {"status": "200"}) == before["200"] + 1
    assert sample("tiqu_teacher_retries_total", {"reason": "server_error"}) == before["retries"] + 1
    assert sample("tiqu_teacher_request_seconds_count") == before["seconds"] + 2
    prompt = teacher.usage.prompt_tokens
    assert sample("tiqu_teacher_tokens_total", {"kind": "prompt"}) == before["prompt"] + prompt
    assert sample("tiqu_teacher_cost_total") == pytest.approx(before["cost"] + prompt / 1000)


def test_logs_carry_no_complaint_text(stub, labelled, capsys: pytest.CaptureFixture[str]) -> None:
    server = stub(fail_first=1)
    row = next(r for r in labelled[1] if r["phone"] and r["name"])
    configure_logging("test")
    logging.getLogger("services.distill.teacher").setLevel(logging.DEBUG)

    async def main() -> None:
        async with TeacherClient(config(server.base_url, max_attempts=2)) as teacher:
            await teacher.chat(messages(row["text"]))
        async with TeacherClient(config(server.base_url, api_key="nope")) as teacher:
            with pytest.raises(TeacherFatalError):
                await teacher.chat(messages(row["text"]))

    try:
        run(main())
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "teacher request retried" in err and "teacher unusable" in err
    for value in (row["text"][:20], row["name"], row["phone"], "nope"):
        assert value not in err


def test_errors_survive_pickling() -> None:
    error = TeacherFatalError("teacher rejected the API key", kind="bad_request", status=401)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TeacherFatalError
    assert (copy.message, copy.kind, copy.status, copy.attempts) == (
        "teacher rejected the API key",
        "bad_request",
        401,
        1,
    )


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        ("0.5", 0.5),
        ("  7 ", 7.0),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
    ],
)
def test_retry_after_seconds(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(30.0)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now.timestamp()) == 0.0


def test_estimate_cost() -> None:
    cfg = replace(config("http://x/v1"), price_input_per_1k=0.27, price_output_per_1k=1.1)
    assert estimate_cost(2000, 500, cfg) == pytest.approx(0.54 + 0.55)
    assert estimate_cost(0, 0, cfg) == 0.0
