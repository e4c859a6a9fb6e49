"""Metrics at a glance: the gateway's own Prometheus counters, read in-process.

The numbers are those `/metrics` exposes (the same registry), reduced to what a person watches:
requests per second over the last minute, 429s and sheds, and per adapter the p95 latency, the
share of schema-valid JSON answers and of grounded fields. Counters count since the gateway
started; only the request rate is over a window, kept by sampling the total at each look.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from prometheus_client import Metric
from prometheus_client.samples import Sample

from services.serve.console.web import CONSOLE_PATH, VisitorDep, is_htmx, page
from shared.metrics import collecting_registry

REQUESTS = "tiqu_extract_requests_total"
REJECTED = "tiqu_extract_rejected_total"
LATENCY_BUCKETS = "tiqu_extract_latency_seconds_bucket"
JSON_ANSWERS = "tiqu_extract_json_total"
FIELD_OUTCOMES = "tiqu_extract_fields_total"
RATE_WINDOW_S = 60.0
# A page refreshed every 5 s by a few people adds a few dozen samples a minute.
RATE_SAMPLES_KEPT = 1024


def samples_of(metrics: Iterable[Metric]) -> list[Sample]:
    """Every sample of `metrics` (a registry's `collect()`), flat."""
    return [sample for metric in metrics for sample in metric.samples]


def _matching(samples: Iterable[Sample], name: str, labels: dict[str, str]) -> Iterable[Sample]:
    return (
        sample
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named `name` that carry `labels`."""
    return sum(sample.value for sample in _matching(samples, name, labels))


def by_label(samples: Iterable[Sample], name: str, label: str, **labels: str) -> dict[str, float]:
    """The samples named `name` that carry `labels`, summed per value of `label`."""
    sums: dict[str, float] = defaultdict(float)
    for sample in _matching(samples, name, labels):
        sums[sample.labels[label]] += sample.value
    return dict(sums)


def histogram_quantile(quantile: float, buckets: dict[float, float]) -> float | None:
    """The `quantile` of a histogram from its cumulative bucket counts (upper bound → count), as
    Prometheus estimates it: linear within the bucket the rank falls in, and the highest finite
    bound when it falls in the +Inf bucket. None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    rank = quantile * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def latency_buckets(samples: Iterable[Sample]) -> dict[str, dict[float, float]]:
    """The cumulative bucket counts (upper bound → count) of each adapter's extraction latency."""
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for sample in _matching(samples, LATENCY_BUCKETS, {}):
        buckets[sample.labels["adapter"]][float(sample.labels["le"])] += sample.value
    return buckets


def merged(histograms: Iterable[dict[float, float]]) -> dict[float, float]:
    """One histogram of several with the same buckets: their counts added bound by bound."""
    counts: dict[float, float] = defaultdict(float)
    for histogram in histograms:
        for bound, count in histogram.items():
            counts[bound] += count
    return counts


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class AdapterGlance:
    adapter: str
    answers: int
    p95_latency_s: float | None
    json_valid_rate: float | None
    # Of the fields with a value: those found in the text (ungrounded ones are dropped).
    grounded_rate: float | None


@dataclass(frozen=True)
class Glance:
    requests: int
    requests_per_s: float
    # The seconds the rate spans, and whether they run from the gateway's start (no earlier
    # look within the window).
    rate_span_s: float
    rate_since_start: bool
    too_many_requests: int
    rejected_by_reason: dict[str, int]
    p95_latency_s: float | None
    adapters: list[AdapterGlance]


class RequestRate:
    """Requests per second over the last `window_s`, from the request total seen at each look:
    the change since the oldest look within the window, or the average since `started` when
    there is none (the first look)."""

    def __init__(
        self, started: float, window_s: float = RATE_WINDOW_S, kept: int = RATE_SAMPLES_KEPT
    ) -> None:
        self.started = started
        self.window_s = window_s
        self._looks: deque[tuple[float, float]] = deque(maxlen=kept)
        # Pages are served from a thread pool.
        self._lock = threading.Lock()

    def observe(self, now: float, requests: float) -> tuple[float, float, bool]:
        """Record a look at `now` (monotonic seconds); returns (requests/s, span in seconds,
        whether the span runs from the start)."""
        with self._lock:
            while self._looks and self._looks[0][0] < now - self.window_s:
                self._looks.popleft()
            oldest = self._looks[0] if self._looks else None
            self._looks.append((now, requests))
        if oldest is None or now <= oldest[0]:
            span = max(now - self.started, 1e-9)
            return requests / span, span, True
        span = now - oldest[0]
        return max(requests - oldest[1], 0.0) / span, span, False


def glance(samples: list[Sample], rate: RequestRate, now: float) -> Glance:
    """What the metrics page shows, from the registry's `samples` at monotonic time `now`."""
    requests = total(samples, REQUESTS)
    per_s, span, since_start = rate.observe(now, requests)
    latency = latency_buckets(samples)
    quantiles = {name: histogram_quantile(0.95, buckets) for name, buckets in latency.items()}
    json_answers = {
        valid: by_label(samples, JSON_ANSWERS, "adapter", valid=valid)
        for valid in ("true", "false")
    }
    fields = {
        outcome: by_label(samples, FIELD_OUTCOMES, "adapter", outcome=outcome)
        for outcome in ("grounded", "ungrounded")
    }
    names = sorted(
        set(quantiles)
        | set(json_answers["true"])
        | set(json_answers["false"])
        | set(fields["grounded"])
        | set(fields["ungrounded"])
    )
    adapters = []
    for name in names:
        valid = json_answers["true"].get(name, 0.0)
        answers = valid + json_answers["false"].get(name, 0.0)
        grounded = fields["grounded"].get(name, 0.0)
        adapters.append(
            AdapterGlance(
                adapter=name,
                answers=int(answers),
                p95_latency_s=quantiles.get(name),
                json_valid_rate=_share(valid, answers),
                grounded_rate=_share(grounded, grounded + fields["ungrounded"].get(name, 0.0)),
            )
        )
    return Glance(
        requests=int(requests),
        requests_per_s=per_s,
        rate_span_s=span,
        rate_since_start=since_start,
        too_many_requests=int(total(samples, REQUESTS, status="429")),
        rejected_by_reason={
            reason: int(number) for reason, number in by_label(samples, REJECTED, "reason").items()
        },
        p95_latency_s=histogram_quantile(0.95, merged(latency.values())),
        adapters=adapters,
    )


# The gateway process imports the console as it starts.
REQUEST_RATE = RequestRate(started=time.monotonic())

router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False)


@router.get("/metrics")
def metrics_page(request: Request, _: VisitorDep) -> HTMLResponse:
    samples = samples_of(collecting_registry().collect())
    context = glance(samples, REQUEST_RATE, time.monotonic())
    # The tiles refresh themselves: htmx asks for them alone.
    template = "metrics_tiles.html" if is_htmx(request) else "metrics.html"
    return page(request, template, glance=context)
