"""Anchored answers: long copied fields written as their first and last characters only.

Most of the tokens a student decodes copy the complaint's `question` out of the text, one token
at a time. In the `anchors` target form a field with `coverage` grounding (the free-text fields)
is answered as `head⋯tail`: its first and last `ANCHOR_CHARS` characters around a mark (the
halves of a shorter value). Serving and evaluation expand it back against the text the model
read: from the first occurrence of the head to the first occurrence of the tail after it, less
the clauses inside that only give the answer's own contact details (the labelling guide keeps
them out of the question).

Training renders targets with `anchored` (through `shared.prompts.student_target`) and serving
and evaluation expand with `expand_answer`, so the form is defined once, here. Which form an
adapter was trained with is recorded in its manifest (`hyperparameters.target_form`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from shared.schema import ExtractionSchema

TargetForm = Literal["copy", "anchors"]
TARGET_FORMS: tuple[TargetForm, ...] = ("copy", "anchors")
# U+22EF: NFKC keeps it and complaint texts practically never hold it.
ANCHOR_MARK = "⋯"
ANCHOR_CHARS = 6
# What the decoder may write for an anchored field: head⋯tail, of any length. A model reads
# tokens, not characters, so it is not held to the trained length: heads and tails of other
# lengths expand the same way, and a model that would rather go on copying still has to close
# with the mark and a tail, which expands right. (Bounded lengths, `{1,6}`, would cost xgrammar
# 0.2-0.5 s more per request to compile with Gemma's 262k-token vocabulary, against 0.03-0.09 s.)
ANCHORED_PATTERN = rf"^[^{ANCHOR_MARK}]+{ANCHOR_MARK}[^{ANCHOR_MARK}]+$"


def anchored_fields(schema: ExtractionSchema) -> tuple[str, ...]:
    """The fields the `anchors` form shortens: the free-text ones (`coverage` grounding)."""
    return tuple(spec.name for spec in schema.fields if spec.grounding == "coverage")


def anchored(value: str) -> str:
    """`value` as the `anchors` form writes it: its first and last `ANCHOR_CHARS` characters,
    or its two halves when it is shorter (one form for every value: the model never has to
    choose between copying and anchoring)."""
    if len(value) < 2:
        return value
    head = min(ANCHOR_CHARS, (len(value) + 1) // 2)
    tail = min(ANCHOR_CHARS, len(value) - head)
    return value[:head] + ANCHOR_MARK + value[-tail:]


def is_anchored(value: str) -> bool:
    head, mark, tail = value.partition(ANCHOR_MARK)
    return bool(mark and head and tail) and ANCHOR_MARK not in tail


def expand(value: str, text: str) -> str | None:
    """The stretch of `text` an anchored `value` stands for (a whole value stays as it is);
    None when the head, or the tail after it, is not in the text."""
    if not is_anchored(value):
        return value
    head, _, tail = value.partition(ANCHOR_MARK)
    start = text.find(head)
    if start < 0:
        return None
    end = text.find(tail, start + len(head))
    if end < 0:
        return None
    return text[start : end + len(tail)]


# What ends a clause in cleaned text (NFKC folds full-width commas, colons and brackets).
_CLAUSE_ENDS = ",;。!?、\n"
_OPEN, _CLOSE = "([【", ")]】"
# Characters a contact clause may hold before its value: a label such as "收货地址是", "回电请打".
_CONTACT_LABEL_CHARS = 8


def _clause_around(span: str, start: int, end: int) -> tuple[int, int]:
    """The clause of `span` holding [start, end): from after the previous clause end or
    opening bracket, up to and including the next clause end (a closing bracket is kept)."""
    before = max(span.rfind(ch, 0, start) for ch in _CLAUSE_ENDS + _OPEN) + 1
    after = [i for i in (span.find(ch, end) for ch in _CLAUSE_ENDS + _CLOSE) if i >= 0]
    stop = min(after, default=len(span))
    return before, stop + (stop < len(span) and span[stop] not in _CLOSE)


def without_contact_clauses(span: str, values: list[str]) -> str:
    """A free-text span without the clauses that only give one of `values` (the answer's own
    contact details, which the labelling guide leaves out of the question even where the
    complainant wrote them inside it), and without the brackets such removals empty."""
    for value in values:
        at = span.find(value)
        if not value or at < 0:
            continue
        start, stop = _clause_around(span, at, at + len(value))
        label, rest = span[start:at], span[at + len(value) : stop]
        # "收货地址是X," is a contact clause; "X的电梯又困人了," is the complaint.
        if len(label) <= _CONTACT_LABEL_CHARS and not rest.strip(_CLAUSE_ENDS + " "):
            span = span[:start] + span[stop:]
    for opening, closing in zip(_OPEN, _CLOSE, strict=True):
        span = span.replace(opening + closing, "")
    return span.strip()


def target_fields(
    label: Mapping[str, Any], schema: ExtractionSchema, form: TargetForm
) -> dict[str, Any]:
    """A label's values in schema order, as the student writes them in `form`."""
    ordered = {name: label.get(name) for name in schema.field_names}
    if form == "anchors":
        for name in anchored_fields(schema):
            if isinstance(ordered[name], str):
                ordered[name] = anchored(ordered[name])
    return ordered


def expand_answer(
    fields: Mapping[str, Any], text: str, schema: ExtractionSchema, form: TargetForm
) -> dict[str, Any]:
    """An answer in `form` with its anchored fields expanded against `text` (the cleaned text
    the model read); an anchor that is not in the text becomes null."""
    expanded = dict(fields)
    if form != "anchors":
        return expanded
    free_text = anchored_fields(schema)
    contacts = [v for n, v in fields.items() if n not in free_text and isinstance(v, str)]
    for name in free_text:
        value = expanded.get(name)
        if isinstance(value, str) and is_anchored(value):
            stretch = expand(value, text)
            expanded[name] = stretch and (without_contact_clauses(stretch, contacts) or None)
    return expanded


def anchored_decoding_schema(
    decoding: dict[str, Any], schema: ExtractionSchema, form: TargetForm
) -> dict[str, Any]:
    """A decoding schema whose anchored fields may only take the `anchors` form's shape, so a
    model never decodes a long copy it was not trained to write."""
    if form != "anchors":
        return decoding
    properties = dict(decoding["properties"])
    for name in anchored_fields(schema):
        properties[name] = {**properties[name], "pattern": ANCHORED_PATTERN}
    return {**decoding, "properties": properties}
