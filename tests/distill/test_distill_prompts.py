"""The student's messages and target, and the teacher's prompts."""

from __future__ import annotations

import json
import random

from services.distill.prompt import (
    EXTRACT_EXAMPLES,
    ExtractionPrompt,
    augment_messages,
    augment_plan,
)
from services.distill.verify import TeacherAnswer, judge
from shared.prompts import student_messages, student_target
from shared.schema import DEFAULT_SCHEMA, ExtractionSchema, get_schema


def test_student_messages_are_short_and_deterministic() -> None:
    schema = get_schema()
    messages = student_messages("我的快递丢了", schema)
    assert messages == student_messages("我的快递丢了", schema)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "我的快递丢了"
    assert all(name in messages[0]["content"] for name in schema.field_names)
    assert len(messages[0]["content"]) < 120


def test_student_target_is_compact_json_in_schema_order() -> None:
    schema = get_schema()
    target = student_target({"question": "丢件", "name": "张三", "phone": None}, schema)
    assert target == ('{"name":"张三","phone":null,"email":null,"address":null,"question":"丢件"}')
    assert list(json.loads(target)) == list(schema.field_names)


def test_teacher_prompt_puts_the_complaint_last_between_markers() -> None:
    prompt = ExtractionPrompt.for_schema(get_schema())
    messages = prompt.messages("投诉内容")
    assert messages[0]["role"] == "system"
    assert "question" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "<complaint>\n投诉内容\n</complaint>"}
    assert len(messages) == 2 + 2 * len(EXTRACT_EXAMPLES)


def test_teacher_prompt_version_follows_the_schema() -> None:
    default = ExtractionPrompt.for_schema(get_schema())
    assert default.version == ExtractionPrompt.for_schema(get_schema()).version
    other = dict(DEFAULT_SCHEMA, description="another schema")
    assert ExtractionPrompt.for_schema(ExtractionSchema(other)).version != default.version


def test_worked_examples_pass_our_own_verification() -> None:
    schema = get_schema()
    for text, label in EXTRACT_EXAMPLES:
        verdict = judge([TeacherAnswer(json.dumps(label, ensure_ascii=False))], text, schema, 0.6)
        assert verdict.accepted, (text, verdict)


def test_a_schema_the_examples_do_not_fit_gets_no_examples() -> None:
    schema = ExtractionSchema(
        {
            "type": "object",
            "properties": {"order_id": {"type": ["string", "null"], "description": "订单号"}},
            "required": ["order_id"],
        }
    )
    prompt = ExtractionPrompt.for_schema(schema)
    assert prompt.examples == ()
    assert "order_id" in prompt.system


def test_augment_request_carries_the_marker_and_the_plan() -> None:
    plan = augment_plan(random.Random(0), 4, get_schema().field_names)
    messages = augment_messages(["示例投诉一", "示例投诉二"], plan)
    request = messages[-1]["content"]
    assert '<augment n="4">' in request
    assert "示例投诉一" in request
    assert request.count("第") >= 4
    assert augment_messages(["示例投诉一", "示例投诉二"], plan) == messages
