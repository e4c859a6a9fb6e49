"""How extracted values are compared with each other and with their source text.

Distillation (fidelity checks, self-consistency votes), training evaluation and serving all use
these rules, so "the same phone number" or "found in the text" means one thing everywhere:

- `text`: NFKC, invisible format characters and all whitespace removed, case folded;
- `email`: the same, lower-cased;
- `phone`: NFKC, digits and `*` masks only, a leading `+` kept (`+86 138-0013-8000` and
  `+8613800138000` are equal).

`is_grounded` checks that a value occurs in a text (a phone number must be a whole written number,
or whole groups of one, never a few digits from inside it); `coverage` measures how much of a
free-text value (a complaint's question) is made of the source text; `field_grounded` applies a
schema field's rule.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from shared.schema import FieldSpec, Normalization

# Share of a `coverage`-grounded value's character bigrams that must occur in the source text.
MIN_COVERAGE = 0.8

_WHITESPACE = re.compile(r"\s+")
# Format characters (soft hyphen, zero-width spaces and joiners, bidi marks, BOM, tags): they
# survive NFKC and would split a name or a number.
_INVISIBLE = re.compile(
    r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\U000e0000-\U000e007f]"
)
_NOT_PHONE = re.compile(r"[^0-9*+]")
# A written number: digits and `*` masks, possibly split by what people put inside phone numbers
# ("138 0013 8000", "010-8888 6666", "+86)138…").
_NUMBER_RUN = re.compile(r"\+?[0-9*](?:[\s\-‐‑‒–—()]*[0-9*])*")
_PHONE_CHARS = frozenset("0123456789*+")
_COUNTRY_PREFIX = re.compile(r"^(?:\+86|0086|86(?=1\d{10}$))")
_COUNTRY_PREFIXES = ("+86", "0086", "86")


def _strip_invisible(text: str) -> str:
    return text if text.isascii() else _INVISIBLE.sub("", text)


def _folded(text: str) -> str:
    """NFKC, no invisible characters, no whitespace, case folded: the `text` comparison form."""
    return _WHITESPACE.sub("", _strip_invisible(unicodedata.normalize("NFKC", text))).casefold()


def _phone_digits(value: str) -> str:
    digits = _NOT_PHONE.sub("", unicodedata.normalize("NFKC", value))
    core = digits.replace("+", "")
    return "+" + core if digits.startswith("+") and core else core


def normalize_value(value: str | None, kind: Normalization) -> str | None:
    """The comparison form of a value; `None` stays `None`, unusable input becomes ""."""
    if value is None:
        return None
    if kind == "phone":
        return _phone_digits(value)
    # E-mail addresses and texts fold the same way; casefold only differs from lower() for a few
    # non-ASCII letters that cannot occur in an address.
    return _folded(value)


@lru_cache(maxsize=256)
def _text_haystack(text: str) -> str:
    return _folded(text)


@lru_cache(maxsize=256)
def _number_runs(text: str) -> tuple[tuple[str, frozenset[int]], ...]:
    """Each written number of the text as (digits, positions where a separator or end falls)."""
    nfkc = unicodedata.normalize("NFKC", _strip_invisible(text))
    runs = []
    for match in _NUMBER_RUN.finditer(nfkc):
        digits: list[str] = []
        cuts = {0}
        for ch in match.group():
            if ch in _PHONE_CHARS:
                digits.append(ch)
            else:
                cuts.add(len(digits))
        cuts.add(len(digits))
        runs.append(("".join(digits), frozenset(cuts)))
    return tuple(runs)


def _phone_in(core: str, digits: str, cuts: frozenset[int]) -> bool:
    """Whether `core` occurs in a number run as a whole number or whole separated groups."""
    start = digits.find(core)
    while start >= 0:
        if start + len(core) in cuts and (
            start in cuts
            # The run may carry a country prefix that the value leaves out.
            or any(
                start - len(prefix) in cuts and digits.startswith(prefix, start - len(prefix))
                for prefix in _COUNTRY_PREFIXES
            )
        ):
            return True
        start = digits.find(core, start + 1)
    return False


def is_grounded(value: str, text: str, kind: Normalization) -> bool:
    """Whether `value` occurs in `text` once both are normalized as `kind`.

    A phone must match a whole number of the text ("0013 8000" of "138 0013 8000" counts, being
    whole groups; "8001380" does not), with or without a +86 / 0086 prefix on either side.
    E-mails and texts are plain substrings: exports glue fields together ("…237leixiang@…"),
    so the characters around a value say nothing.
    """
    needle = normalize_value(value, kind)
    if not needle:
        return False
    if kind == "phone":
        if not any(ch.isdigit() for ch in needle):
            return False
        core = _COUNTRY_PREFIX.sub("", needle)
        return any(_phone_in(core, digits, cuts) for digits, cuts in _number_runs(text))
    return needle in _text_haystack(text)


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
