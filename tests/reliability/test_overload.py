"""Scenario 6: the gateway driven at 4x its measured capacity by an open-loop load generator
(asyncio + httpx: arrivals at a fixed rate, whatever the answers), against the real engine."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from services.serve.gateway import LatencyLimit
from tests.engine_fixtures import auth

pytestmark = [pytest.mark.integration, pytest.mark.load]

TEXT = "我叫韩梅梅，电话 13912345678，邮箱 hmm@example.com，快递三天没到，请尽快处理。"


@dataclass
class Answer:
    sent: float
    seconds: float
    status: int
    retry_after: str | None
    error_type: str | None


def closed_loop(url: str, clients: int, seconds: float) -> list[Answer]:
    """`clients` threads sending one request after another for `seconds`."""
    answers: list[Answer] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(headers=auth(), timeout=60) as http:
            while time.monotonic() < deadline:
                answers.append(call(http, url))
                if answers[-1].status != 200:
                    time.sleep(0.2)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def call(http: httpx.Client, url: str) -> Answer:
    started = time.monotonic()
    response = http.post(f"{url}/v1/extract", json={"text": TEXT})
    return _answer(started, response)


def _answer(started: float, response: httpx.Response) -> Answer:
    error = response.json().get("error") if response.status_code != 200 else None
    return Answer(
        started,
        time.monotonic() - started,
        response.status_code,
        response.headers.get("retry-after"),
        error and error.get("type"),
    )


async def open_loop(url: str, rate: float, seconds: float) -> list[Answer]:
    """Arrivals every 1/rate s for `seconds`, each sent at its time whatever the others do."""
    answers: list[Answer] = []
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(headers=auth(), timeout=60, limits=limits) as http:

        async def one() -> None:
            started = time.monotonic()
            response = await http.post(f"{url}/v1/extract", json={"text": TEXT})
            answers.append(_answer(started, response))

        tasks = []
        begin = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return answers


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def test_load_at_four_times_capacity_is_shed_and_latency_recovers(
    register, loras, start_gateway, record
) -> None:
    register("extractor", loras.labels)
    # The target is set from this machine's own idle latency (a shared CPU runner may be several
    # times slower than a laptop, and other work on it stalls the engine now and then): six
    # times one extraction alone, at least 4 s. Unshed, 15 s at 4x capacity would queue 45 s of
    # work: latencies growing to tens of seconds.
    probe = start_gateway()
    with httpx.Client(headers=auth(), timeout=60) as http:
        for _ in range(3):
            call(http, probe.url)  # warm up
        idle = [call(http, probe.url) for _ in range(10)]
    probe.stop()
    assert {a.status for a in idle} == {200}
    baseline = statistics.median(a.seconds for a in idle)
    target_ms = max(4000, round(6 * baseline * 1000, -2))
    gateway = start_gateway(TIQU_SERVE_TARGET_P95_MS=str(target_ms))
    url = gateway.url
    with httpx.Client(headers=auth(), timeout=60) as http:
        for _ in range(3):
            call(http, url)

    measured = closed_loop(url, clients=4, seconds=6)
    capacity = sum(a.status == 200 for a in measured) / 6
    assert capacity > 0
    rate = 4 * capacity
    overload = asyncio.run(open_loop(url, rate, seconds=15))
    stopped = time.monotonic()

    statuses = {a.status for a in overload}
    admitted = [a for a in overload if a.status == 200]
    shed = [a for a in overload if a.status != 200]
    assert statuses <= {200, 429, 503}, statuses
    assert shed and admitted, statuses
    for answer in shed:
        assert int(answer.retry_after or 0) >= 1, answer
        assert answer.error_type in ("overloaded", "unavailable"), answer
    admitted_p95 = p95([a.seconds for a in admitted])
    # Unshed, arrivals at 4x capacity wait 3 s for each second of load: by the end of 15 s the
    # queue holds 45 s of work and the p95 wait is about 43 s. Shed, it stays near the target
    # (about half of it on a quiet machine); a stall of a shared 2-core CI runner has pushed it to
    # 1.7x, so the bound is 2.5x: still a quarter of the unshed p95, which it cannot pass for.
    assert admitted_p95 * 1000 <= 2.5 * target_ms, admitted_p95

    recovered_s = None
    with httpx.Client(headers=auth(), timeout=60) as http:
        recent: list[float] = []
        while time.monotonic() - stopped < 60:
            answer = call(http, url)
            assert answer.status == 200
            recent = [*recent[-4:], answer.seconds]
            if len(recent) == 5 and statistics.median(recent) <= baseline * 1.5 + 0.05:
                recovered_s = time.monotonic() - stopped
                break
            time.sleep(0.2)
    assert recovered_s is not None, (baseline, recent)
    record(
        6,
        f"capacity measured closed-loop (4 clients, 6 s): {capacity:.1f} extractions/s; then "
        f"open-loop arrivals at 4x ({rate:.0f}/s) for 15 s ({len(overload)} requests); "
        f"TIQU_SERVE_TARGET_P95_MS={target_ms:.0f} (6x the idle latency, at least 4 s)",
        f"{len(admitted)} admitted, {len(shed)} shed ("
        + ", ".join(f"{s}: {sum(a.status == s for a in shed)}" for s in sorted(statuses - {200}))
        + f") all with Retry-After, 0 other 5xx; admitted p95 {admitted_p95 * 1000:.0f} ms "
        f"(target {target_ms:.0f}, bound 2.5x it); idle latency {baseline * 1000:.0f} ms, "
        f"back to it {recovered_s:.1f} s after the load stopped",
    )


def test_the_latency_limit_shrinks_on_slow_answers_and_grows_when_it_binds() -> None:
    limit = LatencyLimit(2.0, maximum=10, initial=4, setpoint=0.8, decrease=0.9)
    assert limit.allows(0, 64)  # an idle gateway takes anything
    assert limit.allows(3, 1) and not limit.allows(4, 1)
    for _ in range(4):  # answers within the target while the limit binds: one more per round
        limit.answered(1.0, inflight=4, now=0.0)
    assert limit.limit == pytest.approx(5, abs=0.1)
    for _ in range(20):  # fast answers while far below the limit change nothing
        limit.answered(0.5, inflight=1, now=0.0)
    assert limit.limit == pytest.approx(5, abs=0.1)
    limit.answered(1.7, inflight=5, now=0.0)  # slower than 80 % of the target
    assert limit.limit == pytest.approx(4.5, abs=0.1)
    for _ in range(100):
        limit.answered(9.0, inflight=5, now=0.0)
    assert limit.limit == 1.0
    for _ in range(1000):
        limit.answered(0.1, inflight=10, now=0.0)
    assert limit.limit == 10.0


def test_the_latency_limit_shrinks_while_an_extraction_runs_late_once_per_half_setpoint() -> None:
    limit = LatencyLimit(2.0, maximum=10, initial=10, setpoint=0.5, decrease=0.5)
    limit.running(0.9, now=100.0)  # within the setpoint of 1 s
    assert limit.limit == 10.0
    limit.running(1.2, now=100.0)
    assert limit.limit == 5.0
    limit.running(1.4, now=100.3)  # 0.3 s later: the lowering has not had time to act
    assert limit.limit == 5.0
    limit.running(1.7, now=100.5)
    assert limit.limit == 2.5
