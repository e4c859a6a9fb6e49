"""parse_teacher_json reads the JSON object out of what real chat models answer."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.distill.parsing import AnswerParseError, parse_teacher_json, parse_teacher_list

LABEL = {
    "name": "欧阳娜娜",
    "phone": "+86 139-1234-5678",
    "email": "nana@example.com",
    "address": "广东省深圳市南山区科技园路88号",
    "question": "快递三天没送到，客服说“再等等”。",
}
ANSWER = json.dumps(LABEL, ensure_ascii=False)


@pytest.mark.parametrize(
    "content",
    [
        ANSWER,
        f"  \n{ANSWER}\n\n",
        json.dumps(LABEL),  # \u escapes
        json.dumps(LABEL, ensure_ascii=False, indent=2),
        f"<think>\n先找投诉人，再找电话。{{name}} 是占位符。\n</think>\n\n{ANSWER}",
        f"<THINK>reasoning</THINK>{ANSWER}",
        f"<thinking>x</thinking>\n{ANSWER}",
        # The opening tag eaten by the serving stack, only the closing one left.
        f"用户要抽取信息，我先看电话……\n</think>\n{ANSWER}",
        f"```json\n{ANSWER}\n```",
        f"好的，以下是提取结果：\n```json\n{ANSWER}\n```\n如需调整请告诉我。",
        f"```\n{ANSWER}\n```",
        f"<think>想一想</think>\n好的：\n```json\n{ANSWER}\n```",
        f"以下是结果 {ANSWER} 希望有帮助",
        f"Here is the JSON you asked for:\n{ANSWER}\nLet me know [if] anything else is needed.",
        f"[{ANSWER}]",
        f"结果：\n[\n  {ANSWER}\n]",
        ANSWER[:-1] + ",}",
        ANSWER[:-1] + ",\n}",
        f"```json\n{ANSWER}",  # fence never closed
        "json\n" + ANSWER,
    ],
)
def test_answers_real_models_give_parse_to_the_object(content: str) -> None:
    assert parse_teacher_json(content) == LABEL


def test_typographic_quotes_around_keys_are_repaired() -> None:
    content = "{“name”: “张三”, “phone”: null, “email”: null}"
    assert parse_teacher_json(content) == {"name": "张三", "phone": None, "email": None}


def test_typographic_quotes_inside_values_are_kept() -> None:
    content = '{"question": "他说“明天到”，结果没到", "name": null}'
    assert parse_teacher_json(content)["question"] == "他说“明天到”，结果没到"


def test_trailing_commas_in_nested_lists_and_objects() -> None:
    content = '{"a": [1, 2, ], "b": {"c": "x, ]",},}'
    assert parse_teacher_json(content) == {"a": [1, 2], "b": {"c": "x, ]"}}


def test_first_object_wins_and_nested_objects_are_not_returned_alone() -> None:
    content = '第一个 {"a": {"inner": 1}} 第二个 {"b": 2}'
    assert parse_teacher_json(content) == {"a": {"inner": 1}}


def test_braces_in_prose_are_not_mistaken_for_json() -> None:
    content = 'I used the {name} and [注意] placeholders. Answer: {"name": "李四"}'
    assert parse_teacher_json(content) == {"name": "李四"}


def test_unterminated_think_uses_the_last_object_after_the_reasoning() -> None:
    content = '<think>the example {"name": "示例"} is not the answer... so: {"name": "王五"}'
    assert parse_teacher_json(content) == {"name": "王五"}


def test_fenced_block_is_preferred_over_objects_in_prose() -> None:
    content = 'Schema: {"type": "object"}\n```json\n{"name": "赵六"}\n```'
    assert parse_teacher_json(content) == {"name": "赵六"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "empty answer"),
        ("", "empty answer"),
        ("   \n\t", "empty answer"),
        ("抱歉，我无法处理这个请求。", "no JSON object"),
        ('{"name": "张三", "phone": "138', "truncated JSON"),
        ('```json\n{"name": "张三", "phone": ', "truncated JSON"),
        ('{"a": {"b": 1}, "c": ', "truncated JSON"),
        ("<think>还在想，电话可能是", "no JSON object"),
        ('<think>still thinking {"name": "张', "truncated JSON"),
        ("<think>only reasoning</think>", "only reasoning"),
        ('[{"a": 1}, {"b": 2}]', "list of 2 items"),
        ('["a", "b"]', "no JSON object"),
        ('{"name": 张三}', "unreadable JSON"),
        ("[1, 2, 3]", "no JSON object"),
    ],
)
def test_unusable_answers_raise_a_short_reason(content: str | None, reason: str) -> None:
    with pytest.raises(AnswerParseError) as error:
        parse_teacher_json(content)
    assert reason in str(error.value)
    assert len(str(error.value)) < 120


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(AnswerParseError, ValueError)


def test_lists_for_augmentation_answers() -> None:
    texts = ["投诉一：快递丢了", "投诉二：电话 13800000000"]
    answer = json.dumps(texts, ensure_ascii=False)
    assert parse_teacher_list(answer) == texts
    assert parse_teacher_list(f"<think>写两条</think>\n```json\n{answer}\n```") == texts
    assert parse_teacher_list('["a", "b",]') == ["a", "b"]
    with pytest.raises(AnswerParseError, match="not an array"):
        parse_teacher_list('{"a": 1}')
    with pytest.raises(AnswerParseError, match="truncated"):
        parse_teacher_list('["a", "b')


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    # Backticks and angle brackets would read as fences and tags in the wrappers below.
    st.text(alphabet=st.characters(blacklist_characters="`<>", blacklist_categories=("Cs",))),
)
_objects = st.dictionaries(
    st.text(alphabet=st.characters(blacklist_characters="`<>", blacklist_categories=("Cs",))),
    _values,
    max_size=6,
)
_wrappers = st.sampled_from(
    [
        "{}",
        "结果如下：{}谢谢",
        "```json\n{}\n```",
        "<think>思考 [注意] 中</think>\n{}",
        "前言\n```\n{}\n```\n后记",
        "[{}]",
    ]
)


@settings(max_examples=300, deadline=None)
@given(_objects, _wrappers, st.booleans())
def test_any_object_survives_any_wrapper(obj: dict, wrapper: str, ascii_only: bool) -> None:
    content = wrapper.replace("{}", json.dumps(obj, ensure_ascii=ascii_only))
    assert parse_teacher_json(content) == obj


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_either_parses_or_raises_answer_parse_error(content: str) -> None:
    with contextlib.suppress(AnswerParseError):
        assert isinstance(parse_teacher_json(content), dict)
