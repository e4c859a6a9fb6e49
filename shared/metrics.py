"""Prometheus metrics, exposed the same way by every service.

HTTP services get request counters and latency histograms labelled by route *template* (never by
raw path, which could carry ids or text). Celery workers run with prometheus' multiprocess mode so
the forked children that execute tasks report through one `/metrics` server on the worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

HTTP_REQUESTS = Counter(
    "tiqu_http_requests_total",
    "HTTP requests answered, by service, route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "tiqu_http_request_duration_seconds",
    "Time to answer an HTTP request, by service and route template.",
    ["service", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def collecting_registry() -> CollectorRegistry:
    """The registry to expose: merged across processes when multiprocess mode is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return DEFAULT_REGISTRY


def metrics_response() -> Response:
    return Response(generate_latest(collecting_registry()), media_type=CONTENT_TYPE_LATEST)


def instrument_app(app: FastAPI, service: str) -> None:
    """Add `/metrics` and per-request counters to a FastAPI app."""

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return metrics_response()

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(service, template, request.method, str(status)).inc()
            HTTP_LATENCY.labels(service, template).observe(time.perf_counter() - started)


def serve_worker_metrics(port: int) -> None:
    """Serve `/metrics` for a Celery worker and its children on `port`."""
    start_http_server(port, registry=collecting_registry())
