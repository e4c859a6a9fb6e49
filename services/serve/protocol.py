"""Request and response bodies of the extraction gateway."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.jobs import JobState

if TYPE_CHECKING:
    from services.serve.gateway import Result

ADAPTER_REF = r"^[a-z0-9][a-z0-9_\-]{0,62}([@:/]v[1-9][0-9]{0,8})?$"
MAX_BATCH_TEXTS = 64


def _encodable(text: str) -> str:
    """JSON can carry lone surrogates (`"\\ud800"`), which no tokenizer or log can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from exc
    return text


Text = Annotated[str, AfterValidator(_encodable)]


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description="The complaint text.")
    adapter: str | None = Field(
        None,
        pattern=ADAPTER_REF,
        description="`name` (its promoted version) or `name@v3`; default: the default adapter.",
    )


class ExtractBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[Text] = Field(min_length=1, max_length=MAX_BATCH_TEXTS)
    adapter: str | None = Field(None, pattern=ADAPTER_REF)


class FieldSpan(BaseModel):
    start: int | None = Field(description="Offset of its first character; null if not found.")
    end: int | None = Field(description="Offset just past its last character; null if not found.")
    status: Literal["exact", "normalized", "fuzzy", "not_found"] = Field(
        description="`exact`: text[start:end] is the value; `normalized`: it is once cleaned "
        "(full width, markup, phone separators); `fuzzy`: a free-text value mostly made of "
        "text[start:end]; `not_found`: nowhere in the text, so the value was replaced by null."
    )


class TokenUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the prompt (instruction and cleaned text).")
    completion_tokens: int = Field(description="Tokens the model decoded for the answer.")


class ExtractResponse(BaseModel):
    fields: dict[str, Any] = Field(
        description="Every schema field; null when the text does not give it."
    )
    grounded: dict[str, bool | None] = Field(
        description="Per field: the model's value occurs in the text (false: it did not and was "
        "replaced by null; null: the model gave no value)."
    )
    spans: dict[str, FieldSpan | None] = Field(
        default_factory=dict,
        description="Per field: where the value sits in the text as sent (character offsets, "
        "end exclusive) and how it was found; null when the model gave no value.",
    )
    adapter: str = Field(description="The adapter version that answered, `name@version`.")
    valid_json: bool = Field(description="The model's whole answer was schema-valid JSON.")
    truncated: bool = Field(description="The token budget cut the answer; its whole fields kept.")
    usage: TokenUsage = Field(description="What the extraction cost the engine, in tokens.")
    latency_ms: float

    @classmethod
    def of(cls, result: Result, started: float) -> ExtractResponse:
        """The answer to a request that started at `started` (time.perf_counter)."""
        extraction = result.extraction
        return cls(
            fields=extraction.fields,
            grounded=extraction.grounded,
            spans={
                name: None if span is None else FieldSpan(**span.as_dict())
                for name, span in extraction.spans.items()
            },
            adapter=result.adapter,
            valid_json=extraction.valid_json,
            truncated=extraction.truncated,
            usage=TokenUsage(
                prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens
            ),
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )


class ExtractBatchResponse(BaseModel):
    results: list[ExtractResponse]
    latency_ms: float


class AdapterPublic(BaseModel):
    name: str
    version: str
    reference: str
    engine_name: str = Field(description="The immutable name vLLM serves this version under.")
    promoted: bool = Field(description="The alias of `name` points at this version.")
    default: bool = Field(description="Requests without `adapter` go to this version.")
    loaded_at: datetime
    in_flight: int


class AdapterList(BaseModel):
    adapters: list[AdapterPublic]


class BatchJobPublic(BaseModel):
    job_id: str
    state: JobState
    updated_at: datetime
    request: dict[str, Any]
    progress: dict[str, Any]
    output: str | None = Field(None, description="Store key of output.jsonl once ready.")
    manifest: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
