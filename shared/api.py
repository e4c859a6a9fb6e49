"""The HTTP shell every tiqu API shares: error envelope, body-size limit, health and metrics."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import ErrorResponse, PayloadTooLargeError, TiquError
from shared.logging import configure_logging
from shared.metrics import instrument_app
from shared.queue import redis_client
from shared.settings import get_settings
from shared.store import Store

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], None]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

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


# Bodies read whole into memory (JSON requests); uploads of files are limited by
# TIQU_MAX_UPLOAD_MB instead, and spooled to disk as they arrive.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

# What a client refused for too many uploads at once waits: about the time of an upload.
UPLOAD_RETRY_AFTER_S = 5

# Routes anyone may call: liveness, readiness, metrics for the scraper, and the API description.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"})
# Where an operation of /openapi.json names the scope its key needs.
SCOPE_EXTENSION = "x-tiqu-scope"
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class KeyScope(StrEnum):
    """What a key may do. Every route but the public ones needs one scope."""

    extract = "extract"  # the gateway's extraction routes and its list of adapters
    batch = "batch"  # the gateway's batch jobs: submit, follow, download
    admin = "admin"  # the ingest, distill and train APIs


@dataclass(frozen=True)
class ApiKey:
    secret: bytes
    scopes: frozenset[KeyScope]


def parse_api_keys(setting: str) -> tuple[ApiKey, ...]:
    """TIQU_API_KEYS: comma-separated entries, each `KEY` (every scope) or `SCOPES:KEY` with
    SCOPES one or more of extract, batch, admin joined by `+` (`batch+extract:KEY`). A key given
    twice with different scopes has them all.

    Raises:
        ValueError: an entry names an unknown scope or no key; the message never holds a key.
    """
    keys = []
    for position, entry in enumerate((e.strip() for e in setting.split(",")), start=1):
        if not entry:
            continue
        named, colon, secret = entry.partition(":")
        if not colon:
            keys.append(ApiKey(entry.encode("utf-8"), frozenset(KeyScope)))
            continue
        if not secret or any(s not in KeyScope.__members__ for s in named.split("+")):
            # Neither part is echoed: in a mistyped entry either may be (part of) a key.
            raise ValueError(
                f"TIQU_API_KEYS entry {position} is neither KEY nor SCOPES:KEY: an unknown scope "
                f"or no key (scopes: {', '.join(KeyScope)}, joined by '+'; a plain KEY has no ':')"
            )
        keys.append(ApiKey(secret.encode("utf-8"), frozenset(map(KeyScope, named.split("+")))))
    return tuple(keys)


def configured_api_keys() -> tuple[ApiKey, ...]:
    return parse_api_keys(get_settings().api_keys.get_secret_value())


def check_exposure(host: str) -> None:
    """Refuse to serve on an interface other machines reach (`--host 0.0.0.0`, a LAN address)
    with no keys configured, unless TIQU_ALLOW_NO_AUTH says so; loopback stays open for local use.

    Raises:
        ValueError: keys are missing for `host`, or TIQU_API_KEYS does not parse.
    """
    if configured_api_keys() or get_settings().allow_no_auth or is_loopback(host):
        return
    raise ValueError(
        f"refusing to serve on {host} without authentication: set TIQU_API_KEYS, bind "
        "127.0.0.1, or set TIQU_ALLOW_NO_AUTH=true if something in front authenticates"
    )


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public interface


def granted_scopes(presented: bytes, keys: tuple[ApiKey, ...]) -> frozenset[KeyScope] | None:
    """The scopes `presented` holds among `keys`, or None when it is none of them. Compares with
    every key in constant time, so the answer time says nothing about which key came close."""
    granted: frozenset[KeyScope] = frozenset()
    matched = False
    for key in keys:
        same = hmac.compare_digest(presented, key.secret)
        matched |= same
        granted |= key.scopes if same else frozenset()
    return granted if matched else None


class ScopedRoute(APIRoute):
    """A route that needs a key with `key_scope` (ApiKeyAuth refuses routes without one)."""

    key_scope: ClassVar[KeyScope]


_SCOPED_ROUTES: dict[KeyScope, type[ScopedRoute]] = {
    scope: type(f"{scope.value.title()}Route", (ScopedRoute,), {"key_scope": scope})
    for scope in KeyScope
}


def scoped_route(scope: KeyScope) -> type[APIRoute]:
    """The `route_class` of an APIRouter whose routes all need a key with `scope`."""
    return _SCOPED_ROUTES[scope]


def _matched_route(router: Router, scope: Scope) -> BaseRoute | None:
    """The route that serves this request's path and method; None when none does (404/405)."""
    for route in router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None


class ApiKeyAuth:
    """Require `Authorization: Bearer KEY` with one of `keys` on every non-public route, a key
    with the scope the route declares (`scoped_route`); a route that declares none is refused.

    Runs before the body is read, so an unauthenticated or unauthorized upload costs nothing. A
    request for no route is left to the app's 404 or 405 once the key is valid. Paths under
    `own_auth_prefixes` (the web console) authenticate themselves: they answer a person with a
    login page rather than a JSON 401.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: tuple[ApiKey, ...],
        router: Router,
        own_auth_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.keys = keys
        self.router = router
        self.own_auth_prefixes = own_auth_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if any(path == p or path.startswith(f"{p}/") for p in self.own_auth_prefixes):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, presented = header.partition(b" ")
        granted = granted_scopes(presented.strip(), self.keys)
        if scheme.lower() != b"bearer" or granted is None:
            response = error_json(401, "missing or invalid API key", "unauthorized")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        route = _matched_route(self.router, scope)
        if route is not None:
            needed = route.key_scope if isinstance(route, ScopedRoute) else None
            if needed is None or needed not in granted:
                message = (
                    f"this key lacks the {needed.value!r} scope this route needs"
                    if needed
                    else "this route declares no key scope: refused to every key"
                )
                await error_json(403, message, "forbidden")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLargeError(StarletteHTTPException):
    """Raised by the body reader past the limit. An HTTPException, so FastAPI passes it on while
    it reads a body (any other error there becomes a 400 "error parsing the body")."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodySizeLimit:
    """Refuse request bodies above the route's limit with 413 before reading them whole, and
    uploads beyond `max_uploads` at once with 429.

    Routes that take a file (a form body) may receive `max_upload_bytes`, which the multipart
    parser spools to disk; every other route reads its body into memory, so it gets the small
    `max_body_bytes`. A declared Content-Length is checked up front; a chunked body is counted as
    it streams in and cut off at the limit, so a huge upload never fills memory or disk. Each
    upload holds its slot until it is answered, so disk and threads stay bounded too.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_upload_bytes: int,
        max_uploads: int,
        router: Router,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_uploads = max_uploads
        self.uploads = 0
        self.router = router
        self._takes_file: dict[int, bool] = {}

    def takes_file(self, scope: Scope) -> bool:
        """Whether the route `scope` goes to takes a file (a form body)."""
        route = _matched_route(self.router, scope)
        if not isinstance(route, APIRoute):
            return False
        if id(route) not in self._takes_file:
            field = route.body_field
            form = field is not None and isinstance(field.field_info, params.Form)
            self._takes_file[id(route)] = form
        return self._takes_file[id(route)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = self.takes_file(scope)
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        if not upload:
            await self._limited(limit, scope, receive, send)
            return
        if self.uploads >= self.max_uploads:
            response = error_json(
                429, f"{self.max_uploads} uploads in progress; try again later", "overloaded"
            )
            response.headers["Retry-After"] = str(UPLOAD_RETRY_AFTER_S)
            await response(scope, receive, send)
            return
        self.uploads += 1  # no await since the check: no other request in between
        try:
            await self._limited(limit, scope, receive, send)
        finally:
            self.uploads -= 1

    async def _limited(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(_limit_message(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLargeError, PayloadTooLargeError):
            if not response_started:
                await self._refuse(limit, scope, receive, send)

    async def _refuse(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_json(413, _limit_message(limit), "payload_too_large")
        await response(scope, receive, send)


def _limit_message(limit: int) -> str:
    if limit >= 1024 * 1024:
        return f"request body larger than the limit of {limit // (1024 * 1024)} MiB"
    return f"request body larger than the limit of {limit // 1024} KiB"


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves on `path`."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)


def _error_schema(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _openapi(app: FastAPI, *, authenticated: bool) -> dict[str, Any]:
    """FastAPI's schema, telling what the shell adds to every route: the bearer key (401) and its
    scope (`x-tiqu-scope`, 403), the body limit (413) and the error envelope, 422 included,
    instead of FastAPI's own 422 body."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    envelope = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(envelope.pop("$defs", {}))
    schemas["ErrorResponse"] = envelope
    if authenticated:
        components["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "One of the keys in TIQU_API_KEYS, with the operation's scope "
                f"({SCOPE_EXTENSION}).",
            }
        }
    paths = schema.get("paths", {})
    for route in app.routes:
        if isinstance(route, ScopedRoute) and route.include_in_schema:
            for method in route.methods:
                paths[route.path_format][method.lower()][SCOPE_EXTENSION] = route.key_scope.value
    for path, item in paths.items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _error_schema("Malformed or invalid input")
            if "requestBody" in operation:
                responses.setdefault("413", _error_schema("Request body above the limit"))
                responses.setdefault(
                    "400", _error_schema("A body that does not parse (not JSON, broken multipart)")
                )
            if authenticated and path not in PUBLIC_PATHS:
                operation["security"] = [{"bearerAuth": []}]
                responses.setdefault("401", _error_schema("Missing or invalid API key"))
                scope = operation.get(SCOPE_EXTENSION, "a")
                responses.setdefault("403", _error_schema(f"The key lacks the {scope} scope"))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in json.dumps(schema):
            schemas.pop(unused, None)
    app.openapi_schema = schema
    return schema


def _redis_answers() -> None:
    redis_client().ping()


def _store_answers() -> None:
    Store.from_settings().children("datasets")


def create_app(
    *,
    service: str,
    title: str,
    description: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    readiness_checks: dict[str, ReadinessCheck] | None = None,
    lifespan: Lifespan | None = None,
    api_keys: tuple[ApiKey, ...] | None = None,
    own_auth_prefixes: tuple[str, ...] = (),
) -> FastAPI:
    """A FastAPI app with tiqu's error envelope, `/healthz`, `/readyz` and `/metrics`.

    Every tiqu API needs Redis (its queue) and the store, so `/readyz` always checks both;
    `readiness_checks` adds more. Bodies of routes taking a file may reach TIQU_MAX_UPLOAD_MB,
    every other body `max_body_bytes` (see BodySizeLimit). With keys (TIQU_API_KEYS, or
    `api_keys`), each route the caller adds must declare its scope (`scoped_route`).
    """
    configure_logging(f"{service}-api")
    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan)
    checks = {"redis": _redis_answers, "store": _store_answers, **(readiness_checks or {})}

    @app.exception_handler(TiquError)
    async def tiqu_error(_: Request, exc: TiquError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            # A body that does not parse is a bad request, as a broken multipart one is; 422 is
            # for JSON that parses but does not fit. The reason names no content of the body.
            reason = (first.get("ctx") or {}).get("error", "decode error")
            return error_json(400, f"the body is not valid JSON: {reason}", "bad_request")
        location = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{location}: {first.get('msg', 'invalid request')}" if location else "invalid"
        return error_json(422, message, "invalid_input", location or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        response = error_json(exc.status_code, str(exc.detail), error_type)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path.
            response.headers["Allow"] = ", ".join(_allowed_methods(app, request.url.path))
        return response

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"error_class": type(exc).__name__})
        return error_json(500, "internal error; see the service log", "internal_error")

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Dependencies answer",
        responses={503: {"description": "A dependency does not answer (same body)"}},
    )
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

    # Innermost, below the metrics middleware: that one runs `receive` in a task group, which
    # would wrap the limit's exception in an ExceptionGroup and FastAPI would answer 400.
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=max_body_bytes,
        max_upload_bytes=get_settings().max_upload_mb * 1024 * 1024,
        max_uploads=get_settings().max_concurrent_uploads,
        router=app.router,
    )
    instrument_app(app, service)
    keys = configured_api_keys() if api_keys is None else api_keys
    if not keys and api_keys is None:
        log.warning("no TIQU_API_KEYS set: the API answers every request without authentication")
    app.state.api_keys = keys
    app.openapi = lambda: _openapi(app, authenticated=bool(keys))  # type: ignore[method-assign]
    # Added last, so it runs first: an unauthenticated request is answered before anything else.
    app.add_middleware(
        ApiKeyAuth, keys=keys, router=app.router, own_auth_prefixes=own_auth_prefixes
    )
    return app
