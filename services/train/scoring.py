"""Scores of extractions against gold labels: the numbers a user buys the model for.

Per row, the model's answer either parses as one JSON object or counts as invalid (every field
then predicted null). Per field, values are compared after the shared normalization
(`shared.normalize`), so `+86 138-0013-8000` equals `+8613800138000`:

- exact match: the normalized values are equal (both null counts as a match);
- a predicted value where the gold is null is a hallucination, a null where the gold has a
  value an omission, two different values a wrong value;
- precision = correct values / predicted values, recall = correct values / gold values;
- similarity: character-level similarity of the normalized texts (1.0 when both are null),
  which says how close a near-miss free-text field such as `question` came, and the share of
  rows at a similarity of at least 0.8 (`similar_rate`);
- a value of the wrong type (an e-mail field holding a phone number) is a type error and never
  matches, even where the gold label holds the same characters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

from shared.normalize import normalize_value
from shared.schema import ExtractionSchema, FieldSpec

# Character similarity at which a free-text value counts as the same answer (`similar_rate`).
SIMILAR = 0.8
# Row ids kept per field for the rows it got wrong, to look them up (never their text).
MISMATCH_IDS = 20


def parse_answer(answer: str) -> dict[str, Any] | None:
    """The answer as a JSON object, or None when it is anything else."""
    try:
        value = json.loads(answer.strip())
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _value(prediction: dict[str, Any] | None, name: str) -> str | None:
    value = None if prediction is None else prediction.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _similarity(predicted: str | None, gold: str | None) -> float:
    if predicted is None or gold is None:
        return float(predicted == gold)
    return SequenceMatcher(None, predicted, gold, autojunk=False).ratio()


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


# Stands for a value of the wrong type: it equals no gold value.
_WRONG_TYPE = "\x00wrong-type"


def _field_scores(
    schema: ExtractionSchema,
    spec: FieldSpec,
    predictions: Sequence[dict[str, Any] | None],
    golds: Sequence[dict[str, Any]],
    ids: Sequence[str],
) -> tuple[dict[str, Any], list[bool]]:
    matches: list[bool] = []
    correct = predicted = present = hallucinations = omissions = wrong = type_errors = 0
    similarity = 0.0
    similar_rows = 0
    for prediction, gold in zip(predictions, golds, strict=True):
        raw = None if prediction is None else prediction.get(spec.name)
        guess = normalize_value(_value(prediction, spec.name), spec.normalize)
        if raw is not None and not schema.value_fits(spec.name, raw):
            type_errors += 1
            guess = _WRONG_TYPE
        truth = normalize_value(gold.get(spec.name), spec.normalize)
        matches.append(guess == truth)
        row_similarity = _similarity(guess, truth)
        similarity += row_similarity
        similar_rows += row_similarity >= SIMILAR
        predicted += guess is not None
        present += truth is not None
        if guess is not None and truth is not None:
            correct += guess == truth
            wrong += guess != truth
        elif guess is not None:
            hallucinations += 1
        elif truth is not None:
            omissions += 1
    precision, recall = _rate(correct, predicted), _rate(correct, present)
    scores = {
        "exact_match": _rate(sum(matches), len(matches)),
        "precision": precision,
        "recall": recall,
        # 2PR / (P + R) in counts: also defined (0) when nothing was predicted.
        "f1": _rate(2 * correct, predicted + present),
        "similarity": round(similarity / len(matches), 4) if matches else None,
        "similar_rate": _rate(similar_rows, len(matches)),
        "correct": correct,
        "predicted": predicted,
        "gold": present,
        "hallucinations": hallucinations,
        "omissions": omissions,
        "wrong_values": wrong,
        "type_errors": type_errors,
        "mismatch_ids": [i for i, m in zip(ids, matches, strict=True) if not m][:MISMATCH_IDS],
    }
    return scores, matches


def score(
    answers: Sequence[str],
    golds: Sequence[dict[str, Any]],
    schema: ExtractionSchema,
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every score of `answers` (raw model outputs) against `golds` (labels), field by field."""
    predictions = [parse_answer(answer) for answer in answers]
    ids = ids if ids is not None else [str(i) for i in range(len(answers))]
    fields: dict[str, Any] = {}
    all_correct = [True] * len(answers)
    for spec in schema.fields:
        fields[spec.name], matches = _field_scores(schema, spec, predictions, golds, ids)
        all_correct = [a and m for a, m in zip(all_correct, matches, strict=True)]
    rows = len(answers)
    return {
        "rows": rows,
        "json_valid": _rate(sum(p is not None for p in predictions), rows),
        "schema_valid": _rate(
            sum(p is not None and not schema.errors(p) for p in predictions), rows
        ),
        "all_fields_correct": _rate(sum(all_correct), rows),
        "fields": fields,
    }
