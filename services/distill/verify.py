"""Judging teacher answers: parse, validate against the schema, vote, and check fidelity.

Teachers invent data, so a label is only accepted when every value of an `exact` field occurs in
the complaint and every `coverage` field is mostly made of it (`shared.normalize`). With several
samples per row the fields are voted on; a row whose winning value got too few votes is rejected
rather than guessed. Every rejection names its reason, so nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.distill.parsing import AnswerParseError, parse_teacher_json
from shared.normalize import MIN_COVERAGE, coverage, first_ungrounded, normalize_value, trimmed
from shared.schema import ExtractionSchema, FieldSpec


class RejectReason(StrEnum):
    """Why a row has no label."""

    TEACHER_ERROR = "teacher_error"
    PARSE_ERROR = "parse_error"
    SCHEMA = "schema"
    LOW_AGREEMENT = "low_agreement"
    UNGROUNDED = "ungrounded"


@dataclass(frozen=True)
class TeacherAnswer:
    """One teacher sample for a row: the raw answer, or the kind of error that prevented it."""

    content: str | None
    error_kind: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A row's outcome: a label with per-field agreement, or a reason to reject it."""

    label: dict[str, Any] | None
    agreement: dict[str, float] = dataclasses.field(default_factory=dict)
    reason: RejectReason | None = None
    field: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None


def _rejected(reason: RejectReason, detail: str) -> Verdict:
    return Verdict(None, reason=reason, detail=detail)


def read_answer(answer: TeacherAnswer, schema: ExtractionSchema) -> dict[str, Any] | Verdict:
    """The schema-valid label in one answer (strings trimmed, "" as null), or why there is none."""
    if answer.content is None:
        return _rejected(RejectReason.TEACHER_ERROR, answer.error_kind or "unknown")
    try:
        value = parse_teacher_json(answer.content)
    except AnswerParseError as exc:
        return _rejected(RejectReason.PARSE_ERROR, str(exc))
    cleaned = trimmed(value)
    errors = schema.errors(cleaned)
    if errors:
        return _rejected(RejectReason.SCHEMA, errors[0][:500])
    return {name: cleaned.get(name) for name in schema.field_names}


def _same(spec: FieldSpec, a: Any, b: Any) -> bool:
    """Whether two values of a field count as the same answer in a vote."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    if spec.grounding == "coverage":
        # Free text: samples quote slightly different spans; mostly the same words is agreement.
        return coverage(a, b) >= MIN_COVERAGE and coverage(b, a) >= MIN_COVERAGE
    return normalize_value(a, spec.normalize) == normalize_value(b, spec.normalize)


def vote(
    labels: Sequence[dict[str, Any]], samples: int, schema: ExtractionSchema
) -> tuple[dict[str, Any], dict[str, float]]:
    """Per field, the value most samples agree with, and the share of all `samples` agreeing.

    Values are compared normalized (`shared.normalize`); ties go to the earliest sample, and the
    winning value is written as that sample wrote it. Samples that produced no valid label count
    as disagreeing.
    """
    label: dict[str, Any] = {}
    agreement: dict[str, float] = {}
    for spec in schema.fields:
        values = [candidate[spec.name] for candidate in labels]
        support = [sum(_same(spec, value, other) for other in values) for value in values]
        best = max(range(len(values)), key=lambda i: (support[i], -i))
        label[spec.name] = values[best]
        agreement[spec.name] = round(support[best] / samples, 4)
    return label, agreement


def judge(
    answers: Sequence[TeacherAnswer], text: str, schema: ExtractionSchema, threshold: float
) -> Verdict:
    """Accept or reject a row from its teacher samples.

    Checked in order: at least one usable answer (else the first answer's failure), agreement of
    every field at least `threshold`, and fidelity of every value to `text`.
    """
    readings = [read_answer(answer, schema) for answer in answers]
    labels = [r for r in readings if isinstance(r, dict)]
    if not labels:
        first = readings[0]
        assert isinstance(first, Verdict)
        return first
    label, agreement = vote(labels, len(answers), schema)
    for spec in schema.fields:
        if agreement[spec.name] < threshold:
            return Verdict(
                None,
                agreement,
                RejectReason.LOW_AGREEMENT,
                spec.name,
                f"{agreement[spec.name]:.2f} < {threshold:g}",
            )
    ungrounded = first_ungrounded(schema, label, text)
    if ungrounded is not None:
        return Verdict(None, agreement, RejectReason.UNGROUNDED, ungrounded)
    return Verdict(label, agreement)
