"""The console's metrics page: Prometheus samples reduced to rates and quantiles, and the page
over the gateway's real counters."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.serve.api import EXTRACT_REQUESTS
from services.serve.console import metrics
from services.serve.console.metrics import (
    RequestRate,
    glance,
    histogram_quantile,
    samples_of,
)
from services.serve.console.web import KEY_COOKIE
from services.serve.gateway import (
    EXTRACT_LATENCY,
    FIELD_OUTCOMES,
    JSON_RESULTS,
    LATENCY_BUCKETS,
    REJECTED,
)
from tests.console.conftest import console_app

EXTRACT_KEY = "extract-key-for-metrics-tests"


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)


def test_a_quantile_beyond_the_last_bound_is_that_bound_and_none_without_observations() -> None:
    assert histogram_quantile(0.95, {0.1: 1.0, 1.0: 1.0, float("inf"): 10.0}) == 1.0
    assert histogram_quantile(0.95, {0.1: 0.0, float("inf"): 0.0}) is None
    assert histogram_quantile(0.95, {}) is None


def test_the_request_rate_is_over_the_last_minute_and_since_start_without_an_earlier_look() -> None:
    rate = RequestRate(started=0.0, window_s=60)
    assert rate.observe(10.0, 50) == (5.0, 10.0, True)  # first look: since the start
    assert rate.observe(40.0, 110) == (2.0, 30.0, False)  # 60 more in 30 s
    assert rate.observe(70.0, 170) == (2.0, 60.0, False)  # the look at 10 s is a minute old
    assert rate.observe(75.0, 170) == pytest.approx((60 / 35, 35.0, False))  # 40 s one is oldest
    assert rate.observe(200.0, 400) == (2.0, 200.0, True)  # none within the minute


def test_a_glance_reduces_a_registrys_samples_per_adapter() -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "tiqu_extract_requests_total", "", ["route", "status", "adapter"], registry=registry
    )
    rejected = Counter("tiqu_extract_rejected_total", "", ["reason"], registry=registry)
    latency = Histogram(
        "tiqu_extract_latency_seconds", "", ["adapter"], buckets=LATENCY_BUCKETS, registry=registry
    )
    answers = Counter("tiqu_extract_json_total", "", ["adapter", "valid"], registry=registry)
    fields = Counter(
        "tiqu_extract_fields_total", "", ["adapter", "field", "outcome"], registry=registry
    )
    requests.labels("/v1/extract", "200", "demo").inc(7)
    requests.labels("/v1/extract", "429", "demo").inc(2)
    rejected.labels("overloaded").inc(2)
    rejected.labels("timeout").inc()
    for seconds in [0.2] * 18 + [0.8] * 2:
        latency.labels("demo").observe(seconds)
    latency.labels("other").observe(3.0)
    answers.labels("demo", "true").inc(3)
    answers.labels("demo", "false").inc()
    fields.labels("demo", "phone", "grounded").inc(2)
    fields.labels("demo", "name", "ungrounded").inc()
    fields.labels("demo", "email", "null").inc(5)  # no value: neither grounded nor not

    seen = glance(samples_of(registry.collect()), RequestRate(started=0.0), now=3.0)

    assert (seen.requests, seen.requests_per_s, seen.rate_since_start) == (9, 3.0, True)
    assert seen.too_many_requests == 2
    assert seen.rejected_by_reason == {"overloaded": 2, "timeout": 1}
    demo, other = seen.adapters
    assert (demo.adapter, demo.answers) == ("demo", 4)
    assert demo.p95_latency_s == pytest.approx(0.75)
    assert demo.json_valid_rate == 0.75 and demo.grounded_rate == pytest.approx(2 / 3)
    assert (other.adapter, other.json_valid_rate, other.grounded_rate) == ("other", None, None)
    assert other.p95_latency_s == pytest.approx(2 + 2 * 0.95)  # within (2, 4]
    # 21 observations: rank 19.95, between the 18 up to 0.5 s and the 20 up to 1 s.
    assert seen.p95_latency_s == pytest.approx(0.5 + 0.5 * 1.95 / 2)


@pytest.fixture
def console() -> FastAPI:
    return console_app([metrics.router], f"extract:{EXTRACT_KEY}")


def _number(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', page)
    assert found, f"no #{element_id} in the page"
    return found.group(1)


def test_the_page_shows_the_gateways_own_counters(console: FastAPI) -> None:
    visitor = TestClient(console, cookies={KEY_COOKIE: EXTRACT_KEY})
    before = visitor.get("/console/metrics").text
    # The counters are the process's: a fresh adapter name keeps this test's rows its own.
    adapter = f"console-test-{uuid.uuid4().hex[:8]}"
    EXTRACT_REQUESTS.labels("/v1/extract", "200", adapter).inc(3)
    EXTRACT_REQUESTS.labels("/v1/extract", "429", adapter).inc()
    REJECTED.labels("overloaded").inc()
    for seconds in [0.2] * 18 + [0.8] * 2:
        EXTRACT_LATENCY.labels(adapter).observe(seconds)
    JSON_RESULTS.labels(adapter, "true").inc(3)
    JSON_RESULTS.labels(adapter, "false").inc()
    FIELD_OUTCOMES.labels(adapter, "phone", "grounded").inc(2)
    FIELD_OUTCOMES.labels(adapter, "name", "ungrounded").inc()

    page = visitor.get("/console/metrics")

    assert page.status_code == 200
    assert int(_number(page.text, "requests")) == int(_number(before, "requests")) + 4
    assert int(_number(page.text, "too-many-requests")) == (
        int(_number(before, "too-many-requests")) + 1
    )
    assert 'data-reason="overloaded"' in page.text
    row = page.text.split(f'data-adapter="{adapter}"')[1].split("</tr>")[0]
    assert '<td class="p95">750 ms</td>' in row
    assert '<td class="json-valid">75.0%</td>' in row
    assert '<td class="grounded">66.7%</td>' in row
    # The view before this one is within the minute: the rate is over the time between them.
    assert re.search(r"over the last \d+ s", page.text)


def test_the_tiles_refresh_themselves_every_five_seconds(console: FastAPI) -> None:
    visitor = TestClient(console, cookies={KEY_COOKIE: EXTRACT_KEY})
    fragment = visitor.get("/console/metrics", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert 'hx-trigger="every 5s"' in fragment.text and "<html" not in fragment.text
    whole = visitor.get("/console/metrics")
    assert "<html" in whole.text and 'hx-get="/console/metrics"' in whole.text


def test_the_page_needs_a_signed_in_key(console: FastAPI) -> None:
    anonymous = TestClient(console, follow_redirects=False).get("/console/metrics")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/console/login?next=/console/metrics"
