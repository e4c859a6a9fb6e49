"""Evaluation scores: normalization-aware exact match, hallucinations, omissions, F1, validity."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.train.scoring import parse_answer, score
from shared.schema import get_schema

GOLD: dict[str, Any] = {
    "name": "王芳",
    "phone": "+86 138-0013-8000",
    "email": None,
    "address": "北京市朝阳区建国路88号",
    "question": "宽带断网三天没人修。",
}


def answer(**changes: Any) -> str:
    return json.dumps({**GOLD, **changes}, ensure_ascii=False)


def test_values_equal_after_normalization_are_exact_matches() -> None:
    scores = score([answer(phone="+8613800138000", name=" 王芳 ")], [GOLD], get_schema())
    assert scores["json_valid"] == scores["schema_valid"] == scores["all_fields_correct"] == 1.0
    assert all(f["exact_match"] == 1.0 for f in scores["fields"].values())
    assert scores["fields"]["email"]["f1"] is None  # nothing to find, nothing predicted


def test_hallucinations_omissions_and_wrong_values_are_told_apart() -> None:
    answers = [answer(email="made@up.cn", name=None, address="上海市"), answer()]
    scores = score(answers, [GOLD, GOLD], get_schema(), ids=["a", "b"])
    email, name, address = (scores["fields"][f] for f in ("email", "name", "address"))
    assert (email["hallucinations"], email["precision"], email["exact_match"]) == (1, 0.0, 0.5)
    assert (name["omissions"], name["recall"], name["precision"]) == (1, 0.5, 1.0)
    assert name["f1"] == pytest.approx(2 * 1 / (1 + 2), abs=1e-4)
    assert (address["wrong_values"], address["mismatch_ids"]) == (1, ["a"])
    assert 0 < address["similarity"] < 1
    assert scores["all_fields_correct"] == 0.5


def test_an_answer_that_is_not_one_json_object_counts_as_all_null() -> None:
    scores = score(["not json", "[1, 2]", answer() + " trailing"], [GOLD] * 3, get_schema())
    assert scores["json_valid"] == 0.0
    assert scores["fields"]["name"]["omissions"] == 3
    assert scores["fields"]["email"]["exact_match"] == 1.0  # null gold, null prediction
    assert parse_answer('  {"name": null}\n') == {"name": None}


def test_schema_validity_is_stricter_than_json_validity() -> None:
    scores = score(['{"name": 5}'], [GOLD], get_schema())
    assert (scores["json_valid"], scores["schema_valid"]) == (1.0, 0.0)


def test_answers_in_the_anchors_form_are_scored_on_the_question_they_stand_for() -> None:
    from services.train.data import Example, in_target_form
    from services.train.evaluate import score_answers
    from shared.anchors import anchored
    from shared.prompts import student_messages, student_target

    schema = get_schema()
    question = "宽带断网三天没人修，打了五次客服电话都说在排查，请尽快派人上门维修。"
    gold = {**GOLD, "question": question}
    text = f"我是王芳，{question}电话+86 138-0013-8000，地址北京市朝阳区建国路88号"
    example = Example("1", tuple(student_messages(text, schema)), "", gold)
    [anchors_example] = in_target_form([example], schema, "anchors")
    assert anchors_example.target == student_target(gold, schema, "anchors")
    assert json.loads(anchors_example.target)["question"] == anchored(question)
    assert in_target_form([example], schema, "copy") == [example]

    written = answer(question=anchored(question))
    expanded = score_answers([written], [example], schema, "anchors")
    assert expanded["all_fields_correct"] == 1.0
    # Read as a copy, the same answer is a wrong question.
    assert (
        score_answers([written], [example], schema, "copy")["fields"]["question"]["exact_match"]
        == 0.0
    )
    # Ends that are not in the text stand for nothing: an omission, not a wrong value.
    lost_ends = answer(question="宽带断网三天⋯请派人来修理")
    lost = score_answers([lost_ends], [example], schema, "anchors")
    assert lost["fields"]["question"]["omissions"] == 1
