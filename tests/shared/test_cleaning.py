"""Cleaning rules and rejection reasons, shared by ingest, distillation and serving."""

from __future__ import annotations

import html
import random
import unicodedata

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.cleaning import (
    RejectReason,
    clean_text,
    clean_texts,
    clean_with_offsets,
    reject_reasons,
)
from shared.samples import generate_complaints


def reasons_of(texts: list[str], **limits: float) -> list[str | None]:
    options = {"min_chars": 5, "max_chars": 50, "min_text_ratio": 0.5, **limits}
    return reject_reasons(pa.array(texts, type=pa.string()), **options).to_pylist()


def test_nulls_become_empty_strings() -> None:
    assert clean_texts(pa.array([None, "投诉", None], type=pa.string())).to_pylist() == [
        "",
        "投诉",
        "",
    ]


def test_line_break_tags_become_newlines() -> None:
    assert clean_text("第一行<br>第二行<BR/>第三行<br />第四行") == "第一行\n第二行\n第三行\n第四行"


def test_closing_paragraph_and_div_become_newlines() -> None:
    assert clean_text("<p>第一段</p><div class='x'>第二段</div>结尾") == "第一段\n第二段\n结尾"


def test_other_tags_are_removed() -> None:
    assert clean_text('<span style="color:red">退款</span><!-- x --><b>未到账</b>') == "退款未到账"


def test_text_that_only_looks_like_a_tag_is_kept() -> None:
    assert clean_text("金额 < 5 元, 且 a<3") == "金额 < 5 元, 且 a<3"


def test_named_entities_are_unescaped() -> None:
    assert clean_text("A&amp;B&nbsp;&lt;5 &gt; &quot;D&quot; &#39;E&#39;") == "A&B <5 > \"D\" 'E'"


def test_escaped_tags_are_removed_once_decoded() -> None:
    # Left in place, "<b>" would be removed by a second cleaning: cleaning must be idempotent.
    assert clean_text("&lt;b&gt;加粗&lt;/b&gt;") == "加粗"


@pytest.mark.parametrize("entity", ["&#20013;", "&#x4e2d;", "&#X4E2D;", "&#128;", "&#0;", "&#65;"])
def test_numeric_entities_are_unescaped_like_html_unescape(entity: str) -> None:
    assert clean_text(f"x{entity}y") == f"x{html.unescape(entity)}y"


def test_unknown_entities_are_kept() -> None:
    assert clean_text("&foo; &amp") == "&foo; &amp"


def test_double_escaped_markup_is_decoded_completely() -> None:
    assert clean_text("&amp;lt;b&amp;gt;加粗&amp;lt;/b&amp;gt;") == "加粗"


def test_nfkc_folds_full_width_forms_and_ideographic_space() -> None:
    assert clean_text("ＡＢＣ１２３，你好！\u3000（测试）") == "ABC123,你好! (测试)"


def test_nfkc_applies_beyond_full_width_ascii() -> None:
    assert clean_text("等了很久……①号￥５０ ℃") == "等了很久......1号¥50 °C"


def test_fast_path_equals_nfkc() -> None:
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0xFF01, 0xFF5F) if chr(c) not in "＜＆"]
    alphabet += list("投诉退款电话abcXYZ019,.!?。、“”《》")
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(300)]
    expected = [unicodedata.normalize("NFKC", text).strip() for text in texts]
    assert clean_texts(pa.array(texts)).to_pylist() == expected


def test_control_characters_are_removed_but_newline_and_tab_kept() -> None:
    assert clean_text("a\x00b\x07c\x1bd\x7fe\x85f\ng\th") == "abcdef\ng h"


def test_zero_width_characters_are_removed() -> None:
    assert clean_text("\ufeff退\u200b款\u200d未\u2060到\u200f账") == "退款未到账"


def test_homoglyphs_are_repaired_inside_latin_words() -> None:
    assert clean_text("邮箱 zhАng@163.соm 订单 АВС123") == "邮箱 zhAng@163.com 订单 АВС123"


def test_homoglyph_repair_covers_the_whole_word() -> None:
    assert clean_text("КОНТАКТ-x") == "KOHTAKT-x"


def test_genuine_cyrillic_words_are_left_alone() -> None:
    text = "Москва, улица Тверская, дом 7"
    assert clean_text(text) == text


def test_carriage_returns_become_newlines() -> None:
    assert clean_text("a\r\nb\rc") == "a\nb\nc"


def test_bare_carriage_return_before_a_block_end_is_its_own_line_break() -> None:
    assert clean_text("甲\r</div><div>乙\r</div>") == clean_text("甲\n</div><div>乙\n</div>")
    assert clean_text("甲\r</div><div>乙") == "甲\n\n乙"


def test_tabs_and_runs_of_spaces_become_one_space() -> None:
    assert clean_text("a \t  b\t\tc\u3000\u3000d") == "a b c d"


def test_spaces_around_newlines_are_removed() -> None:
    assert clean_text("a  \n  b") == "a\nb"


def test_three_or_more_newlines_become_two() -> None:
    assert clean_text("a\n\nb\n\n\n\nc\n \n \n d") == "a\n\nb\n\nc\n\nd"


def test_both_ends_are_trimmed() -> None:
    assert clean_text(" \n\t 投诉 \u3000\n") == "投诉"


# Inputs whose cleaning reveals new markup or composes characters.
TRICKY = [
    "<p>您好</p>&amp;lt;br&amp;gt;",
    "＜ｂｒ＞第二行",
    "<\u200bb>粗体</b>",
    "zе\u0301b",
    "a\u00a8 b",
    "&#65308;br&#65310;x",
    "x &#8203; y",
]


@pytest.mark.parametrize("text", TRICKY)
def test_cleaning_is_idempotent_on_tricky_inputs(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once


def test_chunked_large_string_input_keeps_its_type() -> None:
    chunked = pa.chunked_array([["<b>A</b>", None], [], ["ｘ  y"]], type=pa.large_string())
    cleaned = clean_texts(chunked)
    assert isinstance(cleaned, pa.Array)
    assert cleaned.type == pa.large_string()
    assert cleaned.to_pylist() == ["A", "", "x y"]


def test_sliced_input_is_cleaned_from_its_offset() -> None:
    arr = pa.array(["甲 ", "<i>乙</i>", "丙\u3000"]).slice(1)
    assert clean_texts(arr).to_pylist() == ["乙", "丙"]


def test_many_rows_across_internal_pieces_keep_their_order() -> None:
    texts = [f"<b>第{i}条</b>\u3000投诉" if i % 3 else f"第{i}条，投诉" for i in range(40_000)]
    expected = [f"第{i}条 投诉" if i % 3 else f"第{i}条,投诉" for i in range(40_000)]
    assert clean_texts(pa.array(texts)).to_pylist() == expected


def test_clean_text_replaces_lone_surrogates() -> None:
    assert clean_text("a\ud800b") == "a\ufffdb"


def test_null_typed_input_is_all_empty() -> None:
    assert clean_texts(pa.array([None, None])).to_pylist() == ["", ""]


def test_non_string_input_is_refused() -> None:
    with pytest.raises(TypeError):
        clean_texts(pa.array([1, 2]))


def test_clean_text_matches_clean_texts() -> None:
    text = "  <p>投诉：ＡＢＣ</p>\r\n\r\n\r\n电话 1380013800０  "
    assert clean_text(text) == clean_texts(pa.array([text]))[0].as_py()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=8))
def test_cleaning_is_idempotent_and_total_on_any_text(texts: list[str]) -> None:
    once = clean_texts(pa.array(texts, type=pa.string()))
    assert clean_texts(once).equals(once)


MARKUP_HEAVY = st.text(
    alphabet=st.sampled_from(list("<>/&#;x0123abrpdivnbspamltgqo \t\n\r\u200bＡАаеᅡ\u0301＜＆"))
    | st.characters(codec="utf-8"),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(MARKUP_HEAVY, max_size=8))
def test_cleaning_is_idempotent_on_markup_heavy_text(texts: list[str]) -> None:
    once = clean_texts(pa.array(texts, type=pa.string()))
    assert clean_texts(once).equals(once)


def test_reject_empty() -> None:
    assert reasons_of([""]) == [RejectReason.EMPTY]


def test_reject_null_as_empty() -> None:
    assert reject_reasons(
        pa.array([None], type=pa.string()), min_chars=1, max_chars=9, min_text_ratio=0.0
    ).to_pylist() == ["empty"]


def test_reject_too_short() -> None:
    assert reasons_of(["投诉"]) == [RejectReason.TOO_SHORT]


def test_reject_too_long() -> None:
    assert reasons_of(["投" * 51]) == [RejectReason.TOO_LONG]


def test_reject_not_text() -> None:
    assert reasons_of(["#### 1234 5678 ----", "订单 1234567890123"]) == ["not_text", "not_text"]


def test_not_text_counts_letters_of_every_script() -> None:
    texts = ["Ünïcödé çà 12", "Москва 123", "一丁七万丈 99", "䷀䷁䷂䷃䷄ab", "ㄅㄆㄇ 한국어 12"]
    assert reasons_of(texts) == [None, None, None, "not_text", None]


def test_valid_rows_have_no_reason() -> None:
    assert reasons_of(["我要投诉退款问题 123", "Refund not received"]) == [None, None]


def test_reject_reasons_first_match_wins() -> None:
    # Each of these also fails every later check.
    assert reasons_of(["", "12", "1" * 60], min_chars=3, max_chars=50) == [
        "empty",
        "too_short",
        "too_long",
    ]


def test_reject_length_counts_characters_not_bytes() -> None:
    assert reasons_of(["投诉五个字", "投诉四字"], min_chars=5) == [None, "too_short"]


def test_reject_reasons_accept_chunked_input() -> None:
    chunked = pa.chunked_array([["", "投诉退款问题"], ["####"]])
    assert reject_reasons(chunked, min_chars=5, max_chars=50, min_text_ratio=0.5).to_pylist() == [
        "empty",
        None,
        "too_short",
    ]


def test_reject_reasons_refuse_bad_limits() -> None:
    with pytest.raises(ValueError):
        reasons_of(["x"], min_chars=10, max_chars=5)
    with pytest.raises(ValueError):
        reasons_of(["x"], min_text_ratio=1.5)


# -- one text with offsets (what the gateway uses) -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(MARKUP_HEAVY | st.text(), max_size=8))
def test_offset_cleaning_gives_the_vectorized_text(texts: list[str]) -> None:
    expected = clean_texts(pa.array(texts, type=pa.string())).to_pylist()
    assert [clean_with_offsets(text).text for text in texts] == expected


@pytest.mark.parametrize("text", [*TRICKY, "a\ud800b", "  \r\n\r\n\r\n  "])
def test_offset_cleaning_gives_the_vectorized_text_on_tricky_inputs(text: str) -> None:
    assert clean_with_offsets(text).text == clean_text(text)


def test_offset_cleaning_gives_the_vectorized_text_on_every_generator_noise() -> None:
    # Every style and noise kind the sample generator makes (HTML, full width, homoglyphs,
    # zero-width characters, whitespace runs, emoji, traditional characters).
    texts = generate_complaints(3000, seed=11).frame["投诉内容"].tolist()
    expected = clean_texts(pa.array(texts, type=pa.string())).to_pylist()
    assert [clean_with_offsets(text).text for text in texts] == expected


def test_every_label_value_maps_back_to_its_original_characters() -> None:
    labels = generate_complaints(2000, seed=5).labels
    checked = 0
    for row in labels.to_dict("records"):
        cleaned = clean_with_offsets(row["text"])
        for field in ("name", "phone", "email", "address"):
            value = row[field]
            if not isinstance(value, str) or value not in cleaned.text:
                continue
            index = cleaned.text.index(value)
            start, end = cleaned.source_span(index, index + len(value))
            # The original characters clean to exactly the value.
            assert clean_text(row["text"][start:end]) == value
            checked += 1
    assert checked > 2000


def test_offsets_point_past_markup_full_width_and_invisible_characters() -> None:
    original = "<p>我叫&nbsp;张\u200b三</p>电话：１３８ ００１３ ８０００，邮箱 zhАng@163.com"
    cleaned = clean_with_offsets(original)
    assert cleaned.text == "我叫 张三\n电话:138 0013 8000,邮箱 zhAng@163.com"
    for value, source in [
        ("张三", "张\u200b三"),
        ("138 0013 8000", "１３８ ００１３ ８０００"),
        ("zhAng@163.com", "zhАng@163.com"),
    ]:
        index = cleaned.text.index(value)
        start, end = cleaned.source_span(index, index + len(value))
        assert original[start:end] == source


def test_a_character_nfkc_expands_maps_to_its_source_character() -> None:
    cleaned = clean_with_offsets("甲㈱乙")
    assert cleaned.text == "甲(株)乙"
    assert [cleaned.source_span(i, i + 1) for i in range(5)] == [
        (0, 1),
        (1, 2),
        (1, 2),
        (1, 2),
        (2, 3),
    ]


def test_source_span_refuses_an_empty_or_outside_span() -> None:
    with pytest.raises(ValueError):
        clean_with_offsets("abc").source_span(2, 2)
    with pytest.raises(ValueError):
        clean_with_offsets("abc").source_span(0, 4)
