"""Reading the JSON inside real teachers' answers.

Chat models rarely answer with a bare JSON object: reasoning models put a `<think>` block first
(sometimes without closing it, or without opening it), many wrap the object in a Markdown fence
with a sentence before and after, some leave trailing commas or typographic quotes around keys,
and some answer a list holding the one object. `parse_teacher_json` finds the object in all of
these and says briefly why when there is none; it never guesses values.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shared.json_scan import json_characters, matching_end

__all__ = ["AnswerParseError", "parse_teacher_json", "parse_teacher_list"]

# Enough for any sane answer: each candidate is decoded at most a few times.
_MAX_CANDIDATES = 200

_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)\b[^>]*>", re.I)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning)\s*>", re.I)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_SMART_DOUBLE = "“”„‟＂«»「」『』"
_SMART_KEY = re.compile(
    rf"([{{,]\s*)[{_SMART_DOUBLE}]([^\"{_SMART_DOUBLE}\n]*?)[{_SMART_DOUBLE}](\s*:)"
)
_SMART_VALUE = re.compile(
    rf"(:\s*)[{_SMART_DOUBLE}]([^\"{_SMART_DOUBLE}\n]*?)[{_SMART_DOUBLE}](\s*[,}}\]])"
)
_DECODER = json.JSONDecoder()
# Where a JSON value can start: `{` before a key or `}`, `[` before a value or `]`. Braces in
# prose ("{name}", "[注意]") are not candidates.
_OPENING = re.compile(
    rf"\{{(?=\s*[\"'}}{_SMART_DOUBLE}])"
    rf"|\[(?=\s*(?:[\"'{{\[\]\-0-9{_SMART_DOUBLE}]|true|false|null))"
)


class AnswerParseError(ValueError):
    """The answer holds no usable JSON; the message is a short reason fit for a report."""


def parse_teacher_json(content: str | None) -> dict[str, Any]:
    """The first top-level JSON object in a teacher's answer.

    A list holding exactly one object counts as that object. Raises AnswerParseError (empty
    answer, no JSON object, truncated JSON, unreadable JSON) when there is none.
    """
    value = _parse(content, want=dict)
    assert isinstance(value, dict)
    return value


def parse_teacher_list(content: str | None) -> list[Any]:
    """The first top-level JSON array in a teacher's answer (e.g. augmentation answers)."""
    value = _parse(content, want=list)
    assert isinstance(value, list)
    return value


def _parse(content: str | None, *, want: type) -> Any:
    if content is None or not content.strip():
        raise AnswerParseError("empty answer")
    body, in_reasoning = _strip_reasoning(content)
    if not body.strip():
        raise AnswerParseError("the answer holds only reasoning (<think>) and no JSON")
    # A fenced block is where the model says the answer is, so it goes first.
    for fenced in _fenced_blocks(body):
        found = _scan(fenced, want=want, prefer_last=False)
        if found.value is not _MISSING:
            return found.value
    found = _scan(body, want=want, prefer_last=in_reasoning)
    if found.value is not _MISSING:
        return found.value
    raise AnswerParseError(found.reason(want, in_reasoning))


def _strip_reasoning(content: str) -> tuple[str, bool]:
    """The answer without reasoning blocks; True when an unterminated `<think>` remains."""
    text = _THINK_BLOCK.sub(" ", content)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        # A closing tag without its opener: everything before it was reasoning.
        text = text[closes[-1].end() :]
    opener = _THINK_OPEN.search(text)
    if opener is None:
        return text, False
    before = text[: opener.start()]
    if before.strip():
        # Prose (maybe the answer) came before a dangling tag: keep it, ignore the rest.
        return before, False
    return text[opener.end() :], True


def _fenced_blocks(text: str) -> list[str]:
    blocks = []
    for match in _FENCE.finditer(text):
        language = match.group(1).lower()
        if language in ("", "json", "json5", "jsonc", "javascript", "js"):
            blocks.append(match.group(2))
    return blocks


class _Missing:
    pass


_MISSING: Any = _Missing()


class _ScanResult:
    def __init__(self) -> None:
        self.value: Any = _MISSING
        self.truncated = False
        self.invalid = False
        self.list_sizes: list[int] = []
        self.objects_seen = 0

    def reason(self, want: type, in_reasoning: bool) -> str:
        noun = "JSON object" if want is dict else "JSON array"
        if self.list_sizes and want is dict:
            return f"the answer is a list of {self.list_sizes[0]} items, not one object"
        if want is list and self.objects_seen:
            return "the answer is a JSON object, not an array"
        if self.truncated:
            where = " inside an unterminated <think> block" if in_reasoning else ""
            return f"truncated JSON: the answer ends inside an unclosed {noun}{where}"
        if self.invalid:
            return f"unreadable JSON: no candidate decodes as a {noun}"
        if in_reasoning:
            return f"no {noun} in the answer (it ends inside an unterminated <think> block)"
        return f"no {noun} in the answer"


def _scan(text: str, *, want: type, prefer_last: bool) -> _ScanResult:
    """Try every `{`/`[` not inside an already decoded value, in order."""
    result = _ScanResult()
    found: list[Any] = []
    position = 0
    tried = 0
    while tried < _MAX_CANDIDATES:
        start = _next_opening(text, position)
        if start < 0:
            break
        tried += 1
        end = matching_end(text, start)
        if end is None:
            # The text ends inside this value: anything later is nested in it, not an answer.
            result.truncated = True
            break
        value = _decode(text[start:end])
        if value is _MISSING:
            result.invalid = True
            position = start + 1
            continue
        position = end
        chosen = _accept(value, want, result)
        if chosen is not _MISSING:
            if not prefer_last:
                result.value = chosen
                return result
            found.append(chosen)
    if found:
        result.value = found[-1]
    return result


def _accept(value: Any, want: type, result: _ScanResult) -> Any:
    if want is dict:
        if isinstance(value, dict):
            return value
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            if len(value) == 1:
                return value[0]
            result.list_sizes.append(len(value))
        return _MISSING
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        result.objects_seen += 1
    return _MISSING


def _next_opening(text: str, position: int) -> int:
    match = _OPENING.search(text, position)
    return match.start() if match else -1


def _decode(candidate: str) -> Any:
    value = _decode_whole(candidate)
    # The repair pass costs more than a decode, so it runs only when the answer as given fails.
    return _decode_whole(_repair(candidate)) if value is _MISSING else value


def _decode_whole(text: str) -> Any:
    try:
        value, end = _DECODER.raw_decode(text)
    except (json.JSONDecodeError, RecursionError):
        return _MISSING
    return value if not text[end:].strip() else _MISSING


def _repair(candidate: str) -> str:
    """Fix what models commonly get wrong: typographic quotes as delimiters, trailing commas."""
    text = _SMART_KEY.sub(r'\1"\2"\3', candidate)
    text = _SMART_VALUE.sub(r'\1"\2"\3', text)
    return _drop_trailing_commas(text)


def _drop_trailing_commas(text: str) -> str:
    out: list[str] = []
    for _, char, structural in json_characters(text):
        if structural and char in "}]":
            # Drop a comma (and the blanks after it) directly before a closer.
            index = len(out) - 1
            while index >= 0 and out[index].isspace():
                index -= 1
            if index >= 0 and out[index] == ",":
                del out[index]
        out.append(char)
    return "".join(out)
