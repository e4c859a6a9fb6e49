"""`tiqu teacher-stub`: an offline stand-in for a teacher LLM that speaks the OpenAI protocol.

It is NOT a language model. It answers extraction requests from ground-truth label files written
by `tiqu sample` (`<stem>.labels.jsonl`), so the demo and the tests run without internet, and it
misbehaves on purpose, at configurable rates, the way real providers do.

Protocol: `GET /v1/models`, `POST /v1/chat/completions` (a real `chat.completion` object with
`usage`), Bearer auth with OpenAI-style error bodies (401 wrong key, 404 unknown model, 400 bad
request), `GET /healthz`. For tests and benchmarks: `GET /stats` (requests received, by outcome),
`GET /stub/requests` (recent requests: content hash, attempt, outcome, time), `PUT /stub/faults`
(change fault settings live) and `POST /stub/reset` (zero the counters).

Answering: the complaint is the text between `<complaint>` and `</complaint>` in the last user
message (the whole message without them), looked up by its cleaned text (the cleaning of
ingest), raw text, or a whitespace-insensitive form. Unknown text gets all fields null except
`question` = the text. A last user message holding `<augment n="N">` gets a JSON array of N new
complaints from the sample generator (seeded by a hash of the prompt), whose labels the stub
then remembers for later extraction requests.

Fault rule (deterministic): every chat request has a content key, the hash of its model and
messages, and an attempt number n, counting the requests with that key this stub has received
(1 for the first). Then
- n <= fail_first: HTTP 500;
- else one draw u = H(seed, key, n, "transport") in [0, 1) picks at most one transport fault from
  consecutive intervals: [0, r429) 429 with Retry-After, then r500 wide: 500, then rtimeout wide:
  sleep `timeout_sleep_s` before answering, then rmalformed wide: HTTP 200 with a body that is not
  JSON or is cut short, then rdisconnect wide: HTTP 200 announcing the whole body, of which half
  is sent before the connection drops (a stream cut mid-way);
- for an extraction answer, each content fault f (hallucinate, wrong_types, fence, think,
  truncated) applies when H(seed, key, n, f) < rate_f, independently.
H is BLAKE2b of `seed|key|n|name` read as a fraction. A retried request has a new n, hence new
draws, so a request that got a 429 can succeed next time, and the same seed and requests always
meet the same faults. Augmentation answers get transport faults only.
Per request, a header `X-Stub-Faults` (JSON object or `name=value,...`) overrides fault settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from services.distill.teacher import estimate_prompt_tokens, estimate_tokens
from shared.api import create_app
from shared.cleaning import clean_text, clean_texts
from shared.samples import FIELDS, generate_complaints, labels_path_for

__all__ = [
    "COMPLAINT_END",
    "COMPLAINT_START",
    "FAULT_FIELDS",
    "StubConfig",
    "StubServer",
    "StubState",
    "build_stub_app",
    "load_labels",
]

log = logging.getLogger(__name__)

COMPLAINT_START = "<complaint>"
COMPLAINT_END = "</complaint>"
AUGMENT_MARKER = re.compile(r"<augment\s+n\s*=\s*[\"']?(\d+)[\"']?\s*/?>", re.I)
MAX_AUGMENT = 500
REQUEST_LOG_SIZE = 20_000
_META_COLUMNS = frozenset({"id", "text", "style", "kind", "duplicate_of", "injection"})
_WHITESPACE = re.compile(r"[\s\u200b-\u200f\u2060\ufeff]+")
# What only ingest's full cleaning undoes (markup, entities, Cyrillic homoglyphs).
_NEEDS_CLEANING = re.compile(r"[<&\u0400-\u04ff]")

Rate = Field(0.0, ge=0.0, le=1.0)


class StubConfig(BaseModel):
    """What the stand-in knows (label files) and how it misbehaves (rates are 0..1)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[Path] = Field(default_factory=list)
    model: str = "tiqu-stub"
    api_key: str | None = Field("stub-key", description="None or empty: no authentication.")
    seed: int = 0
    latency_ms: float = Field(0.0, ge=0.0)
    latency_jitter_ms: float = Field(0.0, ge=0.0)
    rate_429: float = Rate
    retry_after_s: float = Field(1.0, ge=0.0)
    rate_500: float = Rate
    rate_timeout: float = Rate
    timeout_sleep_s: float = Field(120.0, ge=0.0)
    rate_malformed: float = Rate
    rate_disconnect: float = Rate
    rate_think: float = Rate
    rate_fence: float = Rate
    rate_hallucinate: float = Rate
    rate_wrong_types: float = Rate
    rate_truncated: float = Rate
    fail_first: int = Field(0, ge=0)


FAULT_FIELDS: tuple[str, ...] = tuple(
    name for name in StubConfig.model_fields if name not in ("labels", "model", "api_key")
)
CONTENT_FAULTS: tuple[str, ...] = ("hallucinate", "wrong_types", "fence", "think", "truncated")
Outcome = Literal[
    "ok",
    "rate_limited",
    "server_error",
    "timeout",
    "malformed",
    "disconnected",
    "unauthorized",
    "model_not_found",
    "bad_request",
]

# Invented values for hallucinations; the first one absent from the complaint is used.
_FAKE_NAMES = ("王小明", "李建国", "张伟", "赵敏", "陈静")
_FAKE_PHONES = ("13800138000", "13912345678", "15000000001", "18600001111")
_FAKE_EMAILS = ("zhangwei@example.com", "user123@qq.com", "service@163.com")


def _loose(text: str) -> str:
    """A forgiving lookup key: NFKC, no whitespace or zero-width characters, case-folded."""
    return _WHITESPACE.sub("", unicodedata.normalize("NFKC", text)).casefold()


def _draw(seed: int, key: str, attempt: int, name: str) -> float:
    digest = hashlib.blake2b(f"{seed}|{key}|{attempt}|{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _label_fields(row: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in row.items():
        if key in _META_COLUMNS:
            continue
        # pandas writes missing values as NaN in some paths.
        fields[key] = None if isinstance(value, float) and value != value else value
    return fields


def _read_label_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.name.endswith(".jsonl") and labels_path_for(path).is_file():
        # The export itself was given: its labels lie beside it.
        path = labels_path_for(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist (write one with `tiqu sample`)")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{number}: expected an object with a `text` string")
            yield row


class LabelIndex:
    """Labels by complaint text: exact (cleaned and raw), then whitespace-insensitive."""

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Any]] = {}
        self.loose: dict[str, dict[str, Any]] = {}
        self.rows = 0
        self._cleaned_misses: dict[str, str] = {}

    def add_many(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> None:
        pairs = [(text, fields) for text, fields in rows if text.strip()]
        if not pairs:
            return
        cleaned = clean_texts(pa.array([text for text, _ in pairs], type=pa.string())).to_pylist()
        for (raw, fields), clean in zip(pairs, cleaned, strict=True):
            self.rows += 1
            # First label wins: duplicates in the files carry the same label anyway.
            for key in (clean, raw):
                if key:
                    self.exact.setdefault(key, fields)
                    self.loose.setdefault(_loose(key), fields)

    def find(self, text: str) -> dict[str, Any] | None:
        found = self.exact.get(text)
        if found is None:
            found = self.loose.get(_loose(text))
        if found is not None:
            return found
        if not _NEEDS_CLEANING.search(text):
            return None
        # Markup or homoglyphs: clean like ingest does (about 1 ms, so only when needed).
        if text not in self._cleaned_misses:
            if len(self._cleaned_misses) > 10_000:
                self._cleaned_misses.clear()
            self._cleaned_misses[text] = clean_text(text)
        cleaned = self._cleaned_misses[text]
        found = self.exact.get(cleaned)
        return found if found is not None else self.loose.get(_loose(cleaned))


def load_labels(paths: Iterable[Path]) -> LabelIndex:
    """Index the label files (or the exports they belong to)."""
    index = LabelIndex()
    for path in paths:
        index.add_many((row["text"], _label_fields(row)) for row in _read_label_rows(Path(path)))
    return index


@dataclass
class StubState:
    """Everything the stand-in remembers while it runs."""

    config: StubConfig
    index: LabelIndex
    attempts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    content_faults: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    chat_requests: int = 0
    models_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    augmented_texts: int = 0
    augment_cache: dict[str, list[str]] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    loop: asyncio.AbstractEventLoop | None = None
    stopping: asyncio.Event | None = None

    async def stall(self, seconds: float) -> bool:
        """Sleep like a stuck server; True when cut short because the stub is stopping."""
        if self.stopping is None:
            self.loop = asyncio.get_running_loop()
            self.stopping = asyncio.Event()
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    def wake_stalled(self) -> None:
        """From any thread: end the stalls, so shutting down does not wait for them."""
        if self.loop is not None and self.stopping is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stopping.set)

    def count(self, table: dict[str, int], name: str) -> None:
        table[name] = table.get(name, 0) + 1

    def reset(self) -> None:
        self.attempts.clear()
        self.outcomes.clear()
        self.content_faults.clear()
        self.answers.clear()
        self.requests.clear()
        self.chat_requests = self.models_requests = 0
        self.max_in_flight = self.in_flight

    def stats(self) -> dict[str, Any]:
        return {
            "chat_requests": self.chat_requests,
            "outcomes": dict(self.outcomes),
            "content_faults": dict(self.content_faults),
            "answers": dict(self.answers),
            "models_requests": self.models_requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "distinct_prompts": len(self.attempts),
            "labels": self.index.rows,
            "augmented_texts": self.augmented_texts,
        }


def _error(
    status: int,
    message: str,
    error_type: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _mask_key(key: str) -> str:
    return f"{key[:3]}...{key[-4:]}" if len(key) > 10 else "***"


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        )
    return ""


def _complaint_in(message: str) -> str:
    start = message.rfind(COMPLAINT_START)
    if start < 0:
        return message.strip()
    start += len(COMPLAINT_START)
    end = message.find(COMPLAINT_END, start)
    return (message[start:] if end < 0 else message[start:end]).strip()


def _fault_overrides(header: str | None) -> dict[str, Any]:
    if not header:
        return {}
    header = header.strip()
    if header.startswith("{"):
        data = json.loads(header)
        if not isinstance(data, dict):
            raise ValueError("X-Stub-Faults must be a JSON object")
        pairs = data
    else:
        pairs = {}
        for item in header.split(","):
            name, _, value = item.partition("=")
            pairs[name.strip().replace("-", "_")] = value.strip()
    unknown = set(pairs) - set(FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
    return pairs


def _bad_request(message: str) -> tuple[Response, Outcome]:
    return _error(400, message, "invalid_request_error"), "bad_request"


def _transport_fault(cfg: StubConfig, key: str, attempt: int) -> Outcome | None:
    """The transport fault of this attempt, by the rule in the module docstring."""
    if attempt <= cfg.fail_first:
        return "server_error"
    u = _draw(cfg.seed, key, attempt, "transport")
    edge = 0.0
    choices: tuple[tuple[Outcome, float], ...] = (
        ("rate_limited", cfg.rate_429),
        ("server_error", cfg.rate_500),
        ("timeout", cfg.rate_timeout),
        ("malformed", cfg.rate_malformed),
        ("disconnected", cfg.rate_disconnect),
    )
    for name, rate in choices:
        edge += rate
        if u < edge:
            return name
    return None


def _invent(candidates: tuple[str, ...], text: str, u: float) -> str:
    start = int(u * len(candidates))
    for offset in range(len(candidates)):
        value = candidates[(start + offset) % len(candidates)]
        if value not in text:
            return value
    return candidates[start] + "0"


def _cut_to_tokens(content: str, max_tokens: int) -> str:
    budget = float(max(1, max_tokens))
    for index, char in enumerate(content):
        budget -= 1.0 if ord(char) > 0x2E80 else 0.25
        if budget < 0:
            return content[:index]
    return content


def _extraction_content(
    fields: dict[str, Any], complaint: str, faults: set[str], draw: float
) -> tuple[str, bool]:
    """The answer text, with content faults applied; True when it was truncated."""
    answer = dict(fields)
    if "hallucinate" in faults:
        for name, invented in (
            ("name", _FAKE_NAMES),
            ("phone", _FAKE_PHONES),
            ("email", _FAKE_EMAILS),
        ):
            if name in answer:
                answer[name] = _invent(invented, complaint, draw)
    if "wrong_types" in faults:
        if "phone" in answer:
            digits = "".join(c for c in str(answer["phone"] or "") if c.isdigit())
            answer["phone"] = int(digits[-11:]) if digits else 13800000000
        if "name" in answer:
            answer["name"] = [answer["name"]] if answer["name"] else []
    body = json.dumps(answer, ensure_ascii=False)
    content = body
    if "fence" in faults:
        content = f"好的，以下是提取结果：\n```json\n{content}\n```\n如需调整请告诉我。"
    if "think" in faults:
        content = (
            "<think>\n先通读投诉，找出投诉人本人的姓名、电话、邮箱和地址，"
            f"再摘出描述问题的句子。\n</think>\n\n{content}"
        )
    if "truncated" in faults:
        start = content.index(body)
        return content[: start + max(1, len(body) // 2)], True
    return content, False


def _augment_texts(n: int, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    """N new (raw, cleaned, label) complaints from the sample generator: originals only."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    seen: set[str] = set()
    round_seed = seed
    while len(out) < n:
        labels = generate_complaints(max(2 * n + 16, 32), seed=round_seed).labels
        usable = labels[(labels["kind"] == "original") & ~labels["injection"].astype(bool)]
        raws = [str(t) for t in usable["text"]]
        cleaned = clean_texts(pa.array(raws, type=pa.string())).to_pylist()
        for raw, clean, row in zip(raws, cleaned, usable.to_dict(orient="records"), strict=True):
            if clean and clean not in seen:
                seen.add(clean)
                out.append((raw, clean, _label_fields(row)))
                if len(out) == n:
                    break
        round_seed = (round_seed + 1) % 2**31
    return out


def build_stub_app(config: StubConfig, *, index: LabelIndex | None = None) -> FastAPI:
    """The stand-in's ASGI app; labels are indexed now, before the first request."""
    state = StubState(config=config, index=index or load_labels(config.labels))
    app = create_app(
        service="teacher-stub",
        title="tiqu teacher stub",
        description="Offline OpenAI-compatible stand-in for a teacher LLM (not a real model).",
        max_body_bytes=16 * 1024 * 1024,
        # A stand-in for an external API: it checks the teacher key below, not tiqu's keys.
        api_keys=(),
    )
    app.state.stub = state

    def unauthorized(request: Request) -> JSONResponse | None:
        expected = state.config.api_key
        if not expected:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip() == expected:
            return None
        if not header:
            message = "You didn't provide an API key. Send it as `Authorization: Bearer KEY`."
        else:
            message = f"Incorrect API key provided: {_mask_key(token.strip())}."
        return _error(401, message, "invalid_request_error", "invalid_api_key")

    def model_not_found(model: str) -> JSONResponse:
        return _error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> Response:
        state.models_requests += 1
        refused = unauthorized(request)
        if refused is not None:
            return refused
        return JSONResponse({"object": "list", "data": [_model_card(state.config.model)]})

    @app.get("/v1/models/{model}", tags=["openai"])
    async def get_model(model: str, request: Request) -> Response:
        state.models_requests += 1
        refused = unauthorized(request)
        if refused is not None:
            return refused
        if model != state.config.model:
            return model_not_found(model)
        return JSONResponse(_model_card(model))

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(request: Request) -> Response:
        state.chat_requests += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            response, outcome = await _answer(request)
        finally:
            state.in_flight -= 1
        if outcome is not None:
            state.count(state.outcomes, outcome)
        return response

    async def _answer(request: Request) -> tuple[Response, Outcome | None]:
        """The response, and its outcome when not counted yet (refusals before the faults)."""
        refused = unauthorized(request)
        if refused is not None:
            return refused, "unauthorized"
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _bad_request("The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _bad_request("The body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _bad_request("you must provide a model parameter")
        if model != state.config.model:
            return model_not_found(model), "model_not_found"
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and "role" in m for m in messages)
        ):
            return _bad_request("'messages' must be a non-empty array of {role, content} objects.")
        try:
            overrides = _fault_overrides(request.headers.get("x-stub-faults"))
            cfg = (
                StubConfig.model_validate({**state.config.model_dump(), **overrides})
                if overrides
                else state.config
            )
        except (ValueError, ValidationError) as exc:
            return _bad_request(f"bad X-Stub-Faults header: {exc}")

        canonical = json.dumps([model, messages], ensure_ascii=False, sort_keys=True)
        key = hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()
        attempt = state.attempts.get(key, 0) + 1
        state.attempts[key] = attempt
        fault = _transport_fault(cfg, key, attempt)
        outcome: Outcome = "ok" if fault is None else fault
        state.requests.append(
            {"key": key, "attempt": attempt, "outcome": outcome, "at": time.time()}
        )
        # Counted now: a timeout fault may never answer.
        state.count(state.outcomes, outcome)

        latency = cfg.latency_ms + (2 * _draw(cfg.seed, key, attempt, "latency") - 1) * (
            cfg.latency_jitter_ms
        )
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        if fault == "timeout" and await state.stall(cfg.timeout_sleep_s):
            return _error(503, "The stub is shutting down.", "server_error"), None
        if fault == "rate_limited":
            return _error(
                429,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": f"{cfg.retry_after_s:g}"},
            ), None
        if fault == "server_error":
            return _error(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
            ), None

        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
        prompt = _message_text(last_user.get("content"))
        augment = AUGMENT_MARKER.search(prompt)
        truncated = False
        if augment is not None:
            content = await augment_answer(prompt, int(augment.group(1)), cfg.seed)
            state.count(state.answers, "augment")
        else:
            complaint = _complaint_in(prompt)
            fields = state.index.find(complaint)
            state.count(state.answers, "known" if fields is not None else "unknown")
            names = _schema_fields(body.get("response_format"))
            if fields is None:
                answer = {name: None for name in names}
                if "question" in answer:
                    answer["question"] = complaint
            else:
                answer = {name: fields.get(name) for name in names}
            faults = {
                name
                for name in CONTENT_FAULTS
                if _draw(cfg.seed, key, attempt, name) < getattr(cfg, f"rate_{name}")
            }
            for name in faults:
                state.count(state.content_faults, name)
            content, truncated = _extraction_content(
                answer, complaint, faults, _draw(cfg.seed, key, attempt, "invent")
            )
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < estimate_tokens(content):
            content = _cut_to_tokens(content, max_tokens)
            truncated = True
        prompt_tokens = estimate_prompt_tokens(
            [{"content": _message_text(m.get("content"))} for m in messages]
        )
        completion_tokens = estimate_tokens(content) if content else 0
        completion = {
            "id": f"chatcmpl-stub-{key[:16]}-{attempt}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "tiqu-teacher-stub",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        raw = json.dumps(completion, ensure_ascii=False).encode("utf-8")
        if fault == "malformed":
            if _draw(cfg.seed, key, attempt, "malformed_kind") < 0.5:
                raw = b"upstream connect error or disconnect/reset before headers"
            else:
                raw = raw[: len(raw) // 2]
        if fault == "disconnected":
            return _CutResponse(raw, media_type="application/json"), None
        return Response(raw, media_type="application/json"), None

    async def augment_answer(prompt: str, n: int, seed: int) -> str:
        n = max(1, min(n, MAX_AUGMENT))
        key = hashlib.blake2b(f"{seed}|{n}|{prompt}".encode(), digest_size=16).digest()
        cache_key = key.hex()
        texts = state.augment_cache.get(cache_key)
        if texts is None:
            generator_seed = int.from_bytes(key[:4], "big") % 2**31
            # The generator is CPU work: keep the event loop answering meanwhile.
            made = await asyncio.to_thread(_augment_texts, n, generator_seed)
            state.index.add_many((raw, fields) for raw, _, fields in made)
            texts = [clean for _, clean, _ in made]
            state.augment_cache[cache_key] = texts
            state.augmented_texts += len(texts)
        return json.dumps(texts, ensure_ascii=False)

    @app.get("/stats", tags=["stub"])
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.get("/stub/requests", tags=["stub"])
    async def recent_requests(limit: int = 1000) -> list[dict[str, Any]]:
        return list(state.requests)[-max(0, limit) :]

    @app.post("/stub/reset", tags=["stub"])
    async def reset() -> dict[str, Any]:
        state.reset()
        return state.stats()

    @app.put("/stub/faults", tags=["stub"])
    async def set_faults(request: Request) -> Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict) or set(changes) - set(FAULT_FIELDS):
                raise ValueError(f"expected an object with keys among {', '.join(FAULT_FIELDS)}")
            state.config = StubConfig.model_validate({**state.config.model_dump(), **changes})
        except (ValueError, ValidationError) as exc:
            return _error(422, str(exc), "invalid_input")
        return JSONResponse(state.config.model_dump(mode="json", include=set(FAULT_FIELDS)))

    log.info(
        "teacher stub ready",
        extra={"labels_rows": state.index.rows, "label_files": len(config.labels)},
    )
    return app


class _CutResponse(Response):
    """A 200 whose headers announce the whole body; half of it is sent, then the connection
    drops, as when a proxy or the provider dies mid-answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        # The server closes the connection of an app that fails after its response started.
        raise _Disconnect("teacher stub: connection dropped mid-body (injected fault)")


class _Disconnect(Exception):
    pass


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "tiqu-teacher-stub"}


def _schema_fields(response_format: Any) -> tuple[str, ...]:
    """The answer's fields: those of a json_schema response_format, else the default five."""
    if isinstance(response_format, dict):
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
            names = tuple(str(name) for name in schema["properties"])
            if names:
                return names
    return FIELDS


class StubServer:
    """The stand-in served by uvicorn in a background thread (tests, benchmarks, demos).

    `with StubServer(config) as stub:` then point a client at `stub.base_url`.
    """

    def __init__(
        self,
        config: StubConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        index: LabelIndex | None = None,
    ) -> None:
        self.app = build_stub_app(config, index=index)
        self.host = host
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> StubState:
        return self.app.state.stub  # type: ignore[no-any-return]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, with `/v1`."""
        return f"{self.url}/v1"

    def start(self, timeout: float = 20.0) -> StubServer:
        self._thread = threading.Thread(target=self._server.run, name="teacher-stub", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the teacher stub did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self.state.wake_stalled()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
