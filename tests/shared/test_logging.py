"""Logs never carry personal data or complaint text in clear."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.logging import configure_logging, fingerprint, redact

CANARIES = {
    "complainant_name": "欧阳娜娜",
    "phone": "13912345678",
    "email": "canary.user@example.com",
    "address": "广东省深圳市南山区科技园路88号",
}


@pytest.fixture
def json_log(capsys: pytest.CaptureFixture[str]):
    configure_logging("test")
    logger = logging.getLogger("tiqu.test")

    def emit(*args, **kwargs) -> dict:
        logger.warning(*args, **kwargs)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        return json.loads(line)

    yield emit
    logging.getLogger().handlers.clear()


def test_pii_fields_become_fingerprints(json_log) -> None:
    record = json_log("labelled", extra={**CANARIES, "dataset_id": "ds-1", "rows": 3})
    line = json.dumps(record, ensure_ascii=False)
    for value in CANARIES.values():
        assert value not in line
    assert record["phone"] == fingerprint(CANARIES["phone"])
    assert record["dataset_id"] == "ds-1"
    assert record["rows"] == 3
    assert record["service"] == "test"


def test_message_text_is_redacted(json_log) -> None:
    record = json_log("bad row %s from %s", "张三投诉电话13912345678", "canary.user@example.com")
    assert "张三" not in record["message"]
    assert "13912345678" not in record["message"]
    assert "canary.user@example.com" not in record["message"]
    assert "[email]" in record["message"]


def test_tracebacks_are_redacted(json_log, capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("tiqu.test")
    try:
        raise ValueError("cannot parse 投诉人李雷 0755-12345678")
    except ValueError:
        logger.exception("parse failed")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "李雷" not in line and "12345678" not in line
    assert "ValueError" in line


def test_counts_in_messages_survive() -> None:
    assert redact("processed 12 rows in 3.5 s") == "processed 12 rows in 3.5 s"


@given(
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1),
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.emails(),
    st.text(max_size=30),
)
def test_redact_removes_planted_values(name: str, phone: str, email: str, filler: str) -> None:
    message = f"{filler} user {name} phone {phone} mail {email} {filler}"
    cleaned = redact(message)
    assert name not in cleaned
    assert phone not in cleaned
    assert email not in cleaned
