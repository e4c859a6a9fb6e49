"""Review: page through a distill run's rejected rows and accept corrected labels by hand.

Each rejected row shows why it was rejected, the teacher's raw answers, and the complaint with
the values of the first readable answer highlighted where they occur verbatim. A person corrects
the fields and accepts: the label is checked as distillation checks a teacher's (typed and
grounded) and kept in a versioned label set (`shared.labelsets`) that `tiqu train --labels`
trains on beside a distill run. Complaint text is shown to admins only and never logged.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.distill.parsing import AnswerParseError, parse_teacher_json
from services.distill.run import load_run_manifest
from services.serve.console.playground import Segment, highlight
from services.serve.console.web import (
    CONSOLE_PATH,
    PageError,
    StoreDep,
    Visitor,
    VisitorDep,
    is_htmx,
    page,
    require,
)
from services.serve.protocol import FieldSpan
from services.train.data import RUN_ID
from shared import labelsets
from shared.api import KeyScope
from shared.errors import InvalidInputError, NotFoundError
from shared.schema import ExtractionSchema, get_schema
from shared.store import Layout, Store

log = logging.getLogger(__name__)

REVIEW_PATH = f"{CONSOLE_PATH}/review"
PAGE_SIZE = 10
LABELSET_FIELD = "labelset"


@dataclass(frozen=True)
class RunRejections:
    """A distill run with rejected rows, counted by reason."""

    dataset_id: str
    run_id: str
    created_at: str | None
    rejected: int
    by_reason: dict[str, int]


@dataclass(frozen=True)
class Rejection:
    """A rejected row as the page shows it."""

    position: int
    id: str
    reason: str
    field: str | None
    detail: str | None
    answers: list[str]
    segments: list[Segment]
    values: dict[str, str]
    accepted_in: str | None
    # Ids outside the store's id pattern cannot be addressed by the accept route.
    correctable: bool


@dataclass(frozen=True)
class Outcome:
    """What accepting a correction answered: the version holding it, or why it was refused."""

    saved: str | None = None
    refusal: str | None = None


def exact_spans(text: str, values: Mapping[str, Any]) -> dict[str, FieldSpan | None]:
    """Where each field's value first occurs verbatim in `text` (None: a non-string value or
    one the text does not hold as written)."""
    spans: dict[str, FieldSpan | None] = {}
    for name, value in values.items():
        start = text.find(value) if isinstance(value, str) and value else -1
        spans[name] = (
            FieldSpan(start=start, end=start + len(value), status="exact") if start >= 0 else None
        )
    return spans


def first_parsed(answers: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The JSON object of the first teacher answer that holds one, read as distillation reads it."""
    for answer in answers:
        try:
            return parse_teacher_json(answer.get("content"))
        except AnswerParseError:
            continue
    return None


def form_values(label: Mapping[str, Any] | None, field_names: Sequence[str]) -> dict[str, str]:
    """A label as the correction form's inputs hold it: null as empty, non-strings as JSON."""
    values = {}
    for name in field_names:
        value = (label or {}).get(name)
        if value is None or isinstance(value, str):
            values[name] = value or ""
        else:
            values[name] = json.dumps(value, ensure_ascii=False)
    return values


def runs_with_rejections(store: Store) -> list[RunRejections]:
    """Every finished distill run with at least one rejected row, newest first."""
    found = []
    for dataset_id in store.children(Layout.datasets_dir()):
        for run_id in store.children(Layout.distill_runs_dir(dataset_id)):
            manifest = load_run_manifest(store, dataset_id, run_id)
            counts = (manifest or {}).get("counts", {})
            if not counts.get("rejected"):
                continue
            by_reason = {r: n for r, n in counts.get("rejected_by_reason", {}).items() if n}
            found.append(
                RunRejections(
                    dataset_id, run_id, manifest.get("created_at"), counts["rejected"], by_reason
                )
            )
    return sorted(found, key=lambda run: run.created_at or "", reverse=True)


def _rejected_lines(store: Store, dataset_id: str, run_id: str) -> list[str]:
    """The lines of a finished run's rejected.jsonl; an unknown run is a 404 page."""
    if not (RUN_ID.fullmatch(dataset_id) and RUN_ID.fullmatch(run_id)):
        raise PageError(404, "Not found", "There is no distill run at this address.")
    key = Layout.distill_run(dataset_id, run_id, "rejected.jsonl")
    if load_run_manifest(store, dataset_id, run_id) is None or not store.exists(key):
        raise PageError(404, "Not found", f"Distill run {run_id} of {dataset_id} is not there.")
    return [line for line in store.read_bytes(key).decode("utf-8").splitlines() if line.strip()]


def _rejection(
    position: int,
    row: Mapping[str, Any],
    accepted: Mapping[str, tuple[str, dict[str, Any]]],
    field_names: Sequence[str],
) -> Rejection:
    answers = row.get("answers") or []
    parsed = first_parsed(answers)
    accepted_in, accepted_label = accepted.get(row["id"], (None, None))
    return Rejection(
        position=position,
        id=row["id"],
        reason=row.get("reason", ""),
        field=row.get("field"),
        detail=row.get("detail"),
        answers=[
            a["content"]
            if a.get("content") is not None
            else f"{a.get('error_kind')}: {a.get('error')}"
            for a in answers
        ],
        segments=highlight(row["text"], exact_spans(row["text"], parsed or {})),
        values=form_values(accepted_label or parsed, field_names),
        accepted_in=accepted_in,
        correctable=bool(RUN_ID.fullmatch(row["id"])),
    )


def _review_page(
    request: Request,
    store: Store,
    dataset_id: str,
    run_id: str,
    number: int,
    *,
    status_code: int = 200,
    replies: Mapping[str, tuple[Outcome, dict[str, str]]] | None = None,
) -> HTMLResponse:
    """Page `number` of a run's rejected rows; `replies` shows, by row id, what accepting a
    correction answered and the values sent."""
    lines = _rejected_lines(store, dataset_id, run_id)
    pages = max(1, math.ceil(len(lines) / PAGE_SIZE))
    number = min(max(number, 1), pages)
    first = (number - 1) * PAGE_SIZE
    accepted = labelsets.accepted_rows(store, dataset_id, run_id)
    schema = get_schema()
    rows = [
        _rejection(first + offset + 1, json.loads(line), accepted, schema.field_names)
        for offset, line in enumerate(lines[first : first + PAGE_SIZE])
    ]
    return page(
        request,
        "review_run.html",
        status_code=status_code,
        dataset_id=dataset_id,
        run_id=run_id,
        rows=rows,
        total=len(lines),
        number=number,
        pages=pages,
        default_labelset=labelsets.DEFAULT_NAME,
        replies=replies or {},
        **_form_fields(schema),
    )


def _form_fields(schema: ExtractionSchema) -> dict[str, Any]:
    """What the correction form needs of the schema: its fields, and which hold free text
    (a text area rather than a one-line input)."""
    return {
        "field_names": schema.field_names,
        "long_fields": {spec.name for spec in schema.fields if spec.grounding == "coverage"},
    }


def _find_row(lines: Sequence[str], row_id: str) -> tuple[int, dict[str, Any]]:
    for position, line in enumerate(lines, start=1):
        row = json.loads(line)
        if row.get("id") == row_id:
            return position, row
    raise PageError(404, "Not found", f"The run has no rejected row {row_id}.")


def _accept(
    store: Store,
    dataset_id: str,
    run_id: str,
    row_id: str,
    name: str,
    values: Mapping[str, str],
) -> tuple[int, Outcome]:
    """Accept a correction of a rejected row: its position in the file, and the outcome."""
    if not RUN_ID.fullmatch(row_id):
        raise PageError(404, "Not found", "There is no rejected row at this address.")
    position, row = _find_row(_rejected_lines(store, dataset_id, run_id), row_id)
    source = labelsets.Source(dataset_id, run_id, row_id)
    try:
        saved = labelsets.accept(store, name, row["text"], values, source)
    except InvalidInputError as exc:
        return position, Outcome(refusal=exc.message)
    log.info(
        "correction accepted",
        extra={"labelset": saved.reference, "run_id": run_id, "row_id": row_id},
    )
    return position, Outcome(saved=saved.reference)


def _require_admin(visitor: Visitor) -> None:
    require(visitor, KeyScope.admin, "reviewing rejected rows")


router = APIRouter(prefix=REVIEW_PATH, include_in_schema=False)


@router.get("")
def review_index(request: Request, visitor: VisitorDep, store: StoreDep) -> HTMLResponse:
    _require_admin(visitor)
    sets = [(name, labelsets.versions(store, name)) for name in labelsets.names(store)]
    return page(
        request,
        "review_runs.html",
        runs=runs_with_rejections(store),
        labelsets=[(name, known[-1], len(known)) for name, known in sets if known],
    )


# Before the run page, whose two path segments would match this address too.
@router.get("/labelsets/{name}")
def labelset_page(
    request: Request, name: str, visitor: VisitorDep, store: StoreDep
) -> HTMLResponse:
    _require_admin(visitor)
    try:
        reference = labelsets.pin(store, name)
    except (InvalidInputError, NotFoundError) as exc:
        raise PageError(404, "Not found", f"There is no label set {name!r}.") from exc
    version = reference.partition("@")[2]
    return page(
        request,
        "labelset.html",
        name=name,
        version=version,
        reference=reference,
        rows=labelsets.read_rows(store, name, version),
        manifest=labelsets.read_manifest(store, name, version),
        field_names=get_schema().field_names,
    )


@router.get("/{dataset_id}/{run_id}")
def review_run(
    request: Request,
    dataset_id: str,
    run_id: str,
    visitor: VisitorDep,
    store: StoreDep,
    number: Annotated[int, Query(alias="page")] = 1,
) -> HTMLResponse:
    _require_admin(visitor)
    return _review_page(request, store, dataset_id, run_id, number)


@router.post("/{dataset_id}/{run_id}/{row_id}")
async def accept_correction(
    request: Request,
    dataset_id: str,
    run_id: str,
    row_id: str,
    visitor: VisitorDep,
    store: StoreDep,
) -> Response:
    _require_admin(visitor)
    form = await request.form()
    schema = get_schema()
    values = {name: str(form.get(name, "")) for name in schema.field_names}
    name = str(form.get(LABELSET_FIELD, "")).strip() or labelsets.DEFAULT_NAME
    position, outcome = await run_in_threadpool(
        _accept, store, dataset_id, run_id, row_id, name, values
    )
    number = math.ceil(position / PAGE_SIZE)
    if is_htmx(request):
        # The row's form again, with the answer above its button (htmx swaps 2xx answers only).
        return page(
            request,
            "review_form.html",
            dataset_id=dataset_id,
            run_id=run_id,
            row={"id": row_id, "position": position, "values": values, "correctable": True},
            **_form_fields(schema),
            labelset_name=name,
            number=number,
            outcome=outcome,
        )
    if outcome.saved is not None:
        return RedirectResponse(
            f"{REVIEW_PATH}/{dataset_id}/{run_id}?page={number}#row-{position}", status_code=303
        )
    return await run_in_threadpool(
        lambda: _review_page(
            request,
            store,
            dataset_id,
            run_id,
            number,
            status_code=422,
            replies={row_id: (outcome, values)},
        )
    )
