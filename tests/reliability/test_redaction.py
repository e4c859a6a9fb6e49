"""Scenario 11, the redactor: property-based tests of shared.logging.redact on the forms personal
data takes in real Chinese complaints (phones typed with any separator or full-width digits,
e-mails with a full-width ＠, names in any CJK block), planted in arbitrary text."""

from __future__ import annotations

import json
import logging
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.logging import configure_logging, redact

SEPARATORS = [" ", "-", ".", "/", "_", "\u00a0", "\u3000", "－", "—", "–", "·", "、", "*"]
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
# Hanzi from the everyday block and the extensions names are sometimes written in (A to H and
# the compatibility ideographs).
HANZI = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0x3400, max_codepoint=0x4DBF),
    st.characters(min_codepoint=0xF900, max_codepoint=0xFAFF),
    st.characters(min_codepoint=0x20000, max_codepoint=0x2EE5F),
    st.characters(min_codepoint=0x30000, max_codepoint=0x323AF),
)
# Surrounding text with no digits, @ or CJK of its own (so a survivor can only be the plant).
FILLER = st.text(
    alphabet=st.characters(
        min_codepoint=0x20,
        max_codepoint=0x2DFF,
        exclude_categories=["Nd", "No", "Cs"],
        exclude_characters="@",
    ),
    max_size=20,
)


def digits(text: str) -> str:
    return "".join(str(unicodedata.digit(c)) for c in text if c.isdigit())


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, str]:
    """(the phone as written, its digits): mobiles and landlines, any grouping and separator,
    optional country code, ASCII or full-width digits."""
    number = draw(st.from_regex(r"1[3-9][0-9]{9}|0[1-9][0-9]{1,2}[2-8][0-9]{6,7}", fullmatch=True))
    cuts = sorted(draw(st.sets(st.integers(1, len(number) - 1), max_size=3)))
    separator = draw(st.sampled_from(SEPARATORS))
    parts = [number[i:j] for i, j in zip([0, *cuts], [*cuts, len(number)], strict=True)]
    written = separator.join(parts)
    if draw(st.booleans()):
        written = draw(st.sampled_from(["+86 ", "+86-", "0086 ", "(+86)"])) + written
    if draw(st.booleans()):
        written = written.translate(FULLWIDTH)
    return written, number


@given(phones(), FILLER, FILLER)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_no_phone_survives_whatever_its_separators(phone, before: str, after: str) -> None:
    written, number = phone
    cleaned = redact(f"{before}电话{written}{after}")
    assert number not in digits(cleaned), (written, cleaned)


@given(
    st.emails(),
    st.sampled_from(["@", "＠"]),
    FILLER,
    FILLER,
)
@settings(max_examples=300)
def test_no_email_survives_even_with_a_full_width_at(email: str, at: str, before, after) -> None:
    local, _, domain = email.rpartition("@")
    written = f"{local}{at}{domain}"
    cleaned = redact(f"{before} 邮箱：{written}，{after}")
    assert local not in cleaned or len(local) < 3 or local in f"{before} {after}", cleaned
    assert written not in cleaned


@given(st.text(HANZI, min_size=1, max_size=6), FILLER, FILLER)
@settings(max_examples=300)
def test_no_chinese_name_survives_in_any_cjk_block(name: str, before: str, after: str) -> None:
    cleaned = redact(f"{before}投诉人{name}{after}")
    assert not any(c in cleaned for c in name), (name, cleaned)


@given(st.text())
@settings(max_examples=500)
def test_redact_accepts_any_string_and_is_idempotent(text: str) -> None:
    once = redact(text)
    assert isinstance(once, str)
    assert redact(once) == once


@pytest.fixture
def json_log(capsys: pytest.CaptureFixture[str]):
    configure_logging("test")
    yield lambda: capsys.readouterr().err
    logging.getLogger().handlers.clear()


@given(
    st.dictionaries(
        st.sampled_from(["text", "user_phone", "email", "complaint_text", "customer_name"]),
        st.text(HANZI, min_size=2, max_size=8),
        min_size=1,
    ),
    st.text(HANZI, min_size=2, max_size=8),
)
@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_log_lines_carry_no_planted_value(json_log, fields: dict[str, str], name: str) -> None:
    json_log()
    logger = logging.getLogger("tiqu.test")
    logger.warning("row from %s rejected", name, extra={"detail": {"nested": [name]}, **fields})
    try:
        raise ValueError(f"cannot parse {name}")
    except ValueError:
        logger.exception("failed")
    out = json_log()
    for line in out.strip().splitlines():
        rendered = json.dumps(json.loads(line), ensure_ascii=False)
        for value in [name, *fields.values()]:
            assert value not in rendered, (value, rendered)
