"""Value normalization and grounding: the comparison rules distill, train and serve share."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shared.cleaning import clean_texts
from shared.normalize import coverage, field_grounded, is_grounded, normalize_value
from shared.samples import FIELDS, generate_complaints
from shared.schema import get_schema

TEXT = (
    "我叫王建国，电话+86 138 0013 8000，邮箱 Wang.JG@Example.com，住在上海市浦东新区 张杨路500号。"
    "编号123 13900001111，备用手机186****2233。刘女士 130 0437 9000 2468860528@qq.com"
)


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("+86 138-0013-8000", "phone", "13800138000"),
        ("0086 138 0013 8000", "phone", "13800138000"),
        ("+852 9123 4567", "phone", "+85291234567"),
        ("一三八 零零一三 八零零零", "phone", "13800138000"),
        ("（010）8888 6666", "phone", "01088886666"),
        ("１３８＊＊＊＊８０００", "phone", "138****8000"),
        ("电话：", "phone", ""),
        (" Wang.JG@Example.COM ", "email", "wang.jg@example.com"),
        ("张\u200b 三", "text", "张三"),
        ("ＡＢＣ 路", "text", "abc路"),
        (None, "text", None),
    ],
)
def test_normalize_value(value: str | None, kind: str, expected: str | None) -> None:
    assert normalize_value(value, kind) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "phone",
    [
        "13800138000",
        "+8613800138000",
        "+86 138 0013 8000",
        "138-0013-8000",
        "13900001111",  # a digit group earlier on the line does not glue onto it
        "186****2233",
        "13004379000",  # an e-mail glued after it does not extend it
    ],
)
def test_phone_written_differently_is_grounded(phone: str) -> None:
    assert is_grounded(phone, TEXT, "phone")


@pytest.mark.parametrize(
    "phone",
    [
        "13912345678",  # invented
        "18600002233",  # unmasked digits the text never showed
        "8001380",  # from inside a number
        "1380013800",  # a digit short
        "****",
    ],
)
def test_invented_or_partial_phone_is_not_grounded(phone: str) -> None:
    assert not is_grounded(phone, TEXT, "phone")


def test_email_and_text_grounding() -> None:
    assert is_grounded("wang.jg@example.com", TEXT, "email")
    assert is_grounded("2468860528@qq.com", TEXT, "email")
    assert not is_grounded("wangjg@example.com", TEXT, "email")
    assert is_grounded("上海市浦东新区张杨路500号", TEXT, "text")
    assert is_grounded("王建国", TEXT, "text")
    assert not is_grounded("王小明", TEXT, "text")


def test_coverage() -> None:
    question = "上个月买的冰箱制冷不好，售后一直不上门。"
    text = f"您好，{question}我的电话13800138000"
    assert coverage(question, text) == 1.0
    assert coverage("上个月买的冰箱制冷不好，售后一直都不上门。", text) >= 0.8
    assert coverage("洗衣机漏水严重，要求退货", text) < 0.3
    assert coverage("", text) == 0.0


def test_field_grounded_follows_the_schema() -> None:
    specs = {spec.name: spec for spec in get_schema().fields}
    assert field_grounded(specs["phone"], None, TEXT)
    assert field_grounded(specs["email"], "WANG.JG@example.com", TEXT)
    assert not field_grounded(specs["name"], "李四", TEXT)
    assert not field_grounded(specs["question"], "完全不同的一个问题描述句子", TEXT)


def test_generated_ground_truth_is_grounded_in_the_cleaned_text() -> None:
    labels = generate_complaints(400, seed=3).labels
    labels = labels[labels["kind"] == "original"]
    cleaned = clean_texts(pa.array(labels["text"].tolist(), type=pa.string())).to_pylist()
    specs = {spec.name: spec for spec in get_schema().fields}
    misses = [
        (name, row[name])
        for row, text in zip(labels.to_dict("records"), cleaned, strict=True)
        for name in FIELDS
        if isinstance(row[name], str) and not field_grounded(specs[name], row[name], text)
    ]
    assert misses == []
