"""The values a typed field can take in one text: every maximal stretch of it that fits the type.

A field that must occur in the text (`x-tiqu-grounding: exact`) and has a format (`pattern`: the
phone and e-mail fields) can only be answered with one of a few strings of the text: those that
fit the pattern and cannot be made longer by one character and still fit. Decoding then chooses
among them or null (`ExtractionSchema.grounded_decoding_schema`), so the model cannot copy a
number wrongly, answer a phone as an e-mail, or give a value when the text holds none; which
candidate is the complainant's stays the model's decision.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Longest candidate looked at: an e-mail address or a phone with extension and separators.
MAX_CANDIDATE_CHARS = 64
# More candidates than this in one text are left out, latest first (a table of numbers is not a
# complaint; the first ones are where contact details are written).
MAX_CANDIDATES = 24


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The anchored pattern for whole values, and its body for finding where one may start."""
    body = pattern.removeprefix("^").removesuffix("$")
    return re.compile(f"(?:{body})\\Z"), re.compile(body)


def candidates(pattern: str, text: str) -> list[str]:
    """Distinct stretches of `text` that fit `pattern`, in order of position: each longest one
    (inside no longer fitting stretch), then its whitespace-separated pieces that fit alone
    ("13800138000 2024" holds the phone "13800138000")."""
    whole, start = _compiled(pattern)
    longest: list[tuple[int, int]] = []
    for i in range(len(text)):
        if not start.match(text, i):
            continue
        end = next(
            (
                j
                for j in range(min(len(text), i + MAX_CANDIDATE_CHARS), i, -1)
                if whole.match(text, i, j)
            ),
            None,
        )
        if end is not None and not any(other_end >= end for _, other_end in longest):
            longest.append((i, end))
    found: list[str] = []
    for i, end in longest:
        stretch = text[i:end]
        pieces = [stretch, *(p for p in stretch.split() if p != stretch and whole.match(p))]
        found += [p for p in pieces if p not in found]
    return found[:MAX_CANDIDATES]
