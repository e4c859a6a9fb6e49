"""How extracted values are compared with each other and with their source text.

Distillation (fidelity checks, self-consistency votes), training evaluation and serving all use
these rules, so "the same phone number" or "found in the text" means one thing everywhere:

- `text`: NFKC, invisible format characters and all whitespace removed, case folded;
- `email`: the same, lower-cased;
- `phone`: NFKC, Chinese numerals read as digits (一三八 = 138, 幺 = 1, 两 = 2), digits and `*`
  masks only, a leading `+` kept, the Chinese prefix (+86, 0086) dropped (`+86 138-0013-8000`,
  `+8613800138000` and `13800138000` are equal).

`is_grounded` checks that a value occurs in a text (a phone number must be a whole written number,
or whole groups of one, never a few digits from inside it); `coverage` measures how much of a
free-text value (a complaint's question) is made of the source text; `field_grounded` applies a
schema field's rule.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from shared.schema import ExtractionSchema, FieldSpec, Normalization

# Share of a `coverage`-grounded value's character bigrams that must occur in the source text.
MIN_COVERAGE = 0.8

_WHITESPACE = re.compile(r"\s+")
# Format characters (soft hyphen, zero-width spaces and joiners, bidi marks, BOM, tags): they
# survive NFKC and would split a name or a number.
_INVISIBLE = re.compile(
    r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\U000e0000-\U000e007f]"
)
_NOT_PHONE = re.compile(r"[^0-9*+]")
# Numerals people spell phone numbers with; one character each, so positions do not move.
CHINESE_DIGITS = str.maketrans("零〇一二三四五六七八九幺两", "0012345678912")
# A written number: digits and `*` masks, possibly split by what people put inside phone numbers
# ("138 0013 8000", "010-8888 6666", "+86)138…").
_NUMBER_RUN = re.compile(r"\+?[0-9*](?:[\s\-‐‑‒–—()转轉]*[0-9*])*")
_PHONE_CHARS = frozenset("0123456789*+")
_COUNTRY_PREFIX = re.compile(r"^(?:\+86|0086|86(?=1\d{10}$))")
_COUNTRY_PREFIXES = ("+86", "0086", "86")


def _strip_invisible(text: str) -> str:
    return text if text.isascii() else _INVISIBLE.sub("", text)


def _folded(text: str) -> str:
    """NFKC, no invisible characters, no whitespace, case folded: the `text` comparison form."""
    return _WHITESPACE.sub("", _strip_invisible(unicodedata.normalize("NFKC", text))).casefold()


def _phone_digits(value: str) -> str:
    digits = _NOT_PHONE.sub("", unicodedata.normalize("NFKC", value).translate(CHINESE_DIGITS))
    core = digits.replace("+", "")
    return "+" + core if digits.startswith("+") and core else core


def normalize_value(value: str | None, kind: Normalization) -> str | None:
    """The comparison form of a value; `None` stays `None`, unusable input becomes ""."""
    if value is None:
        return None
    if kind == "phone":
        # A Chinese number is the same with or without its country prefix.
        return _COUNTRY_PREFIX.sub("", _phone_digits(value))
    # E-mail addresses and texts fold the same way; casefold only differs from lower() for a few
    # non-ASCII letters that cannot occur in an address.
    return _folded(value)


@lru_cache(maxsize=256)
def _text_haystack(text: str) -> str:
    return _folded(text)


@lru_cache(maxsize=256)
def _number_runs(text: str) -> tuple[tuple[str, frozenset[int], tuple[int, ...]], ...]:
    """Each written number of the text as (digits, positions where a separator or end falls,
    each digit's index in the text). Indexes are exact for a cleaned text (NFKC, no invisible
    characters), which the offsets of spans need."""
    nfkc = unicodedata.normalize("NFKC", _strip_invisible(text)).translate(CHINESE_DIGITS)
    runs = []
    for match in _NUMBER_RUN.finditer(nfkc):
        digits: list[str] = []
        positions: list[int] = []
        cuts = {0}
        for index, ch in enumerate(match.group(), start=match.start()):
            if ch in _PHONE_CHARS:
                digits.append(ch)
                positions.append(index)
            else:
                cuts.add(len(digits))
        cuts.add(len(digits))
        runs.append(("".join(digits), frozenset(cuts), tuple(positions)))
    return tuple(runs)


def _phone_at(needle: str, digits: str, cuts: frozenset[int]) -> tuple[int, int] | None:
    """Where a phone occurs in a number run as a whole number or whole separated groups, as a
    range of the run's digits (a country prefix written on both sides included)."""
    core = _COUNTRY_PREFIX.sub("", needle)
    start = digits.find(core)
    while start >= 0:
        end = start + len(core)
        if end in cuts:
            if start in cuts:
                prefixed = [p for p in _COUNTRY_PREFIXES if digits.startswith(p, start - len(p))]
                # Keep the prefix in the span when the value carries one too.
                if core != needle and prefixed and start - len(prefixed[0]) in cuts:
                    return start - len(prefixed[0]), end
                return start, end
            # The run may carry a country prefix that the value leaves out.
            for prefix in _COUNTRY_PREFIXES:
                if start - len(prefix) in cuts and digits.startswith(prefix, start - len(prefix)):
                    return (start - len(prefix) if core != needle else start), end
        start = digits.find(core, start + 1)
    return None


def phone_span(value: str, text: str) -> tuple[int, int] | None:
    """Character offsets in a cleaned `text` of the written number `value` stands for, or None.

    The same rule as `is_grounded` ("0013 8000" of "138 0013 8000" counts; "8001380" does not).
    """
    needle = normalize_value(value, "phone")
    if not needle or not any(ch.isdigit() for ch in needle):
        return None
    for digits, cuts, positions in _number_runs(text):
        found = _phone_at(needle, digits, cuts)
        if found:
            start, end = positions[found[0]], positions[found[1] - 1] + 1
            # A run starts at a digit; "(138) 0013-8000" keeps its opening bracket.
            if (
                start
                and text[start - 1] == "("
                and text[start:end].count(")") > text[start:end].count("(")
            ):
                start -= 1
            return start, end
    return None


def is_grounded(value: str, text: str, kind: Normalization) -> bool:
    """Whether `value` occurs in `text` once both are normalized as `kind`.

    A phone must match a whole number of the text ("0013 8000" of "138 0013 8000" counts, being
    whole groups; "8001380" does not), with or without a +86 / 0086 prefix on either side.
    E-mails and texts are plain substrings: exports glue fields together ("…237leixiang@…"),
    so the characters around a value say nothing.
    """
    if kind == "phone":
        return phone_span(value, text) is not None
    needle = normalize_value(value, kind)
    return bool(needle) and needle in _text_haystack(text)


def coverage(value: str, text: str) -> float:
    """Share of the value's character bigrams (a single character: itself) found in `text`.

    Both sides are normalized as `text`; an empty value covers nothing (0.0).
    """
    needle = normalize_value(value, "text")
    if not needle:
        return 0.0
    haystack = _text_haystack(text)
    if needle in haystack:
        return 1.0
    grams = [needle[i : i + 2] for i in range(len(needle) - 1)] or [needle]
    return sum(gram in haystack for gram in grams) / len(grams)


def field_grounded(spec: FieldSpec, value: str | None, text: str) -> bool:
    """Whether a field's value passes its schema grounding rule (`None` always does)."""
    if value is None or spec.grounding == "none":
        return True
    if spec.grounding == "exact":
        return is_grounded(value, text, spec.normalize)
    return coverage(value, text) >= MIN_COVERAGE


def trimmed(values: Mapping[str, Any]) -> dict[str, Any]:
    """Field values as a label holds them: strings trimmed, an empty string as null."""
    return {k: (v.strip() or None) if isinstance(v, str) else v for k, v in values.items()}


def first_ungrounded(schema: ExtractionSchema, label: Mapping[str, Any], text: str) -> str | None:
    """The first field (in schema order) whose value fails its grounding rule in `text`."""
    for spec in schema.fields:
        if not field_grounded(spec, label.get(spec.name), text):
            return spec.name
    return None
