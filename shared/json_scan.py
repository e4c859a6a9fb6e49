"""A character scan of JSON text that knows where strings are: the one piece both the distill
answer parser, the gateway's cut-answer salvage and the serving benchmark build on; and its
vectorized twin for untrusted bytes, which only measures nesting."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def json_characters(text: str, start: int = 0) -> Iterator[tuple[int, str, bool]]:
    """Each character from `start`, and whether it is structural: outside a string, not a quote.

    Only ASCII double quotes delimit strings here.
    """
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        structural = False
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        else:
            structural = True
        yield index, char, structural


def matching_end(text: str, start: int = 0) -> int | None:
    """Index after the bracket closing the first one from `start`, or None if the text ends first.

    A mismatched closer ends the candidate early and the decoder then rejects it.
    """
    depth = 0
    for index, char, structural in json_characters(text, start):
        if not structural:
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether arrays and objects in JSON bytes (or the start of them) nest deeper than `limit`.

    Found without parsing, which recurses once per level: in numpy, linear in the length. A quote
    after an odd run of backslashes is escaped; a bracket after an odd number of unescaped quotes
    is inside a string (a string cut off at the end counts as running to it).
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    chars = np.frombuffer(data, np.uint8)
    positions = np.arange(len(chars), dtype=np.int32)
    last_other = np.maximum.accumulate(np.where(chars == ord("\\"), -1, positions))
    quotes = np.flatnonzero(chars == ord('"'))
    before = np.maximum(quotes - 1, 0)
    backslashes = np.where(quotes > 0, quotes - 1 - last_other[before], 0)
    toggles = np.zeros(len(chars), np.int32)
    toggles[quotes[backslashes % 2 == 0]] = 1
    in_string = np.cumsum(toggles, dtype=np.int32) % 2 == 1
    steps = np.zeros(len(chars), np.int32)
    steps[(chars == ord("[")) | (chars == ord("{"))] = 1
    steps[(chars == ord("]")) | (chars == ord("}"))] = -1
    steps[in_string] = 0
    return bool(np.cumsum(steps, dtype=np.int32).max() > limit)
