"""Structured JSON logs that never carry personal data or complaint text in clear.

Two layers of protection, because a log line is forever:
- fields whose name says they hold personal data (`text`, `phone`, `user_name`, …) are replaced by
  their length and a short hash, so equal values can still be correlated;
- every other string, the message and tracebacks included, has e-mail addresses, digit runs that
  could be phone or id numbers, and runs of CJK characters masked. tiqu's own log messages are
  English, so Chinese characters in a log line can only have come from the data.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from shared.settings import get_settings

PII_FIELDS = frozenset(
    {"text", "name", "phone", "email", "address", "question", "content", "complaint", "prompt"}
)

# Anything around an @ (or the full-width ＠ Chinese input methods type) is treated as an
# address: over-masking a log line costs nothing.
_EMAIL = re.compile(r"[^\s@＠]+[@＠][^\s@＠]+")
# Digits (ASCII or full-width) joined by anything people put between the groups of a phone
# number: spaces of any width, dashes of any kind, dots, slashes, brackets, stars.
_DIGIT_RUN = re.compile(r"\+?\d(?:[\d\s\-‐‑–—－.．·/_()（）*＊、]*\d)?")
_CJK = re.compile(
    r"[\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uac00-\ud7af\uf900-\ufaff\U00020000-\U000323af]+"
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _digits(match: re.Match[str]) -> str:
    return "[number]" if sum(c.isdigit() for c in match.group()) >= 7 else match.group()


def redact(value: str) -> str:
    """Mask e-mails, phone-like numbers and CJK text in a free-form string."""
    value = _EMAIL.sub("[email]", value)
    value = _DIGIT_RUN.sub(_digits, value)
    return _CJK.sub(lambda m: f"[cjk:{len(m.group())}]", value)


def fingerprint(value: object) -> str:
    """A stand-in for a personal value: its length and a short hash, never the value."""
    text = str(value)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return f"[redacted len={len(text)} sha={digest}]"


def _scrub(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if PII_FIELDS.intersection(key.lower().split("_")):
        return fingerprint(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(key, v) for v in value]
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so no handler ever sees personal data."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _scrub(key, value))
        return True


class RedactingJsonFormatter(JsonFormatter):
    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


class RedactingTextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the record (test captures swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        return None


def configure_logging(service: str, *, level: str | None = None) -> None:
    """Send this process's logs to stderr, redacted, as JSON (or text when TIQU_LOG_JSON=false).

    `level` overrides TIQU_LOG_LEVEL: CLI commands pass WARNING so that service-style progress
    logs do not interleave with their progress bars.
    """
    settings = get_settings()
    handler = _StderrHandler()
    handler.addFilter(RedactingFilter())
    if settings.log_json:
        handler.setFormatter(
            RedactingJsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or settings.log_level).upper())
    # Libraries that log request bodies or URLs with query text stay at WARNING.
    for noisy in ("httpx", "httpcore", "botocore", "s3fs", "aiobotocore", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
