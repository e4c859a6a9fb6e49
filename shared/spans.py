"""Where each extracted value sits in the text the client sent: character offsets and how sure.

The model reads the cleaned text (`shared.cleaning`), so a value is found there and its offsets
are mapped back through the cleaning to the original, whatever the cleaning removed or folded
(HTML, entities, full width, zero-width characters, homoglyphs, whitespace). A value's status:

- `exact`: the original holds the value character for character at [start, end);
- `normalized`: the original span cleans or normalizes to the value (full-width digits, other
  phone separators, case, spaces);
- `fuzzy`: a free-text value (`coverage` grounding, the complaint's question) mostly made of the
  text; the span runs from the first to the last stretch of it found;
- `not_found`: nowhere in the text: serving answers null for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

from shared.cleaning import CleanedText
from shared.normalize import MIN_COVERAGE, coverage, normalize_value, phone_span
from shared.schema import FieldSpec

SpanStatus = Literal["exact", "normalized", "fuzzy", "not_found"]
# Shortest stretch shared by a free-text value and the text that counts towards its span.
_MIN_FUZZY_BLOCK = 2


@dataclass(frozen=True)
class Span:
    start: int | None
    end: int | None
    status: SpanStatus

    def as_dict(self) -> dict[str, int | str | None]:
        return {"start": self.start, "end": self.end, "status": self.status}


NOT_FOUND = Span(None, None, "not_found")


def _folded_with_index(text: str) -> tuple[str, list[int]]:
    """The `text` comparison form of a cleaned text, and for each of its characters the index
    of the character it came from."""
    folded: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        piece = ch.casefold()
        folded.append(piece)
        index += [i] * len(piece)
    return "".join(folded), index


def _cleaned_span(value: str, spec: FieldSpec, cleaned: str) -> tuple[tuple[int, int], bool] | None:
    """Offsets of `value` in the cleaned text, and whether only a fuzzy match was found."""
    at = cleaned.find(value)
    if at >= 0:
        return (at, at + len(value)), False
    if spec.normalize == "phone":
        found = phone_span(value, cleaned)
        return (found, False) if found else None
    needle = normalize_value(value, spec.normalize) or ""
    haystack, index = _folded_with_index(cleaned)
    at = haystack.find(needle) if needle else -1
    if at >= 0:
        return (index[at], index[at + len(needle) - 1] + 1), False
    if spec.grounding != "coverage" or coverage(value, cleaned) < MIN_COVERAGE:
        return None
    blocks = [
        block
        for block in SequenceMatcher(None, needle, haystack, autojunk=False).get_matching_blocks()
        if block.size >= _MIN_FUZZY_BLOCK
    ]
    if not blocks:
        return None
    first, last = blocks[0], blocks[-1]
    return (index[first.b], index[last.b + last.size - 1] + 1), True


def locate(value: str, spec: FieldSpec, original: str, cleaned: CleanedText) -> Span:
    """The span of `value` in `original` (the client's text), `cleaned` being its cleaning."""
    found = _cleaned_span(value, spec, cleaned.text)
    if found is None:
        return NOT_FOUND
    (start, end), fuzzy = found
    start, end = cleaned.source_span(start, end)
    if fuzzy:
        return Span(start, end, "fuzzy")
    return Span(start, end, "exact" if original[start:end] == value else "normalized")
