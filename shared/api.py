"""The HTTP shell every tiqu API shares: error envelope, body-size limit, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PayloadTooLargeError, TiquError
from shared.logging import configure_logging
from shared.metrics import instrument_app
from shared.queue import redis_client
from shared.settings import get_settings
from shared.store import Store

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], None]

_HTTP_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "overloaded",
    503: "unavailable",
}


def error_json(
    status: int, message: str, error_type: str, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


class BodySizeLimit:
    """Refuse request bodies above `max_bytes` with 413 before reading them whole.

    A declared Content-Length is checked up front; a chunked body is counted as it streams in
    and cut off at the limit, so a huge upload never fills memory or disk.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLargeError(self._message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLargeError:
            if not response_started:
                await self._refuse(scope, receive, send)

    def _message(self) -> str:
        return f"request body larger than the limit of {self.max_bytes // (1024 * 1024)} MiB"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_json(413, self._message(), "payload_too_large")
        await response(scope, receive, send)


def _redis_answers() -> None:
    redis_client().ping()


def _store_answers() -> None:
    Store.from_settings().children("datasets")


def create_app(
    *,
    service: str,
    title: str,
    description: str,
    max_body_bytes: int | None = None,
    readiness_checks: dict[str, ReadinessCheck] | None = None,
) -> FastAPI:
    """A FastAPI app with tiqu's error envelope, `/healthz`, `/readyz` and `/metrics`.

    Every tiqu API needs Redis (its queue) and the store, so `/readyz` always checks both;
    `readiness_checks` adds more. The body limit defaults to TIQU_MAX_UPLOAD_MB.
    """
    configure_logging(f"{service}-api")
    if max_body_bytes is None:
        max_body_bytes = get_settings().max_upload_mb * 1024 * 1024
    app = FastAPI(title=title, description=description, version="0.1.0")
    checks = {"redis": _redis_answers, "store": _store_answers, **(readiness_checks or {})}

    @app.exception_handler(TiquError)
    async def tiqu_error(_: Request, exc: TiquError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{location}: {first.get('msg', 'invalid request')}" if location else "invalid"
        return error_json(422, message, "invalid_input", location or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        return error_json(exc.status_code, str(exc.detail), error_type)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"error_class": type(exc).__name__})
        return error_json(500, "internal error; see the service log", "internal_error")

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["health"], summary="Dependencies answer")
    def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"failed: {type(exc).__name__}"
        ready = all(v == "ok" for v in results.values())
        body = {"status": "ready" if ready else "not_ready", "checks": results}
        return JSONResponse(body, status_code=200 if ready else 503)

    instrument_app(app, service)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app
