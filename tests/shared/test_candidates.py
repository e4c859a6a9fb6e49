"""The stretches of a text a typed field may take: what decoding lets the model choose from."""

from __future__ import annotations

import pytest

from shared.candidates import MAX_CANDIDATES, candidates
from shared.schema import DEFAULT_SCHEMA, EMAIL_PATTERN, PHONE_PATTERN, ExtractionSchema


@pytest.mark.parametrize(
    ("text", "phones"),
    [
        ("我叫王芳，电话13800138000，快递丢了", ["13800138000"]),
        ("手机是 139 1234 5678，谢谢", ["139 1234 5678"]),
        # A number run on into a date still offers the number alone.
        ("电话13800138000 2024年3月5日", ["13800138000 2024", "13800138000"]),
        ("Tel: +86 138-0013-8000", ["+86 138-0013-8000", "138-0013-8000"]),
        ("(852) 9123 4567 转 123", ["(852) 9123 4567 转 123"]),
        ("我的电话是一三八零零一三八零零零谢谢", ["一三八零零一三八零零零"]),
        ("13800138000、13900139000", ["13800138000", "13900139000"]),
        ("快递一直没有送到，很生气", []),
    ],
)
def test_phone_candidates_are_the_longest_stretches_and_their_pieces(
    text: str, phones: list[str]
) -> None:
    assert candidates(PHONE_PATTERN, text) == phones


def test_email_candidates_are_whole_addresses() -> None:
    text = "Email:A.b@x.com.cn。或 c@d.org，电话13800138000"
    assert candidates(EMAIL_PATTERN, text) == ["A.b@x.com.cn", "c@d.org"]
    assert candidates(EMAIL_PATTERN, "没有邮箱 13800138000") == []


def test_candidates_are_capped() -> None:
    text = "，".join(f"138{i:08d}" for i in range(MAX_CANDIDATES + 10))
    found = candidates(PHONE_PATTERN, text)
    assert len(found) == MAX_CANDIDATES
    assert found[0] == "13800000000"


def test_grounded_decoding_schema_offers_only_the_texts_values() -> None:
    schema = ExtractionSchema(DEFAULT_SCHEMA)
    decoding = schema.grounded_decoding_schema("我叫王芳，电话13800138000，快递丢了")
    properties = decoding["properties"]
    assert properties["phone"] == {"enum": ["13800138000", None]}
    # No e-mail in the text: null is the only answer, so a phone cannot become an e-mail.
    assert properties["email"] == {"type": "null"}
    # Fields without a format stay free strings (still grounded after decoding).
    assert properties["name"]["type"] == ["string", "null"]
    assert properties["question"]["type"] == ["string", "null"]
    # Every candidate answer is valid under the schema the rest of the system checks.
    assert schema.value_fits("phone", "13800138000")
