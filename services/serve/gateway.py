"""The extraction gateway's engine room: admission, adapter choice, the engine call, checks.

One `Gateway` lives per API process. Its background tasks keep it in step with the world: a
poller reads vLLM's waiting queue (backpressure) and notices an engine that went away or came
back; a listener follows `adapter.promoted` events; a reconciliation loop re-reads the registry's
aliases and reloads what a restarted engine forgot. None of them blocks a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import Counter, Gauge, Histogram

from services.serve.engine import BASE_MODEL_NAME
from services.serve.engine_client import (
    ENGINE_RETRY_AFTER_S,
    EngineClient,
    EngineRejectedError,
    is_unknown_model,
)
from services.serve.extraction import (
    Extraction,
    Prompter,
    check_grounding,
    expand_anchors,
    parse_answer,
    probe_problems,
)
from services.serve.lifecycle import AdapterIntegrityError, AdapterManager, ServedAdapter
from shared.adapters import PROBE_COMPLAINT, read_alias
from shared.anchors import anchored_decoding_schema
from shared.chat import answer_budget
from shared.cleaning import clean_with_offsets
from shared.errors import (
    InvalidInputError,
    OverloadedError,
    PayloadTooLargeError,
    TiquError,
    UnavailableError,
)
from shared.models import ResolvedModel, load_tokenizer, resolve_base_model
from shared.queue import subscribe_events
from shared.schema import get_schema
from shared.settings import Settings
from shared.store import Store

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
EXTRACT_LATENCY = Histogram(
    "tiqu_extract_latency_seconds",
    "Time from request to answer of one extraction in the gateway, by adapter.",
    ["adapter"],
    buckets=LATENCY_BUCKETS,
)
ENGINE_LATENCY = Histogram(
    "tiqu_engine_latency_seconds",
    "Time vLLM took for one extraction, by adapter.",
    ["adapter"],
    buckets=LATENCY_BUCKETS,
)
INFLIGHT = Gauge("tiqu_extract_inflight", "Extractions admitted and not yet answered.")
REJECTED = Counter(
    "tiqu_extract_rejected_total",
    "Extractions refused to protect the engine, by reason (overloaded, engine_unavailable, "
    "timeout).",
    ["reason"],
)
EXTRACTIONS = Counter("tiqu_extractions_total", "Extractions answered, by adapter.", ["adapter"])
JSON_RESULTS = Counter(
    "tiqu_extract_json_total",
    "Model answers by adapter and whether they were whole schema-valid JSON.",
    ["adapter", "valid"],
)
FIELD_OUTCOMES = Counter(
    "tiqu_extract_fields_total",
    "Extracted fields by adapter, field and outcome (grounded, ungrounded: dropped, null).",
    ["adapter", "field", "outcome"],
)

# A schema no model would meet by chance: if the engine honours constraints, the answer is this.
CONSTRAINT_PROBE_VALUE = "tiqu-constraint-probe-7f3a"
CONSTRAINT_PROBE_SCHEMA = {"type": "string", "enum": [CONSTRAINT_PROBE_VALUE]}
# The shape alone allows any string; only an engine that enforces `pattern` (the typed phone and
# e-mail fields depend on it) answers one of this form.
FORMAT_PROBE_PATTERN = r"^tiqu-[0-9]{3}-[a-z]{2}$"
FORMAT_PROBE_SCHEMA = {"type": "string", "pattern": FORMAT_PROBE_PATTERN}
OVERLOAD_RETRY_AFTER_S = 1.0
POLL_INTERVAL_S = 0.25
RECONCILE_INTERVAL_S = 10.0


class LatencyLimit:
    """How many extractions may be in flight so that they answer within the latency target.

    Additive increase, multiplicative decrease on latency (as TCP does on loss): each answer
    slower than `setpoint` x target lowers the limit by `decrease`; while the limit is what holds
    requests back (`inflight` near it), each faster answer raises it by 1/limit, one per round of
    answers. An extraction still running past `setpoint` x target lowers it too, at most once
    per half a setpoint, so that a sudden stall is answered before its slow answers come back.
    It starts at `initial` and stays within [1, `maximum`].
    """

    def __init__(
        self,
        target_s: float,
        *,
        maximum: int,
        initial: int = 4,
        setpoint: float = 0.6,
        decrease: float = 0.85,
    ) -> None:
        self.target_s = target_s
        self.maximum = maximum
        self.setpoint = setpoint
        self.decrease = decrease
        self.limit = float(min(initial, maximum))
        self._lowered_at = -math.inf

    def allows(self, inflight: int, count: int) -> bool:
        """Whether `count` more fit beside `inflight` (an idle gateway always admits)."""
        return inflight == 0 or inflight + count <= self.limit

    def answered(self, seconds: float, inflight: int, now: float) -> None:
        if seconds > self.setpoint * self.target_s:
            self._lower(now)
        elif inflight >= 0.75 * self.limit:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)

    def running(self, oldest_age_s: float, now: float) -> None:
        """The age of the oldest extraction still in flight, checked while it runs."""
        if oldest_age_s > self.setpoint * self.target_s and (
            now - self._lowered_at >= self.setpoint * self.target_s / 2
        ):
            self._lower(now)

    def _lower(self, now: float) -> None:
        self.limit = max(1.0, self.limit * self.decrease)
        self._lowered_at = now


@dataclass(frozen=True)
class Result:
    adapter: str
    extraction: Extraction
    engine_seconds: float
    prompt_tokens: int
    completion_tokens: int


class Gateway:
    """Extraction against the engine for one API process (see the module doc)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.engine = EngineClient(
            settings.engine_url,
            timeout_s=settings.serve_timeout_s,
            max_connections=settings.serve_max_inflight + 8,
            api_key=settings.engine_api_key.get_secret_value(),
        )
        self.base: ResolvedModel | None = None
        self.adapters: AdapterManager | None = None
        self.stop_token_ids: list[int] = []
        self.engine_up = False
        self.constraint_enforced: bool | None = None
        self.engine_waiting = 0.0
        self.inflight = 0
        self._inflight_since: dict[int, float] = {}
        self.latency_limit = (
            LatencyLimit(settings.serve_target_p95_ms / 1000, maximum=settings.serve_max_inflight)
            if settings.serve_target_p95_ms
            else None
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = threading.Event()

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the tokenizer, then connect to the engine in the background (never blocks)."""
        self.base = await asyncio.to_thread(resolve_base_model, self.settings)
        tokenizer = await asyncio.to_thread(load_tokenizer, self.base.path)
        self.stop_token_ids = [self.base.eos_token_id]
        self._probe_prompter = Prompter(tokenizer, get_schema())
        self.adapters = AdapterManager(
            store=self.store,
            settings=self.settings,
            base=self.base,
            tokenizer=tokenizer,
            load=self.engine.load_adapter,
            unload=self.engine.unload_adapter,
            probe=self._probe_adapter,
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._poll_engine()),
            loop.create_task(self._reconcile_forever()),
        ]
        threading.Thread(target=self._follow_promotions, args=(loop,), daemon=True).start()

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.engine.aclose()

    def readiness(self) -> dict[str, str]:
        return {
            "engine": "ok" if self.engine_up else "failed: unreachable",
            "structured_output": "ok"
            if self.constraint_enforced
            else (
                "failed: not enforced" if self.constraint_enforced is False else "failed: unchecked"
            ),
            "default_adapter": "ok"
            if self.adapters is not None and self.adapters.default_ready()
            else "failed: no promoted adapter loaded",
        }

    # -- requests --------------------------------------------------------------------------------

    def check_text(self, text: str) -> None:
        if len(text) > self.settings.serve_max_text_chars:
            raise PayloadTooLargeError(
                f"text of {len(text)} characters is above the limit of "
                f"{self.settings.serve_max_text_chars}",
                param="text",
            )
        if not text.strip():
            raise InvalidInputError("text is empty", param="text")
        if not clean_with_offsets(text).text:
            raise InvalidInputError(
                "text is empty once cleaned (only markup, invisible characters or blanks)",
                param="text",
                code="empty_after_cleaning",
            )

    def admit(self, count: int) -> None:
        """Refuse work the engine cannot take now, instead of queueing it without bound."""
        if not self.engine_up:
            REJECTED.labels("engine_unavailable").inc(count)
            raise UnavailableError(
                "the inference engine is unreachable",
                code="engine_unavailable",
                retry_after=ENGINE_RETRY_AFTER_S,
            )
        limit = self.settings.serve_max_waiting
        if self.inflight + count > self.settings.serve_max_inflight or (
            limit and self.engine_waiting >= limit
        ):
            REJECTED.labels("overloaded").inc(count)
            raise OverloadedError(
                "the extractor is at capacity; retry later", retry_after=OVERLOAD_RETRY_AFTER_S
            )
        if self.latency_limit and not self.latency_limit.allows(self.inflight, count):
            REJECTED.labels("overloaded").inc(count)
            raise OverloadedError(
                "the extractor cannot answer within its latency target now; retry later",
                retry_after=OVERLOAD_RETRY_AFTER_S,
            )

    async def extract_many(self, texts: list[str], reference: str | None) -> list[Result]:
        """Extract from each text (one admission for all), answers in input order."""
        for text in texts:
            self.check_text(text)
        self.admit(len(texts))
        self.inflight += len(texts)
        INFLIGHT.inc(len(texts))
        started = time.monotonic()
        ticket = id(texts)
        self._inflight_since[ticket] = started
        try:
            results = list(await asyncio.gather(*(self._extract(t, reference) for t in texts)))
            if self.latency_limit:
                now = time.monotonic()
                self.latency_limit.answered(now - started, self.inflight, now)
            return results
        finally:
            del self._inflight_since[ticket]
            self.inflight -= len(texts)
            INFLIGHT.dec(len(texts))

    def _check_running_latency(self) -> None:
        if self.latency_limit and self._inflight_since:
            now = time.monotonic()
            self.latency_limit.running(now - min(self._inflight_since.values()), now)

    async def _extract(self, text: str, reference: str | None, *, retried: bool = False) -> Result:
        manager = self._manager()
        served = await manager.acquire(reference)
        started = time.perf_counter()
        try:
            result = await self._run(served, text)
        except EngineRejectedError as exc:
            if is_unknown_model(exc) and not retried:
                # The engine restarted and forgot its adapters: load them again, retry once.
                await manager.engine_lost(await self.engine.served_models())
                return await self._extract(text, reference, retried=True)
            raise InvalidInputError(f"the engine refused the request: {exc.message}") from exc
        except UnavailableError as exc:
            REJECTED.labels(
                "timeout" if exc.code == "engine_timeout" else "engine_unavailable"
            ).inc()
            raise
        finally:
            manager.release(served)
        EXTRACT_LATENCY.labels(served.name).observe(time.perf_counter() - started)
        return result

    async def _run(self, served: ServedAdapter, text: str) -> Result:
        cleaned = clean_with_offsets(text)
        prompt_ids = served.prompter.prompt_ids(cleaned.text)
        budget = self.settings.engine_max_model_len - len(prompt_ids)
        if budget < 16:
            raise PayloadTooLargeError(
                f"text needs {len(prompt_ids)} prompt tokens; the model takes "
                f"{self.settings.engine_max_model_len} in all",
                param="text",
            )
        completion = await self.engine.complete(
            served.lora_name,
            prompt_ids,
            schema=self.decoding_schema(served, cleaned.text),
            max_tokens=min(self.settings.serve_max_new_tokens, budget),
            stop_token_ids=self.stop_token_ids,
        )
        answer = parse_answer(
            completion.text, served.schema, truncated=completion.finish_reason == "length"
        )
        answer = expand_anchors(answer, cleaned.text, served.schema, served.target_form)
        extraction = check_grounding(answer, text, cleaned, served.schema)
        self._count(served, extraction, completion.seconds)
        return Result(
            adapter=served.reference,
            extraction=extraction,
            engine_seconds=completion.seconds,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )

    def decoding_schema(self, served: ServedAdapter, cleaned_text: str) -> dict[str, Any]:
        schema = served.schema
        if self.settings.serve_candidate_decoding:
            decoding = schema.grounded_decoding_schema(cleaned_text)
        else:
            decoding = schema.decoding_schema()
        return anchored_decoding_schema(decoding, schema, served.target_form)

    def _count(self, served: ServedAdapter, extraction: Extraction, engine_seconds: float) -> None:
        ENGINE_LATENCY.labels(served.name).observe(engine_seconds)
        EXTRACTIONS.labels(served.name).inc()
        JSON_RESULTS.labels(served.name, str(extraction.valid_json).lower()).inc()
        for name, grounded in extraction.grounded.items():
            outcome = "null" if grounded is None else ("grounded" if grounded else "ungrounded")
            FIELD_OUTCOMES.labels(served.name, name, outcome).inc()

    def metric_label(self, reference: str | None) -> str:
        """The adapter a request is counted under: `default`, a name this gateway serves, or
        `other`; a client's string never becomes a label value, so they stay few."""
        if reference is None:
            return "default"
        name = reference.replace("/", ":").replace("@", ":").partition(":")[0]
        return name if self.adapters is not None and self.adapters.serves_name(name) else "other"

    def _manager(self) -> AdapterManager:
        if self.adapters is None:
            raise UnavailableError("the gateway is starting", retry_after=ENGINE_RETRY_AFTER_S)
        return self.adapters

    # -- probes ----------------------------------------------------------------------------------

    async def _check_constraint(self) -> None:
        """Fail readiness unless the engine enforces both the JSON shape and string formats."""
        shape = await self._probe_completion(CONSTRAINT_PROBE_SCHEMA)
        shape_enforced = shape.strip() == f'"{CONSTRAINT_PROBE_VALUE}"'
        answer = await self._probe_completion(FORMAT_PROBE_SCHEMA)
        try:
            value = json.loads(answer)
        except ValueError:
            value = None
        format_enforced = isinstance(value, str) and bool(re.match(FORMAT_PROBE_PATTERN, value))
        if not shape_enforced:
            log.error("the engine does not enforce structured output; refusing traffic")
        elif not format_enforced:
            log.error("the engine does not enforce string patterns; refusing traffic")
        self.constraint_enforced = shape_enforced and format_enforced

    async def _probe_completion(self, schema: dict[str, Any]) -> str:
        completion = await self.engine.complete(
            BASE_MODEL_NAME,
            self._probe_prompter.prompt_ids(PROBE_COMPLAINT),
            schema=schema,
            max_tokens=32,
            stop_token_ids=self.stop_token_ids,
        )
        return completion.text

    async def _probe_adapter(self, served: ServedAdapter) -> None:
        """The probe complaint through a freshly loaded version, with the token budget that
        evaluation gave it: the answer must parse and repeat the values the version extracted
        from it when it was trained (a changed configuration, base or template would not)."""
        budget = answer_budget(served.prompter.tokenizer, PROBE_COMPLAINT, served.schema)
        completion = await self.engine.complete(
            served.lora_name,
            served.prompter.prompt_ids(PROBE_COMPLAINT),
            schema=self.decoding_schema(served, PROBE_COMPLAINT),
            max_tokens=min(budget, self.settings.serve_max_new_tokens),
            stop_token_ids=self.stop_token_ids,
        )
        answer = parse_answer(
            completion.text, served.schema, truncated=completion.finish_reason == "length"
        )
        answer = expand_anchors(answer, PROBE_COMPLAINT, served.schema, served.target_form)
        problems = probe_problems(answer, served.probe_values, served.schema)
        if problems:
            raise AdapterIntegrityError(
                f"adapter {served.reference} failed its probe extraction: " + "; ".join(problems),
                param="adapter",
                code="probe_failed",
            )

    # -- background ------------------------------------------------------------------------------

    async def _poll_engine(self) -> None:
        while True:
            self._check_running_latency()
            try:
                self.engine_waiting = await self.engine.waiting_requests()
                if not self.engine_up:
                    await self._engine_came_up()
                self.engine_up = True
            except TiquError as exc:
                if self.engine_up:
                    log.error("inference engine lost", extra={"error": exc.message})
                self.engine_up = False
            except Exception:
                log.exception("engine poll failed")
                self.engine_up = False
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _engine_came_up(self) -> None:
        log.info("inference engine reachable", extra={"engine_url": self.settings.engine_url})
        if self.constraint_enforced is None:
            await self._check_constraint()
        manager = self._manager()
        await manager.engine_lost(await self.engine.served_models())
        await manager.reconcile()

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL_S)
            if not self.engine_up:
                continue
            try:
                manager = self._manager()
                await manager.engine_lost(await self.engine.served_models())
                await manager.reconcile()
            except Exception:
                log.exception("adapter reconciliation failed")

    def _follow_promotions(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: turn `adapter.promoted` events into activations on the event loop."""
        while not self._stopping.is_set():
            try:
                for event in subscribe_events(timeout=5.0):
                    if self._stopping.is_set():
                        return
                    if event.get("type") == "adapter.promoted":
                        data = event.get("data") or {}
                        asyncio.run_coroutine_threadsafe(
                            self._on_promoted(str(data.get("name")), str(data.get("version"))),
                            loop,
                        )
            except redis.RedisError:
                self._stopping.wait(2.0)

    async def _on_promoted(self, name: str, version: str) -> None:
        manager = self._manager()
        if manager.policy.names and name not in manager.policy.names:
            return
        # The event only says "look again": the store this gateway serves from says which version
        # is promoted (events of another deployment sharing the Redis server may reach us too).
        alias = await asyncio.to_thread(read_alias, self.store, name)
        if alias is None or alias["version"] != version:
            log.info(
                "promotion event does not match this store's alias; ignored",
                extra={"adapter": name, "version": version},
            )
            return
        manager.forget_refusal(name, version)
        try:
            await manager.activate(name, version)
        except TiquError as exc:
            log.error(
                "promoted adapter refused; the previous version keeps serving",
                extra={"adapter": name, "version": version, "error": exc.message},
            )
