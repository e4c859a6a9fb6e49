"""A character scan of JSON text that knows where strings are: the one piece both the distill
answer parser, the gateway's cut-answer salvage and the serving benchmark build on."""

from __future__ import annotations

from collections.abc import Iterator


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
