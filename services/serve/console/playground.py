"""Playground: paste a complaint, pick an adapter, see each field highlighted at its span."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from services.serve.console.web import (
    CONSOLE_PATH,
    PageError,
    StoreDep,
    VisitorDep,
    gateway_of,
    is_htmx,
    page,
    require,
)
from services.serve.protocol import ExtractResponse, FieldSpan
from shared import adapters as registry
from shared.api import KeyScope
from shared.errors import TiquError
from shared.store import Store

# Contact fields are painted over `question`, whose fuzzy span may enclose them.
_BACKGROUND_FIELD = "question"


@dataclass(frozen=True)
class Segment:
    """A run of the text belonging to one field's span (or to none)."""

    text: str
    field: str | None


def highlight(text: str, spans: Mapping[str, FieldSpan | None]) -> list[Segment]:
    """`text` cut into runs by the field whose span covers them; where spans overlap, a contact
    field wins over `question`."""
    owner: list[str | None] = [None] * len(text)
    ordered = sorted(spans.items(), key=lambda item: item[0] != _BACKGROUND_FIELD)
    for name, span in ordered:
        if span is None or span.start is None or span.end is None:
            continue
        for index in range(max(span.start, 0), min(span.end, len(text))):
            owner[index] = name
    segments: list[Segment] = []
    start = 0
    for index in range(1, len(text) + 1):
        if index == len(text) or owner[index] != owner[start]:
            segments.append(Segment(text[start:index], owner[start]))
            start = index
    return segments


def adapter_choices(store: Store) -> list[str]:
    """What the visitor may ask for: each registered name (its promoted version), then each
    version. Versions the gateway does not serve answer with the reason."""
    choices: list[str] = []
    for name in registry.names(store):
        choices.append(name)
        choices.extend(f"{name}@{version}" for version in registry.versions(store, name))
    return choices


router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False)


@router.get("/playground")
def playground(request: Request, visitor: VisitorDep, store: StoreDep) -> HTMLResponse:
    require(visitor, KeyScope.extract, "the playground")
    return page(request, "playground.html", choices=adapter_choices(store), text="", adapter="")


@router.post("/playground")
async def extract(
    request: Request,
    visitor: VisitorDep,
    store: StoreDep,
    text: Annotated[str, Form(max_length=100_000)] = "",
    adapter: Annotated[str, Form(max_length=80)] = "",
) -> HTMLResponse:
    require(visitor, KeyScope.extract, "the playground")
    gateway = gateway_of(request)
    started = time.perf_counter()
    context: dict[str, object] = {"text": text, "adapter": adapter}
    status = 200
    try:
        if not text.strip():
            raise PageError(422, "Nothing to extract", "Paste a complaint first.")
        results = await gateway.extract_many([text], adapter or None)
    except (TiquError, PageError) as exc:
        status = exc.status_code if isinstance(exc, TiquError) else exc.status
        context["error"] = exc.message if isinstance(exc, PageError) else str(exc)
    else:
        answer = ExtractResponse.of(results[0], started)
        context.update(
            answer=answer,
            segments=highlight(text, answer.spans),
            raw_json=answer.model_dump_json(indent=2),
        )
    if is_htmx(request):
        # htmx swaps only 2xx answers in: a refusal is shown in the result area.
        return page(request, "playground_result.html", **context)
    return page(
        request, "playground.html", status_code=status, choices=adapter_choices(store), **context
    )
