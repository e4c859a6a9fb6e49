"""Judging teacher answers: schema, fidelity (grounding), self-consistency votes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.distill.verify import RejectReason, TeacherAnswer, judge, vote
from shared.schema import get_schema

TEXT = (
    "我是李娜，手机13912345678，邮箱 lina@example.com，家住杭州市西湖区文三路90号。"
    "宽带断网一周没人修。"
)
GOOD = {
    "name": "李娜",
    "phone": "13912345678",
    "email": "lina@example.com",
    "address": "杭州市西湖区文三路90号",
    "question": "宽带断网一周没人修。",
}


def answer(**changes: Any) -> TeacherAnswer:
    return TeacherAnswer(json.dumps(GOOD | changes, ensure_ascii=False))


def verdict_of(*answers: TeacherAnswer, threshold: float = 0.6):
    return judge(answers, TEXT, get_schema(), threshold)


def test_a_faithful_label_is_accepted_with_full_agreement() -> None:
    verdict = verdict_of(answer())
    assert verdict.accepted
    assert verdict.label == GOOD
    assert set(verdict.agreement.values()) == {1.0}


def test_values_are_trimmed_and_empty_strings_become_null() -> None:
    verdict = verdict_of(answer(name="  李娜 ", email=""))
    assert verdict.accepted
    assert verdict.label is not None
    assert verdict.label["name"] == "李娜"
    assert verdict.label["email"] is None


@pytest.mark.parametrize(
    ("field", "invented"),
    [("phone", "13800138000"), ("email", "user123@qq.com"), ("name", "王小明")],
)
def test_invented_values_are_rejected_as_ungrounded(field: str, invented: str) -> None:
    verdict = verdict_of(answer(**{field: invented}))
    assert verdict.reason == RejectReason.UNGROUNDED
    assert verdict.field == field


def test_a_question_not_taken_from_the_text_is_ungrounded() -> None:
    verdict = verdict_of(answer(question="用户反映空调不制冷并要求上门维修"))
    assert (verdict.reason, verdict.field) == (RejectReason.UNGROUNDED, "question")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"name": "李娜", "phone": 13912345678}', RejectReason.SCHEMA),
        (json.dumps(GOOD | {"age": "30"}, ensure_ascii=False), RejectReason.SCHEMA),
        ('{"name": "李娜", "phone": "139', RejectReason.PARSE_ERROR),
        ("抱歉，我无法处理这个请求。", RejectReason.PARSE_ERROR),
    ],
)
def test_unusable_answers_are_rejected_with_their_reason(content: str, reason: str) -> None:
    verdict = verdict_of(TeacherAnswer(content))
    assert verdict.reason == reason
    assert verdict.detail


def test_a_fenced_answer_with_prose_is_read() -> None:
    fenced = f"好的：\n```json\n{json.dumps(GOOD, ensure_ascii=False)}\n```"
    assert verdict_of(TeacherAnswer(fenced)).accepted


def test_a_failed_request_is_a_teacher_error_with_its_kind() -> None:
    verdict = verdict_of(TeacherAnswer(None, "timeout", "no answer within 60 s"))
    assert (verdict.reason, verdict.detail) == (RejectReason.TEACHER_ERROR, "timeout")


def test_majority_wins_and_agreement_is_the_share_of_samples() -> None:
    verdict = verdict_of(answer(), answer(phone="139-1234-5678"), answer(phone="13800138000"))
    assert verdict.accepted
    assert verdict.label is not None
    assert verdict.label["phone"] == "13912345678"  # as the earliest agreeing sample wrote it
    assert verdict.agreement["phone"] == pytest.approx(2 / 3, abs=1e-3)
    assert verdict.agreement["name"] == 1.0


def test_low_agreement_rejects_the_row() -> None:
    verdict = verdict_of(answer(), answer(name=None), answer(name="李"))
    assert (verdict.reason, verdict.field) == (RejectReason.LOW_AGREEMENT, "name")
    assert verdict.agreement["name"] == pytest.approx(1 / 3, abs=1e-3)


def test_failed_samples_count_against_agreement() -> None:
    failed = TeacherAnswer(None, "server_error", "HTTP 500")
    verdict = verdict_of(answer(), failed, failed)
    assert verdict.reason == RejectReason.LOW_AGREEMENT
    assert verdict_of(answer(), answer(), failed).accepted


def test_questions_vote_by_overlap_not_exact_span() -> None:
    label, agreement = vote([GOOD, GOOD | {"question": "宽带断网一周没人修"}], 2, get_schema())
    assert agreement["question"] == 1.0
    assert label["question"] == GOOD["question"]


@pytest.mark.parametrize(
    ("field", "wrong_type"),
    [("email", "13912345678"), ("phone", "lina@example.com"), ("phone", "李娜")],
)
def test_a_value_of_the_wrong_type_is_rejected_even_when_it_is_in_the_text(
    field: str, wrong_type: str
) -> None:
    assert wrong_type in TEXT
    verdict = verdict_of(answer(**{field: wrong_type}))
    assert verdict.reason == RejectReason.SCHEMA
    assert verdict.detail is not None and verdict.detail.startswith(field)
