"""The `anchors` target form: free-text fields written as their ends, expanded from the text."""

from __future__ import annotations

import json
import re
from difflib import SequenceMatcher

import pytest

from shared.anchors import (
    ANCHOR_CHARS,
    ANCHOR_MARK,
    ANCHORED_PATTERN,
    anchored,
    anchored_decoding_schema,
    expand,
    expand_answer,
    target_fields,
    without_contact_clauses,
)
from shared.cleaning import clean_text
from shared.normalize import normalize_value
from shared.prompts import student_target
from shared.samples import generate_complaints
from shared.schema import DEFAULT_SCHEMA, ExtractionSchema

SCHEMA = ExtractionSchema(DEFAULT_SCHEMA)
TEXT = (
    "您好，我是李娜。空气净化器下单十天一直没发货，客服说在处理。请尽快发货或者退款！"
    "电话13912345678"
)
QUESTION = "空气净化器下单十天一直没发货，客服说在处理。请尽快发货或者退款！"


def test_a_long_value_is_written_as_its_ends_and_fits_the_decoding_pattern() -> None:
    written = anchored(QUESTION)
    assert written == "空气净化器下" + ANCHOR_MARK + "货或者退款！"
    assert len(written) == 2 * ANCHOR_CHARS + 1
    assert re.fullmatch(ANCHORED_PATTERN, written)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("快递丢了", "快递⋯丢了"),
        ("没发货", "没发⋯货"),
        ("快递丢了三天没人管也不回", "快递丢了三天⋯没人管也不回"),
    ],
)
def test_a_short_value_is_written_as_its_halves(value: str, written: str) -> None:
    assert anchored(value) == written
    assert expand(written, TEXT + value) == value
    assert re.fullmatch(ANCHORED_PATTERN, written)


def test_the_decoding_pattern_asks_for_the_mark_between_a_head_and_a_tail() -> None:
    assert not re.fullmatch(ANCHORED_PATTERN, QUESTION)  # a copy
    assert not re.fullmatch(ANCHORED_PATTERN, "快递丢了")  # no mark
    assert not re.fullmatch(ANCHORED_PATTERN, ANCHOR_MARK + "退款！")
    assert not re.fullmatch(ANCHORED_PATTERN, "快递" + ANCHOR_MARK)
    assert not re.fullmatch(ANCHORED_PATTERN, "快递" + ANCHOR_MARK + "丢" + ANCHOR_MARK + "了")
    # A model that copies on past the trained head still closes with a tail that expands right.
    long_head = QUESTION[:20] + ANCHOR_MARK + "退款！"
    assert re.fullmatch(ANCHORED_PATTERN, long_head)
    assert expand(long_head, TEXT) == QUESTION
    # A whole value (no mark) expands to itself.
    assert expand("快递丢了", TEXT) == "快递丢了"


def test_ends_of_another_length_than_trained_expand_the_same_way() -> None:
    # The model reads tokens, not characters: a head of 5 or a tail of 3 still stands for the
    # same stretch, and fits the decoding pattern.
    written = "空气净化器" + ANCHOR_MARK + "退款！"
    assert re.fullmatch(ANCHORED_PATTERN, written)
    assert expand(written, TEXT) == QUESTION


def test_expansion_gives_back_the_stretch_of_the_text() -> None:
    assert expand(anchored(QUESTION), TEXT) == QUESTION


def test_the_tail_is_looked_for_after_the_head() -> None:
    text = "请尽快处理！我买的手机屏幕碎了，商家不理。请尽快处理！"
    value = "我买的手机屏幕碎了，商家不理。请尽快处理！"
    assert expand(anchored(value), text) == value


@pytest.mark.parametrize(
    "written",
    [
        "洗衣机漏水严重"[:ANCHOR_CHARS] + ANCHOR_MARK + "货或者退款！",  # head not in the text
        "空气净化器下" + ANCHOR_MARK + "洗衣机漏水严重"[:ANCHOR_CHARS],  # tail not in the text
        "或者退款！电" + ANCHOR_MARK + "空气净化器下",  # the tail only before the head
    ],
)
def test_an_anchor_that_is_not_in_the_text_expands_to_null(written: str) -> None:
    assert expand(written, TEXT) is None
    fields = expand_answer({"question": written, "name": "李娜"}, TEXT, SCHEMA, "anchors")
    assert fields == {"question": None, "name": "李娜"}


def test_only_free_text_fields_are_anchored() -> None:
    label = {"name": "李娜", "phone": "13912345678", "question": QUESTION}
    fields = target_fields(label, SCHEMA, "anchors")
    assert fields == {
        "name": "李娜",
        "phone": "13912345678",
        "email": None,
        "address": None,
        "question": anchored(QUESTION),
    }
    assert target_fields(label, SCHEMA, "copy")["question"] == QUESTION
    assert json.loads(student_target(label, SCHEMA, "anchors")) == fields
    assert expand_answer(fields, TEXT, SCHEMA, "anchors")["question"] == QUESTION
    assert expand_answer(fields, TEXT, SCHEMA, "copy") == fields


def test_the_decoding_schema_bounds_only_the_anchored_fields() -> None:
    decoding = SCHEMA.grounded_decoding_schema(TEXT)
    assert anchored_decoding_schema(decoding, SCHEMA, "copy") == decoding
    shaped = anchored_decoding_schema(decoding, SCHEMA, "anchors")
    assert shaped["properties"]["question"]["pattern"] == ANCHORED_PATTERN
    assert shaped["properties"]["question"]["type"] == ["string", "null"]
    others = ("name", "phone", "email", "address")
    assert all(shaped["properties"][n] == decoding["properties"][n] for n in others)
    assert "pattern" not in decoding["properties"]["question"]


@pytest.mark.parametrize(
    ("span", "contacts", "question"),
    [
        (  # contact clauses inside the complaint, each after its label
            "停水一整天,收货地址是成都市房山区阜新街687号,手机18179827165,孩子上网课受影响。",
            ["成都市房山区阜新街687号", "18179827165"],
            "停水一整天,孩子上网课受影响。",
        ),
        (  # in brackets: the emptied brackets go too
            "都没解决(家住郑州市李路371号,手机136 1476 0994)。地勤态度恶劣。",
            ["136 1476 0994", "郑州市李路371号"],
            "都没解决。地勤态度恶劣。",
        ),
        ("机器吞卡了。我叫张娟。拖了快12个星期。", ["张娟"], "机器吞卡了。拖了快12个星期。"),
        (  # the place complained about starts its clause: the complaint, kept
            "翠湖小区23栋的电梯又困人了,物业半小时才来。",
            ["翠湖小区23栋"],
            "翠湖小区23栋的电梯又困人了,物业半小时才来。",
        ),
        ("快递三天没到,请尽快处理。", [], "快递三天没到,请尽快处理。"),
    ],
)
def test_contact_clauses_inside_an_expanded_question_are_left_out(
    span: str, contacts: list[str], question: str
) -> None:
    assert without_contact_clauses(span, contacts) == question


SPREAD_STYLES = ("transcript_turns", "chat_turns", "narrative")


def test_the_generators_questions_survive_the_round_trip() -> None:
    """What an adapter in the `anchors` form could reach at best on generated complaints: the
    question its label expands to from its ends and its other values, compared as evaluation
    compares."""
    labels = generate_complaints(600, seed=3).labels
    similar = exact = total = 0
    for row in labels.to_dict("records"):
        # A question spread over turns or paragraphs with the other side's turns or the
        # writer's introduction in between is no one stretch of the text: head⋯tail cannot
        # stand for it (a limit of the anchors form, which is why copy stays the default).
        if row["style"] in SPREAD_STYLES:
            continue
        label = {
            name: clean_text(row[name]) if isinstance(row[name], str) else None
            for name in SCHEMA.field_names
        }
        gold = normalize_value(label["question"], "text")
        if not gold:
            continue
        written = target_fields(label, SCHEMA, "anchors")
        back = expand_answer(written, clean_text(row["text"]), SCHEMA, "anchors")["question"]
        back = normalize_value(back, "text")
        total += 1
        exact += back == gold
        similar += back is not None and SequenceMatcher(None, back, gold).ratio() >= 0.8
    assert total > 500
    assert exact / total >= 0.97
    assert similar / total >= 0.98
