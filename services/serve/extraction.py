"""Turning a complaint into a prompt and a model answer into checked fields (pure, no I/O).

The model reads the complaint cleaned exactly as ingest cleaned its training data
(`shared.cleaning`). The prompt is the training prompt, byte for byte: the shared
`student_messages` rendered by the shared chat function into token ids. The answer, constrained
by the engine to the schema's types and formats, is parsed and validated again here; an answer cut
off by the token budget keeps the fields it completed. Each value is checked against the cleaned
text with the shared grounding rules and located in the client's original text (`shared.spans`);
a value that does not occur in the text is not returned (a small model that copies must never
invent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shared import adapters
from shared.anchors import TargetForm, expand_answer
from shared.chat import encode_prompt
from shared.cleaning import CleanedText
from shared.json_scan import json_characters
from shared.normalize import field_grounded
from shared.prompts import student_messages
from shared.schema import ExtractionSchema
from shared.spans import NOT_FOUND, Span, locate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Prompter:
    """Prompts of one schema for one base model's tokenizer."""

    tokenizer: PreTrainedTokenizerBase
    schema: ExtractionSchema

    def prompt_ids(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, student_messages(text, self.schema))


@dataclass(frozen=True)
class Answer:
    """What the model answered, after parsing and validation."""

    fields: dict[str, Any]
    # The whole answer was one schema-valid JSON object (nothing repaired or dropped).
    valid_json: bool
    # The token budget ran out before the object closed; completed fields were kept.
    truncated: bool


@dataclass(frozen=True)
class Extraction:
    fields: dict[str, Any]
    # Per field: the model's value occurs in the text (None: the model gave no value).
    grounded: dict[str, bool | None]
    # Per field: where the value sits in the original text (None: the model gave no value).
    spans: dict[str, Span | None]
    valid_json: bool
    truncated: bool


def parse_answer(text: str, schema: ExtractionSchema, *, truncated: bool) -> Answer:
    """The fields of a constrained answer; what is missing or breaks the schema becomes null."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and not schema.errors(value):
        return Answer(
            fields={n: value.get(n) for n in schema.field_names}, valid_json=True, truncated=False
        )
    partial = value if isinstance(value, dict) else completed_members(text)
    fields = schema.empty()
    for name in schema.field_names:
        if name in partial and schema.value_fits(name, partial[name]):
            fields[name] = partial[name]
    return Answer(fields=fields, valid_json=False, truncated=truncated)


def expand_anchors(
    answer: Answer, cleaned_text: str, schema: ExtractionSchema, form: TargetForm
) -> Answer:
    """The answer with the fields an adapter trained on the `anchors` form wrote as their ends
    expanded into the stretch of the cleaned text they stand for."""
    if form == "copy":
        return answer
    return replace(answer, fields=expand_answer(answer.fields, cleaned_text, schema, form))


def probe_problems(
    answer: Answer, expected: Mapping[str, str], schema: ExtractionSchema
) -> list[str]:
    """Why an answer to the registry's probe complaint shows a version that does not extract as
    it did when trained (empty: it does): an answer that is no JSON object of the schema, or a
    value it extracted right then (`expected`) now missing or another."""
    problems = []
    if not answer.valid_json and not answer.truncated:
        problems.append("the answer is no JSON object of its schema")
    matched = adapters.probe_matches(answer.fields, schema)
    problems += [
        f"its {name} is not the complaint's, which it extracted when trained"
        for name in expected
        if name not in matched
    ]
    return problems


def completed_members(text: str) -> dict[str, Any]:
    """The members of a JSON object that closed before `text` was cut off.

    A constrained decoder's output is always a prefix of valid JSON, so everything up to the
    last comma at the object's top level is whole.
    """
    depth = 0
    last_comma = None
    for index, char, structural in json_characters(text):
        if not structural:
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 1:
            last_comma = index
    if last_comma is None:
        return {}
    try:
        value = json.loads(text[:last_comma] + "}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def check_grounding(
    answer: Answer, original: str, cleaned: CleanedText, schema: ExtractionSchema
) -> Extraction:
    """Keep the values that pass their field's grounding rule against the cleaned text, with
    their spans in `original`; null the others (their span `not_found`)."""
    fields: dict[str, Any] = {}
    grounded: dict[str, bool | None] = {}
    spans: dict[str, Span | None] = {}
    for spec in schema.fields:
        value = answer.fields.get(spec.name)
        if value is None:
            fields[spec.name], grounded[spec.name], spans[spec.name] = None, None, None
            continue
        span = None
        if isinstance(value, str):
            ok = field_grounded(spec, value, cleaned.text)
            span = locate(value, spec, original, cleaned) if ok else NOT_FOUND
            ok = span.status != "not_found"
        else:
            ok = True
        fields[spec.name] = value if ok else None
        grounded[spec.name] = ok
        spans[spec.name] = span
    return Extraction(
        fields=fields,
        grounded=grounded,
        spans=spans,
        valid_json=answer.valid_json,
        truncated=answer.truncated,
    )
