"""The teacher client: chat completions from any OpenAI-compatible API, politely and robustly.

One `TeacherClient` per run shares one HTTP connection pool. It bounds the requests in flight
(`max_concurrency`), paces requests and tokens per minute with token buckets, retries what is
worth retrying (429, 5xx, timeouts, dropped connections, a 200 whose body is not a completion)
with exponential backoff and full jitter, never sooner than the server's `Retry-After`, and gives
up on a request after `max_attempts` with a `TeacherError` the caller records for that row.

Mistakes that would fail every request the same way (wrong URL, wrong key, unknown model, no
quota left) raise `TeacherFatalError` instead, once, with a message saying what to fix; `preflight`
finds them with one cheap call before a run starts.

Nothing here logs or puts into an error message the content of a prompt or an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import json
import logging
import math
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter, Histogram

from shared.errors import TiquError
from shared.logging import redact
from shared.settings import Settings, get_settings

__all__ = [
    "TeacherClient",
    "TeacherConfig",
    "TeacherError",
    "TeacherFatalError",
    "TeacherReply",
    "TeacherUsage",
    "estimate_cost",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "tiqu_teacher_requests_total",
    "Teacher HTTP attempts, by HTTP status or error kind (timeout, connection, ...).",
    ["status"],
)
REQUEST_SECONDS = Histogram(
    "tiqu_teacher_request_seconds",
    "Duration of one teacher HTTP attempt.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
TOKENS = Counter(
    "tiqu_teacher_tokens_total",
    "Teacher tokens, as reported by the provider (estimated when it reports none), by kind.",
    ["kind"],
)
COST = Counter(
    "tiqu_teacher_cost_total", "Estimated teacher cost, in the currency of the configured prices."
)
RETRIES = Counter("tiqu_teacher_retries_total", "Teacher attempts retried, by reason.", ["reason"])

RETRYABLE_KINDS = frozenset(
    {"rate_limited", "server_error", "timeout", "connection", "malformed_response"}
)
# A server asking for a longer pause than this is in trouble the run cannot wait out politely.
RETRY_AFTER_CAP_S = 300.0
# Completion tokens reserved from the token budget when the caller sets no max_tokens.
COMPLETION_ESTIMATE = 256
_PROVIDER_MESSAGE_CHARS = 300
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]")
_MODEL_ERROR = re.compile(
    r"model.{0,80}(not exist|does not exist|not found|unknown|invalid|not supported)"
    r"|(unknown|invalid|unsupported) model",
    re.I | re.S,
)


@dataclass(frozen=True)
class TeacherConfig:
    """Everything the client needs to know about one teacher endpoint."""

    base_url: str
    api_key: str = field(repr=False)
    model: str
    temperature: float
    timeout_s: float
    max_concurrency: int
    max_attempts: int
    requests_per_minute: int
    tokens_per_minute: int
    price_input_per_1k: float
    price_output_per_1k: float
    json_schema: bool
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> TeacherConfig:
        """The teacher configured by the `TIQU_TEACHER_*` settings."""
        s = settings or get_settings()
        return cls(
            base_url=s.teacher_base_url,
            api_key=s.teacher_api_key.get_secret_value(),
            model=s.teacher_model,
            temperature=s.teacher_temperature,
            timeout_s=s.teacher_timeout_s,
            max_concurrency=s.teacher_max_concurrency,
            max_attempts=s.teacher_max_attempts,
            requests_per_minute=s.teacher_requests_per_minute,
            tokens_per_minute=s.teacher_tokens_per_minute,
            price_input_per_1k=s.teacher_price_input_per_1k,
            price_output_per_1k=s.teacher_price_output_per_1k,
            json_schema=s.teacher_json_schema,
        )


@dataclass(frozen=True)
class TeacherReply:
    """One answer: its text, its token usage, and what it took to get it.

    `latency_s` runs from the call to the answer, retries and waits included.
    """

    content: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    latency_s: float
    finish_reason: str | None = None
    usage_estimated: bool = False


class TeacherError(TiquError):
    """A request that failed after its attempts; recorded for its row, never an empty label.

    `kind` is one of rate_limited, server_error, timeout, connection, bad_request,
    malformed_response; `status` is the last HTTP status, if any.
    """

    status_code = 502
    error_type = "teacher_error"

    def __init__(
        self, message: str, *, kind: str, status: int | None = None, attempts: int = 1
    ) -> None:
        super().__init__(message, code=kind)
        self.kind = kind
        self.status = status
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions; keyword-only arguments need this.
        return (_rebuild_error, (type(self), self.message, self.kind, self.status, self.attempts))


class TeacherFatalError(TeacherError):
    """The teacher cannot be used at all (URL, key, model, quota): abort the whole run."""

    error_type = "teacher_unusable"


def _rebuild_error(
    cls: type[TeacherError], message: str, kind: str, status: int | None, attempts: int
) -> TeacherError:
    return cls(message, kind=kind, status=status, attempts=attempts)


@dataclass
class TeacherUsage:
    """Running totals of one client: requests, attempts by outcome, tokens, cost, retries."""

    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    estimated_usage: int = 0
    attempts_by_outcome: dict[str, int] = field(default_factory=dict)
    retries_by_reason: dict[str, int] = field(default_factory=dict)
    failures_by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_tokens(text: str) -> int:
    """A rough token count: one per CJK character, one per four other characters."""
    cjk = len(_CJK.findall(text))
    return max(1, cjk + math.ceil((len(text) - cjk) / 4))


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A rough prompt size, with the few tokens of framing each message costs."""
    return 2 + sum(4 + estimate_tokens(str(m.get("content") or "")) for m in messages)


def estimate_cost(prompt_tokens: int, completion_tokens: int, config: TeacherConfig) -> float:
    """Cost of a usage at the configured prices per 1,000 tokens."""
    return (
        prompt_tokens * config.price_input_per_1k + completion_tokens * config.price_output_per_1k
    ) / 1000.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or HTTP date); None if unusable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class TokenBucket:
    """An async token bucket: `per_minute` tokens a minute, bursts of one second's worth.

    A request larger than the burst waits for a full bucket and leaves it in debt, so large
    requests never starve and the long-run rate still holds. Waiters are served in order.
    """

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, amount: float) -> None:
        async with self._lock:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self.level >= need:
                    self.level -= amount
                    return
                await asyncio.sleep((need - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Take `delta` more tokens (or give back, when negative) after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


@dataclass
class _Success:
    content: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass
class _Failure:
    kind: str
    status: int | None
    message: str
    retry_after: float | None = None
    fatal: bool = False
    counts_as_unreachable: bool = False

    @property
    def outcome(self) -> str:
        """The metrics label: the HTTP status, or the error kind when there was none."""
        if self.kind == "malformed_response" or self.status is None:
            return self.kind
        return str(self.status)


class _ShardedPool:
    """`size` pooled connections, held by several small httpx clients instead of one.

    httpcore 1.0's pool spends O(connections²) CPU per request (encode/httpx#3215): with 64
    connections the client burnt ~10 ms of CPU per request and became the bottleneck of a run.
    Shards of at most SHARD_SIZE keep that cost small; each request goes to the shard with the
    most free connections, so together the shards still hold exactly `size` connections.
    """

    SHARD_SIZE = 8

    def __init__(self, size: int, factory: Callable[[int], httpx.AsyncClient]) -> None:
        count = math.ceil(size / self.SHARD_SIZE)
        self.capacity = [size // count + (1 if i < size % count else 0) for i in range(count)]
        self.busy = [0] * count
        self.clients = [factory(capacity) for capacity in self.capacity]

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        index = max(range(len(self.clients)), key=lambda i: self.capacity[i] - self.busy[i])
        self.busy[index] += 1
        try:
            return await self.clients[index].request(method, url, **kwargs)
        finally:
            self.busy[index] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def _clause(message: str) -> str:
    """A provider's error message without its final full stop, to embed in a sentence."""
    return message.strip().rstrip(".。 ")


class TeacherClient:
    """Async client of one teacher; use as `async with TeacherClient(config) as teacher:`."""

    def __init__(
        self,
        config: TeacherConfig,
        *,
        metrics: bool = True,
        max_consecutive_connection_errors: int = 10,
    ) -> None:
        self.config = config
        self.usage = TeacherUsage()
        self._metrics = metrics
        self._max_unreachable = max(1, max_consecutive_connection_errors)
        self._base = config.base_url.rstrip("/")
        parts = urlsplit(self._base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TeacherFatalError(
                f"the teacher base URL {config.base_url!r} is not an http(s) URL; set "
                "TIQU_TEACHER_BASE_URL to e.g. https://api.deepseek.com/v1",
                kind="connection",
                attempts=0,
            )
        self._host = parts.netloc
        self._http: _ShardedPool | None = None
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._requests_bucket: TokenBucket | None = None
        self._tokens_bucket: TokenBucket | None = None
        self._fatal: TeacherFatalError | None = None
        self._fatal_event = asyncio.Event()
        self._unreachable_in_row = 0
        self._ids = itertools.count(1)
        self._rng = random.Random()

    async def __aenter__(self) -> TeacherClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _open(self) -> None:
        if self._http is not None:
            return
        cfg = self.config
        headers = {"Content-Type": "application/json", "User-Agent": "tiqu-distill/0.1"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        timeout = httpx.Timeout(cfg.timeout_s, connect=min(cfg.timeout_s, 10.0))
        # One TLS context for all shards: loading the CA bundle costs ~20 ms each time.
        tls = httpx.create_ssl_context()
        self._http = _ShardedPool(
            cfg.max_concurrency,
            lambda size: httpx.AsyncClient(
                headers=headers,
                timeout=timeout,
                verify=tls,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            ),
        )
        # Created here, inside the running loop the client will be used from.
        self._semaphore = asyncio.Semaphore(cfg.max_concurrency)
        self._fatal_event = asyncio.Event()
        if self._fatal is not None:
            self._fatal_event.set()
        self._requests_bucket = (
            TokenBucket(cfg.requests_per_minute) if cfg.requests_per_minute > 0 else None
        )
        self._tokens_bucket = (
            TokenBucket(cfg.tokens_per_minute) if cfg.tokens_per_minute > 0 else None
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------------------------------
    # Public calls
    # ------------------------------------------------------------------------------------------

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float | None = None,
        response_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> TeacherReply:
        """One chat completion, retried as needed; raises TeacherError when it cannot be had."""
        self._open()
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": messages,
            "temperature": cfg.temperature if temperature is None else temperature,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if response_schema is not None and cfg.json_schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "schema": response_schema, "strict": True},
            }
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        prompt_estimate = estimate_prompt_tokens(messages)
        reserved = prompt_estimate + (max_tokens or COMPLETION_ESTIMATE)
        request_id = next(self._ids)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self._raise_if_fatal(attempt - 1)
            async with self._semaphore:
                self._raise_if_fatal(attempt - 1)
                if self._requests_bucket is not None:
                    await self._requests_bucket.acquire(1)
                if self._tokens_bucket is not None:
                    await self._tokens_bucket.acquire(reserved)
                outcome = await self._attempt(payload, request_id, attempt)
            if isinstance(outcome, _Success):
                return self._succeeded(outcome, messages, reserved, attempt, started)
            if self._tokens_bucket is not None:
                # A refused request is not billed: give its tokens back.
                self._tokens_bucket.adjust(-reserved)
            failure = self._failure_for_request(outcome, body)
            if failure.fatal:
                raise self._set_fatal(failure, attempt)
            if failure.kind not in RETRYABLE_KINDS or attempt >= cfg.max_attempts:
                self._count_failure(failure.kind)
                log.warning(
                    "teacher request failed",
                    extra={
                        "request_id": request_id,
                        "attempts": attempt,
                        "error_kind": failure.kind,
                        "status": failure.status,
                    },
                )
                raise TeacherError(
                    failure.message, kind=failure.kind, status=failure.status, attempts=attempt
                )
            delay = self._backoff(attempt, failure.retry_after)
            self._count_retry(failure.kind)
            log.debug(
                "teacher request retried",
                extra={
                    "request_id": request_id,
                    "attempt": attempt,
                    "outcome": failure.outcome,
                    "delay_s": round(delay, 3),
                },
            )
            # Sleep, but wake at once if another request finds the teacher unusable.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fatal_event.wait(), timeout=delay)

    async def preflight(self) -> None:
        """Check URL, key and model with one cheap call; raise TeacherFatalError if unusable."""
        self._open()
        assert self._http is not None
        url = f"{self._base}/models"
        response: httpx.Response | None = None
        last: _Failure | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            self._count_attempt()
            started = time.monotonic()
            try:
                response = await self._http.request("GET", url)
            except httpx.TransportError as exc:
                last = self._transport_failure(exc)
                self._observe(last.outcome, started)
                if last.counts_as_unreachable or last.fatal:
                    raise self._set_fatal(last, attempt) from None
            else:
                self._observe(str(response.status_code), started)
                if response.status_code not in (429, 500, 502, 503, 504):
                    break
                last = _Failure(
                    _kind_for_status(response.status_code),
                    response.status_code,
                    _provider_message(response),
                    _retry_after(response),
                )
            if attempt < self.config.max_attempts:
                await asyncio.sleep(self._backoff(attempt, last.retry_after if last else None))
        else:
            assert last is not None
            detail = f"HTTP {last.status}" if last.status else last.kind
            raise self._set_fatal(
                _Failure(
                    last.kind,
                    last.status,
                    f"the teacher at {self._base} keeps failing ({detail}: {last.message}); "
                    "try again later or check the provider's status",
                    fatal=True,
                ),
                self.config.max_attempts,
            )
        assert response is not None
        status = response.status_code
        if status in (401, 403):
            raise self._set_fatal(self._auth_failure(status, _provider_message(response)), 1)
        listed = _listed_models(response) if status == 200 else None
        if listed is not None and self.config.model in listed:
            return
        # No usable model list (404, HTML, ...) or the model is not in it: some providers do not
        # list every model they serve, so a 1-token chat call decides.
        await self._probe_chat(url, listed)

    # ------------------------------------------------------------------------------------------
    # One attempt
    # ------------------------------------------------------------------------------------------

    async def _attempt(self, payload: bytes, request_id: int, attempt: int) -> _Success | _Failure:
        assert self._http is not None
        self._count_attempt()
        started = time.monotonic()
        outcome: _Success | _Failure
        try:
            # httpx times each phase; this bounds the whole exchange (a slow trickle included).
            async with asyncio.timeout(self.config.timeout_s):
                response = await self._http.request(
                    "POST", f"{self._base}/chat/completions", content=payload
                )
        except (TimeoutError, httpx.TransportError) as exc:
            outcome = self._transport_failure(exc)
        else:
            self._unreachable_in_row = 0
            if 200 <= response.status_code < 300:
                outcome = _read_completion(response)
            else:
                outcome = _Failure(
                    _kind_for_status(response.status_code),
                    response.status_code,
                    _provider_message(response),
                    _retry_after(response),
                )
        if isinstance(outcome, _Failure) and outcome.counts_as_unreachable:
            self._unreachable_in_row += 1
            if self._unreachable_in_row >= self._max_unreachable:
                outcome.fatal = True
                outcome.message = (
                    f"{outcome.message} ({self._unreachable_in_row} connection failures in a row)"
                )
        label = "200" if isinstance(outcome, _Success) else outcome.outcome
        self._observe(label, started)
        log.debug(
            "teacher attempt",
            extra={"request_id": request_id, "attempt": attempt, "outcome": label},
        )
        return outcome

    def _transport_failure(self, exc: BaseException) -> _Failure:
        timeout = self.config.timeout_s
        if isinstance(exc, httpx.UnsupportedProtocol):
            return _Failure(
                "connection",
                None,
                f"the teacher base URL {self._base!r} is not usable ({exc}); set "
                "TIQU_TEACHER_BASE_URL to e.g. https://api.deepseek.com/v1",
                fatal=True,
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            reason = _connect_reason(exc, self._host)
            return _Failure(
                "connection",
                None,
                f"cannot reach the teacher at {self._base}: {reason}. Check "
                "TIQU_TEACHER_BASE_URL and that the server is running (offline: "
                "`tiqu teacher-stub --labels FILE`)",
                counts_as_unreachable=True,
            )
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return _Failure("timeout", None, f"the teacher did not answer within {timeout:g} s")
        return _Failure(
            "connection", None, f"the connection to the teacher broke: {type(exc).__name__}"
        )

    def _failure_for_request(self, failure: _Failure, body: dict[str, Any]) -> _Failure:
        """Promote a failure to fatal when it would fail every request of the run alike."""
        status = failure.status
        if status in (401, 403):
            return self._auth_failure(status, failure.message)
        if status == 404:
            return _Failure(
                "bad_request",
                404,
                f"model or URL not found (HTTP 404) at {self._base}/chat/completions for model "
                f"{self.config.model!r}: {failure.message}. Check TIQU_TEACHER_BASE_URL (most "
                "providers need the /v1 suffix) and TIQU_TEACHER_MODEL",
                fatal=True,
            )
        if status == 429 and "insufficient_quota" in failure.message:
            return _Failure(
                "rate_limited",
                429,
                f"the teacher account has no quota or credit left: {failure.message}",
                fatal=True,
            )
        if (
            status in (400, 422)
            and "response_format" in body
            and re.search(r"response_format|json_schema", failure.message, re.I)
        ):
            return _Failure(
                "bad_request",
                status,
                "the teacher refuses the JSON schema response_format: "
                f"{_clause(failure.message)}. Set TIQU_TEACHER_JSON_SCHEMA=false for this provider",
                fatal=True,
            )
        if status in (400, 422) and _MODEL_ERROR.search(failure.message):
            return _Failure(
                "bad_request",
                status,
                f"the teacher does not know model {self.config.model!r}: "
                f"{_clause(failure.message)}. Check TIQU_TEACHER_MODEL",
                fatal=True,
            )
        return failure

    def _auth_failure(self, status: int, message: str) -> _Failure:
        return _Failure(
            "bad_request",
            status,
            f"teacher rejected the API key (HTTP {status}) at {self._base}: "
            f"{_clause(message)}. Check TIQU_TEACHER_API_KEY",
            fatal=True,
        )

    async def _probe_chat(self, models_url: str, listed: list[str] | None) -> None:
        try:
            await self.chat([{"role": "user", "content": "ping"}], max_tokens=1, temperature=0)
        except TeacherFatalError as exc:
            if listed is not None and exc.status in (400, 404, 422):
                shown = ", ".join(listed[:20]) + (" ..." if len(listed) > 20 else "")
                raise self._set_fatal(
                    _Failure(
                        exc.kind,
                        exc.status,
                        f"model {self.config.model!r} is not listed by {models_url} (available: "
                        f"{shown or 'none'}) and a test call failed with HTTP {exc.status}. "
                        "Check TIQU_TEACHER_MODEL",
                        fatal=True,
                    ),
                    exc.attempts,
                    count=False,
                    refine=True,
                ) from None
            raise
        except TeacherError as exc:
            # The endpoint answered past auth and routing: only transient trouble remains.
            if exc.kind in ("bad_request", "rate_limited"):
                return
            raise self._set_fatal(
                _Failure(
                    exc.kind,
                    exc.status,
                    f"the teacher at {self._base} does not complete a 1-token test call "
                    f"({exc.kind}: {exc.message})",
                    fatal=True,
                ),
                exc.attempts,
                count=False,
            ) from None

    # ------------------------------------------------------------------------------------------
    # Bookkeeping
    # ------------------------------------------------------------------------------------------

    def _succeeded(
        self,
        outcome: _Success,
        messages: list[dict[str, str]],
        reserved: int,
        attempt: int,
        started: float,
    ) -> TeacherReply:
        estimated = outcome.prompt_tokens is None or outcome.completion_tokens is None
        prompt_tokens = (
            outcome.prompt_tokens
            if outcome.prompt_tokens is not None
            else estimate_prompt_tokens(messages)
        )
        completion_tokens = (
            outcome.completion_tokens
            if outcome.completion_tokens is not None
            else estimate_tokens(outcome.content)
        )
        if self._tokens_bucket is not None:
            self._tokens_bucket.adjust(prompt_tokens + completion_tokens - reserved)
        cost = estimate_cost(prompt_tokens, completion_tokens, self.config)
        usage = self.usage
        usage.requests += 1
        usage.succeeded += 1
        usage.prompt_tokens += prompt_tokens
        usage.completion_tokens += completion_tokens
        usage.cost += cost
        usage.estimated_usage += int(estimated)
        if self._metrics:
            TOKENS.labels("prompt").inc(prompt_tokens)
            TOKENS.labels("completion").inc(completion_tokens)
            COST.inc(cost)
        return TeacherReply(
            content=outcome.content,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            attempts=attempt,
            latency_s=time.monotonic() - started,
            finish_reason=outcome.finish_reason,
            usage_estimated=estimated,
        )

    def _set_fatal(
        self, failure: _Failure, attempts: int, *, count: bool = True, refine: bool = False
    ) -> TeacherFatalError:
        """Remember that the teacher is unusable, so every other request stops too.

        The first reason found is the one every request reports (`refine` replaces it with a
        more precise one), so a run ends with one message, not one per request in flight.
        """
        if self._fatal is None:
            log.error(
                "teacher unusable; stopping",
                extra={"error_kind": failure.kind, "status": failure.status, "host": self._host},
            )
        if self._fatal is None or refine:
            self._fatal = TeacherFatalError(
                failure.message, kind=failure.kind, status=failure.status, attempts=attempts
            )
        self._fatal_event.set()
        if count:
            self._count_failure(self._fatal.kind)
        first = self._fatal
        return TeacherFatalError(
            first.message, kind=first.kind, status=first.status, attempts=attempts
        )

    def _raise_if_fatal(self, attempts: int) -> None:
        fatal = self._fatal
        if fatal is not None:
            self._count_failure(fatal.kind)
            raise TeacherFatalError(
                fatal.message, kind=fatal.kind, status=fatal.status, attempts=attempts
            )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        delay = self._rng.uniform(
            0.0, min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
        )
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
        return delay

    def _count_attempt(self) -> None:
        self.usage.attempts += 1

    def _observe(self, outcome: str, started: float) -> None:
        by = self.usage.attempts_by_outcome
        by[outcome] = by.get(outcome, 0) + 1
        if self._metrics:
            REQUESTS.labels(outcome).inc()
            REQUEST_SECONDS.observe(time.monotonic() - started)

    def _count_retry(self, reason: str) -> None:
        self.usage.retries += 1
        by = self.usage.retries_by_reason
        by[reason] = by.get(reason, 0) + 1
        if self._metrics:
            RETRIES.labels(reason).inc()

    def _count_failure(self, kind: str) -> None:
        self.usage.requests += 1
        self.usage.failed += 1
        by = self.usage.failures_by_kind
        by[kind] = by.get(kind, 0) + 1


# ----------------------------------------------------------------------------------------------
# Reading responses
# ----------------------------------------------------------------------------------------------


def _kind_for_status(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "bad_request"


def _retry_after(response: httpx.Response) -> float | None:
    milliseconds = response.headers.get("retry-after-ms")
    if milliseconds:
        try:
            value = float(milliseconds) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    return parse_retry_after(response.headers.get("retry-after"))


def _provider_message(response: httpx.Response) -> str:
    """The provider's error message, short and redacted (it may quote the request)."""
    text = ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            text = str(error.get("message") or "")
            code = error.get("code") or error.get("type")
            if code:
                text = f"{text} [{code}]" if text else f"[{code}]"
        elif isinstance(error, str):
            text = error
        elif "detail" in data:
            text = str(data["detail"])
        elif "message" in data:
            text = str(data["message"])
    if not text:
        text = response.text.strip() or response.reason_phrase or "no details"
    text = " ".join(text.split())
    if len(text) > _PROVIDER_MESSAGE_CHARS:
        text = text[:_PROVIDER_MESSAGE_CHARS] + "…"
    return redact(text)


def _token_count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _read_completion(response: httpx.Response) -> _Success | _Failure:
    """A chat.completion body's content and usage, or why the body is not one."""

    def malformed(reason: str) -> _Failure:
        return _Failure("malformed_response", response.status_code, f"malformed answer: {reason}")

    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return malformed("the body is not JSON")
    if not isinstance(data, dict):
        return malformed("the body is not a JSON object")
    if "error" in data and "choices" not in data:
        return malformed(f"an error inside a 200 answer: {_provider_message(response)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return malformed("no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        return malformed("choices[0] has no message")
    content = message.get("content")
    if isinstance(content, list):
        # Content given as parts, as some gateways do.
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        refusal = message.get("refusal")
        return malformed("the model refused" if refusal else "choices[0].message has no content")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    finish = choice.get("finish_reason")
    return _Success(
        content=content,
        finish_reason=finish if isinstance(finish, str) else None,
        prompt_tokens=_token_count(usage.get("prompt_tokens")),
        completion_tokens=_token_count(usage.get("completion_tokens")),
    )


def _listed_models(response: httpx.Response) -> list[str] | None:
    """Model ids of an OpenAI `/models` answer; None when the body is not one."""
    try:
        data = response.json()
    except ValueError:
        return None
    entries = data.get("data") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return None
    ids = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            ids.append(entry["id"])
        elif isinstance(entry, str):
            ids.append(entry)
    return ids


def _error_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connect_reason(exc: BaseException, host: str) -> str:
    chain = list(_error_chain(exc))
    # httpx says "All connection attempts failed"; the cause underneath says why.
    text = " | ".join(str(e) or type(e).__name__ for e in chain)
    low = text.lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        low += " connection refused"
    if any(isinstance(e, socket.gaierror) for e in chain):
        low += " name resolution"
    text = str(exc) or type(exc).__name__
    hostname = host.rsplit("@", 1)[-1].split(":")[0].strip("[]")
    if any(
        marker in low
        for marker in (
            "name or service not known",
            "nodename nor servname",
            "temporary failure in name resolution",
            "no address associated",
            "getaddrinfo failed",
            "name resolution",
        )
    ):
        return f"the host name {hostname!r} does not resolve (DNS)"
    if "connection refused" in low or "errno 111" in low or "connect call failed" in low:
        return f"connection refused by {host} (nothing listens there)"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connecting to {host} timed out (host unreachable or firewalled)"
    if "ssl" in low or "certificate" in low:
        return f"the TLS handshake with {host} failed ({text})"
    return text
