"""Tests for the deterministic messy-sample generator."""

from __future__ import annotations

import difflib
import html
import json
import random
import re
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from shared.normalize import normalize_value
from shared.samples import (
    FIELDS,
    SampleExport,
    generate_complaints,
    labels_path_for,
    write_export,
)
from shared.schema import DEFAULT_SCHEMA, ExtractionSchema

ROWS = 20_000
CONTACT_FIELDS = ("name", "phone", "email", "address")
# Contact details and complaint mixed the way people write them.
COMPOSITIONAL_STYLES = {
    "inline",
    "terse",
    "anonymous",
    "on_behalf",
    "several_numbers",
    "hk_tw",
    "english_labels",
    "record",
    "html_form",
    "ticket",
    "transcript_turns",
    "chat_turns",
    "narrative",
}
STYLES = COMPOSITIONAL_STYLES | {
    "hotline",
    "email",
    "chat",
    "letter",
    "form",
    "bilingual",
    "traditional",
    "prose_start",
    "prose_middle",
    "prose_end",
    "app_feedback",
    "transcript",
    "forwarded",
}
FORMATS = ("csv", "xlsx", "jsonl", "parquet")

_CYRILLIC = "АВСЕНКМОРТХаеорсх"
_LATIN = "ABCEHKMOPTXaeopcx"
_REPAIR = str.maketrans(_CYRILLIC, _LATIN)
_INJECTION_MARKERS = (
    "忽略以上",
    "系统指令",
    "去世的奶奶",
    "Ignore all previous",
    "<system>",
    "最高优先级",
    "DAN",
    "###指令###",
    "[INST]",
    "无需处理",
    "测试数据",
    '"name"',
)


def nfkc_repair(text: str) -> str:
    """The grounding view of a text: NFKC plus Cyrillic-to-Latin homoglyph repair."""
    return unicodedata.normalize("NFKC", text).translate(_REPAIR)


def clean(text: str) -> str:
    """The standard cleaning: entities, tags, NFKC, homoglyphs, whitespace folding."""
    text = html.unescape(text)
    text = re.sub(r"<[^>]*>", " ", text)
    text = nfkc_repair(text)
    return re.sub(r"\s+", " ", text).strip()


def copied_pieces(value: str, text: str) -> int | None:
    """Into how many pieces of `text`, taken in order, `value` splits (greedy, longest first);
    None when it is not copied from `text`. A question leaves out contact details in the middle
    of a complaint, so it may be several pieces."""
    pieces, at, rest = 0, 0, value
    while rest:
        low, high = 0, len(rest)
        while low < high:
            mid = (low + high + 1) // 2
            if text.find(rest[:mid], at) >= 0:
                low = mid
            else:
                high = mid - 1
        if low == 0:
            return None
        at = text.find(rest[:low], at) + low
        rest = rest[low:]
        pieces += 1
    return pieces


def grams(text: str, k: int = 5) -> set[str]:
    return {text[i : i + k] for i in range(len(text) - k + 1)}


def jaccard(a: str, b: str) -> float:
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / max(1, len(ga | gb))


@pytest.fixture(scope="module")
def sample() -> SampleExport:
    return generate_complaints(ROWS, seed=11)


@pytest.fixture(scope="module")
def labels(sample: SampleExport) -> pd.DataFrame:
    return sample.labels


@pytest.fixture(scope="module")
def small() -> SampleExport:
    return generate_complaints(600, seed=5)


def read_back(fmt: str, path: Path) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    if fmt == "xlsx":
        sheets = pd.read_excel(path, sheet_name=None, dtype=str, keep_default_na=False)
        return pd.concat(sheets.values(), ignore_index=True)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


# ------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames_and_labels() -> None:
    a = generate_complaints(3000, seed=7)
    b = generate_complaints(3000, seed=7)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.labels, b.labels)


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_gives_byte_identical_exports(fmt: str, tmp_path: Path) -> None:
    paths = []
    for run in ("a", "b"):
        out = tmp_path / run / f"export.{fmt}"
        labels_path = write_export(generate_complaints(800, seed=3), fmt, out)
        paths.append((out, labels_path))
    (out_a, labels_a), (out_b, labels_b) = paths
    assert out_a.read_bytes() == out_b.read_bytes()
    assert labels_a.read_bytes() == labels_b.read_bytes()


def test_different_seeds_give_different_texts() -> None:
    a = generate_complaints(500, seed=1).frame["投诉内容"]
    b = generate_complaints(500, seed=2).frame["投诉内容"]
    assert (a != b).mean() > 0.9


@pytest.mark.parametrize("rows", [0, -1, -100])
def test_rows_below_one_are_rejected(rows: int) -> None:
    with pytest.raises(ValueError, match="rows"):
        generate_complaints(rows)


def test_single_row_is_an_original_complaint() -> None:
    export = generate_complaints(1, seed=0)
    assert len(export.frame) == 1
    assert export.labels["kind"].iloc[0] == "original"
    assert export.labels["question"].iloc[0]


# ----------------------------------------------------------------------------------- shapes


def test_frame_has_the_export_columns(sample: SampleExport) -> None:
    assert list(sample.frame.columns) == ["工单编号", "投诉内容", "渠道", "提交时间"]
    assert len(sample.frame) == ROWS


def test_labels_have_one_row_per_export_row_in_order(sample: SampleExport) -> None:
    assert list(sample.labels.columns) == [
        "id",
        "text",
        *FIELDS,
        "style",
        "kind",
        "duplicate_of",
        "injection",
    ]
    assert sample.labels["id"].tolist() == sample.frame["工单编号"].tolist()
    assert sample.labels["text"].tolist() == sample.frame["投诉内容"].tolist()


def test_ticket_ids_are_unique_and_well_formed(sample: SampleExport) -> None:
    ids = sample.frame["工单编号"]
    assert ids.is_unique
    assert ids.str.fullmatch(r"TS2026\d{6,}").all()


def test_channels_come_from_the_known_set(sample: SampleExport) -> None:
    assert set(sample.frame["渠道"]) == {"热线", "邮件", "在线客服", "信函", "APP"}


def test_timestamps_are_sorted_and_within_the_first_half_of_2026(sample: SampleExport) -> None:
    times = sample.frame["提交时间"]
    assert times.str.fullmatch(r"2026-0[1-6]-\d\d \d\d:\d\d:\d\d").all()
    assert times.is_monotonic_increasing


def test_missing_label_values_are_none_not_nan(labels: pd.DataFrame) -> None:
    for field in (*FIELDS, "duplicate_of"):
        values = labels[field].tolist()
        assert all(v is None or isinstance(v, str) for v in values), field


# --------------------------------------------------------------------------------- grounding


@pytest.mark.parametrize("field", CONTACT_FIELDS)
def test_label_values_are_substrings_of_the_nfkc_repaired_text(
    labels: pd.DataFrame, field: str
) -> None:
    present = labels[labels[field].notna()]
    missing = [
        (row.id, getattr(row, field))
        for row in present.itertuples(index=False)
        if getattr(row, field) not in nfkc_repair(row.text)
    ]
    assert not missing[:5]


@pytest.mark.parametrize("field", CONTACT_FIELDS)
def test_label_values_are_substrings_of_the_fully_cleaned_text(
    labels: pd.DataFrame, field: str
) -> None:
    present = labels[labels[field].notna()]
    missing = [
        (row.id, getattr(row, field))
        for row in present.itertuples(index=False)
        if getattr(row, field) not in clean(row.text)
    ]
    assert not missing[:5]


@pytest.mark.parametrize("view", [nfkc_repair, clean])
def test_questions_are_copied_from_the_text_in_order(labels: pd.DataFrame, view) -> None:
    # The guide: contact details inside a sentence are dropped, the rest is kept as written.
    pieces = [
        (row.id, copied_pieces(row.question, view(row.text)))
        for row in labels[labels["question"].notna()].itertuples(index=False)
    ]
    assert not [(id_, n) for id_, n in pieces if n is None or n > 8][:5]
    split = [id_ for id_, n in pieces if n is not None and n > 1]
    assert len(split) > 0.02 * len(pieces)


def test_label_values_are_already_clean(labels: pd.DataFrame) -> None:
    for field in FIELDS:
        for value in labels[field].dropna():
            assert value == clean(value), (field, value)
            assert value.strip() == value


def test_fullwidth_phone_digits_are_labelled_in_ascii(labels: pd.DataFrame) -> None:
    wide = labels[labels["phone"].notna() & labels["text"].str.contains("[０-９]{3}")]
    wide = wide[[row.phone not in row.text for row in wide.itertuples(index=False)]]
    assert len(wide) > 20
    # Phones spelled in Chinese numerals stay so (their full-width spaces become ASCII ones).
    assert wide["phone"].str.fullmatch(r"[0-9+\-() *零〇一二三四五六七八九幺]+").all()


def test_homoglyph_emails_are_labelled_in_latin(labels: pd.DataFrame) -> None:
    spoofed = labels[labels["email"].notna()]
    spoofed = spoofed[[row.email not in row.text for row in spoofed.itertuples(index=False)]]
    spoofed = spoofed[spoofed["text"].str.contains(f"[{_CYRILLIC}]")]
    assert len(spoofed) > 20
    assert spoofed["email"].map(str.isascii).all()


def test_question_is_the_complaint_body_not_the_contact_details(labels: pd.DataFrame) -> None:
    originals = labels[labels["kind"] == "original"]
    for row in originals.itertuples(index=False):
        for field in CONTACT_FIELDS:
            value = getattr(row, field)
            # An anonymous report's address is the place it is about, which the story keeps.
            place = field == "address" and row.style == "anonymous"
            if value is not None and len(value) > 3 and not place:
                assert value not in row.question, (row.id, field)


def test_staff_names_are_never_labelled_as_the_complainant(labels: pd.DataFrame) -> None:
    staff_re = re.compile(r"(?:受理坐席：工号\d+ |客服（工号\d+ )(\S+?)[）\n]")
    checked = 0
    for row in labels[labels["kind"] == "original"].itertuples(index=False):
        match = staff_re.search(row.text)
        if match and row.name is not None:
            assert row.name != match.group(1), row.id
            checked += 1
    assert checked > 300


def test_injected_instructions_never_reach_the_labels(labels: pd.DataFrame) -> None:
    injected = labels[labels["injection"]]
    assert 0.015 < len(injected) / len(labels) < 0.05
    for row in injected.itertuples(index=False):
        for field in FIELDS:
            value = getattr(row, field)
            if value is not None:
                assert not any(marker in value for marker in _INJECTION_MARKERS), row.id
        assert row.name not in ("管理员", "admin", "张三", "root")


def test_injected_rows_carry_the_injection_in_their_text(labels: pd.DataFrame) -> None:
    injected = labels[labels["injection"] & (labels["kind"] == "original")]
    hits = [any(m in clean(t) for m in _INJECTION_MARKERS) for t in injected["text"]]
    assert sum(hits) / len(hits) > 0.8


# ------------------------------------------------------------------------------ distributions


@pytest.mark.parametrize("field", CONTACT_FIELDS)
def test_contact_field_presence_rate_is_realistic(labels: pd.DataFrame, field: str) -> None:
    assert 0.70 <= labels[field].notna().mean() <= 0.85


def test_every_complaint_has_a_question(labels: pd.DataFrame) -> None:
    with_text = labels[labels["kind"].isin(["original", "exact_duplicate", "near_duplicate"])]
    assert with_text["question"].notna().all()


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [
        ("empty", 0.005, 0.016),
        ("exact_duplicate", 0.014, 0.027),
        ("near_duplicate", 0.022, 0.038),
        ("overlong", 0.002, 0.009),
        ("not_text", 0.002, 0.009),
    ],
)
def test_special_row_fractions(labels: pd.DataFrame, kind: str, low: float, high: float) -> None:
    assert low <= (labels["kind"] == kind).mean() <= high


def test_all_styles_appear_roughly_equally(labels: pd.DataFrame) -> None:
    counts = labels.loc[labels["kind"] == "original", "style"].value_counts(normalize=True)
    assert set(counts.index) == STYLES
    assert counts.min() > 0.5 / len(STYLES)
    assert counts.max() < 1.5 / len(STYLES)


def test_compositional_styles_make_up_about_half(labels: pd.DataFrame) -> None:
    styles = labels.loc[labels["kind"] == "original", "style"]
    assert 0.4 <= styles.isin(COMPOSITIONAL_STYLES).mean() <= 0.55


# -------------------------------------------------------------------- compositional variety


def originals_of(labels: pd.DataFrame, style: str) -> pd.DataFrame:
    return labels[(labels["kind"] == "original") & (labels["style"] == style)]


def test_labels_fit_the_extraction_schema(labels: pd.DataFrame) -> None:
    schema = ExtractionSchema(DEFAULT_SCHEMA)
    rows = labels.loc[labels["kind"] == "original", list(FIELDS)].to_dict("records")
    errors = [(row, schema.errors(row)) for row in rows]
    assert not [e for e in errors if e[1]][:3]


def test_inline_contact_details_sit_inside_the_complaint(labels: pd.DataFrame) -> None:
    inline = originals_of(labels, "inline")
    split = inline[
        [
            copied_pieces(q, clean(t)) != 1
            for q, t in zip(inline["question"], inline["text"], strict=True)
        ]
    ]
    assert len(split) > 0.3 * len(inline)
    bracketed = inline["text"].str.contains(r"[（(][^）)]*(?:手机|电话|\d{11})")
    assert bracketed.mean() > 0.1


def test_phones_written_in_chinese_numerals_are_copied_as_written(labels: pd.DataFrame) -> None:
    phones = labels.loc[labels["kind"] == "original", "phone"].dropna()
    spelled = phones[phones.str.contains("[零〇一二三四五六七八九幺]")]
    assert len(spelled) > 0.03 * len(phones)
    assert spelled.str.contains("幺").any()
    digits = spelled.map(lambda p: normalize_value(p, "phone"))
    assert digits.str.fullmatch(r"1\d{10}").all()


def test_hong_kong_and_taiwan_rows_keep_local_formats(labels: pd.DataFrame) -> None:
    rows = originals_of(labels, "hk_tw")
    phones = rows["phone"].dropna()
    assert phones.str.contains(r"^(?:\+852|\(852\)|852-)").any()
    assert phones.str.contains(r"^(?:\+886|09|\(0\d\)|0\d-)").any()
    assert rows["address"].dropna().str.contains("[號樓]").all()
    assert (
        rows["question"].str.contains("[們這個說請處時間買錢發號網費喺咗嘅於訂購機後還沒]").mean()
        > 0.9
    )
    assert rows["name"].dropna().str.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+").any()


def test_numbers_that_are_not_the_complainants_are_never_the_phone(labels: pd.DataFrame) -> None:
    not_own = re.compile(
        r"(?:订单号|合同编号|户号|工号|尾号|店里电话|平台客服|快递员的电话|备用号码|备用"
        r"|的手机号是)[：:\s]*$"
    )
    rows = labels[(labels["kind"] == "original") & labels["phone"].notna()]
    for row in rows.itertuples(index=False):
        text = nfkc_repair(row.text)
        at = text.find(row.phone)
        assert at >= 0 and not not_own.search(text[:at]), row.id
    several = originals_of(labels, "several_numbers")
    assert several["phone"].notna().mean() > 0.6
    assert several["question"].str.contains(r"\d{5,}").mean() > 0.9


def test_anonymous_reports_have_no_name_and_the_place_as_address(labels: pd.DataFrame) -> None:
    rows = originals_of(labels, "anonymous")
    assert rows["name"].isna().all()
    places = rows[rows["address"].notna()]
    assert len(places) > 0.3 * len(rows)
    assert places["address"].str.contains(r"(?:号|交叉口|路口|号楼|栋)$").all()
    assert all(a in q for a, q in zip(places["address"], places["question"], strict=True))


def test_complaints_for_a_relative_label_the_writer(labels: pd.DataFrame) -> None:
    rows = originals_of(labels, "on_behalf")
    relative = re.compile(
        r"(?:叫|我妈|我母亲|我爸|我父亲|我奶奶|我外公|我爱人|我老公|我儿子|我女儿)(\w{2,3})[，,]"
    )
    checked = 0
    for row in rows.itertuples(index=False):
        named = relative.search(row.question)
        if named and row.name is not None:
            assert not row.name.startswith(named.group(1)), row.id
            checked += 1
        if row.name is not None:
            assert row.name not in row.question, row.id
    assert checked > 20
    assert rows["name"].isna().mean() > 0.3


@pytest.mark.parametrize("style", ["ticket", "html_form", "record", "english_labels"])
def test_form_labels_and_ticket_metadata_stay_out_of_the_question(
    labels: pd.DataFrame, style: str
) -> None:
    metadata = re.compile(
        r"工单号|工单编号|Ticket|渠道|提交时间|创建时间|受理时间|处理状态|优先级|<|>|\||姓名|"
        r"Name|Tel|Addr|Issue|Complaint|Description|编号|日期|主题|来源"
    )
    rows = originals_of(labels, style)
    assert len(rows) > 300
    assert not [q for q in rows["question"] if metadata.search(q)][:3]


# Speaker labels, chat times and greetings: the frame of a conversation, never the complaint.
CONVERSATION_FRAME = re.compile(
    r"(?:客服|坐席|话务员|接线员|客户|来电人|市民|用户|顾客)[:：]|\d\d:\d\d|在吗|有人吗|"
    r"请问您|感谢您的来电"
)


@pytest.mark.parametrize("style", ["transcript_turns", "chat_turns"])
def test_conversations_spread_the_complaint_over_turns(labels: pd.DataFrame, style: str) -> None:
    rows = originals_of(labels, style)
    assert len(rows) > 300
    assert not [q for q in rows["question"] if CONVERSATION_FRAME.search(q)][:3]
    pieces = [
        copied_pieces(q, clean(t)) for q, t in zip(rows["question"], rows["text"], strict=True)
    ]
    assert None not in pieces
    assert sum(n > 1 for n in pieces) > 0.5 * len(rows)
    for row in rows.itertuples(index=False):
        for field in CONTACT_FIELDS:
            value = getattr(row, field)
            assert value is None or value not in row.question, row.id


def test_transcript_agents_repeat_the_callers_name_in_short_form(labels: pd.DataFrame) -> None:
    rows = originals_of(labels, "transcript_turns")
    named = rows[rows["name"].notna() & rows["name"].str.fullmatch(r"[\u4e00-\u9fff]{2,3}")]
    repeated = named[
        [
            f"{name[0]}先生" in text or f"{name[0]}女士" in text
            for name, text in zip(named["name"], named["text"], strict=True)
        ]
    ]
    # The caller's own full form is the name, not the agent's 先生/女士 form (the guide).
    assert len(repeated) > 0.5 * len(named)


def test_narratives_are_long_with_staff_numbers_in_the_story(labels: pd.DataFrame) -> None:
    rows = originals_of(labels, "narrative")
    assert (
        rows["question"].str.len().median()
        > 1.5 * originals_of(labels, "prose_start")["question"].str.len().median()
    )
    assert rows["question"].str.contains(r"\d{7,}").mean() > 0.1
    introduced_inside = 0
    for row in rows.itertuples(index=False):
        text = clean(row.text)
        for field in CONTACT_FIELDS:
            value = getattr(row, field)
            assert value is None or value not in row.question, row.id
        if copied_pieces(row.question, text) not in (None, 1):
            introduced_inside += 1
    assert introduced_inside > 0.2 * len(rows)


def test_terse_messages_are_short(labels: pd.DataFrame) -> None:
    rows = originals_of(labels, "terse")
    assert rows["question"].str.len().max() <= 40
    assert rows["text"].map(lambda t: len(clean(t))).median() < 40


def test_empty_rows_are_blank_and_unlabelled(labels: pd.DataFrame) -> None:
    empty = labels[labels["kind"] == "empty"]
    assert (empty["text"].str.strip() == "").all()
    assert empty[list(FIELDS)].isna().all().all()


def test_not_text_rows_are_unlabelled(labels: pd.DataFrame) -> None:
    junk = labels[labels["kind"] == "not_text"]
    assert len(junk) > 0
    assert junk[list(FIELDS)].isna().all().all()
    cjk = junk["text"].map(lambda t: len(re.findall(r"[\u4e00-\u9fff]", t)) / max(1, len(t)))
    assert (cjk <= 0.5).all()


def test_overlong_rows_exceed_6000_characters(labels: pd.DataFrame) -> None:
    long_rows = labels[labels["kind"] == "overlong"]
    assert len(long_rows) > 0
    assert (long_rows["text"].str.len() > 6000).all()
    assert (labels.loc[labels["kind"] != "overlong", "text"].str.len() < 6000).all()


def test_exact_duplicates_repeat_an_earlier_original(labels: pd.DataFrame) -> None:
    position = {id_: i for i, id_ in enumerate(labels["id"])}
    dups = labels[labels["kind"] == "exact_duplicate"]
    assert len(dups) > 0
    for i, row in zip(dups.index, dups.itertuples(index=False), strict=True):
        j = position[row.duplicate_of]
        assert j < i
        assert labels["kind"].iat[j] == "original"
        assert row.text == labels["text"].iat[j]
        assert row.id != row.duplicate_of


def test_exact_duplicates_share_their_originals_labels(labels: pd.DataFrame) -> None:
    originals = labels.set_index("id")
    for row in labels[labels["kind"] == "exact_duplicate"].itertuples(index=False):
        source = originals.loc[row.duplicate_of]
        for field in FIELDS:
            assert getattr(row, field) == source[field]


def test_near_duplicates_differ_but_are_close(labels: pd.DataFrame) -> None:
    texts = dict(zip(labels["id"], labels["text"], strict=True))
    near = labels[labels["kind"] == "near_duplicate"]
    assert len(near) > 0
    for row in near.itertuples(index=False):
        original = texts[row.duplicate_of]
        assert row.text != original
        assert abs(len(row.text) - len(original)) <= 4
        matcher = difflib.SequenceMatcher(None, row.text, original)
        # A one-line message changes by a larger share for the same few characters.
        changed = sum(
            max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"
        )
        assert matcher.ratio() > 0.9 or (len(original) < 40 and changed <= 4), row.id


def test_different_originals_are_not_near_duplicates(labels: pd.DataFrame) -> None:
    texts = labels.loc[labels["kind"] == "original", "text"].tolist()
    rng = random.Random(0)
    scores = sorted(jaccard(*rng.sample(texts, 2)) for _ in range(2000))
    assert scores[len(scores) // 2] < 0.1
    assert scores[int(len(scores) * 0.99)] < 0.5


@pytest.mark.parametrize("style", ["form", "ticket", "html_form", "record", "english_labels"])
def test_same_style_originals_are_not_near_duplicates(labels: pd.DataFrame, style: str) -> None:
    texts = originals_of(labels, style)["text"].tolist()
    rng = random.Random(1)
    scores = sorted(jaccard(*rng.sample(texts, 2)) for _ in range(1000))
    assert scores[int(len(scores) * 0.99)] < 0.5


# ------------------------------------------------------------------------------------ noise


@pytest.mark.parametrize(
    "pattern",
    [
        r"<br|</p>|<div>",
        r"&nbsp;|&amp;",
        r"[０-９]",
        f"[{_CYRILLIC}]",
        "[\u200b\u200c\u200d\u2060]",
        "\r\n",
        "\t",
        "[\U0001f300-\U0001faff]",
    ],
)
def test_noise_kind_appears_in_some_rows(labels: pd.DataFrame, pattern: str) -> None:
    share = labels["text"].str.contains(pattern, regex=True).mean()
    assert 0.003 < share < 0.5


def test_traditional_style_uses_traditional_characters(labels: pd.DataFrame) -> None:
    trad = labels[(labels["kind"] == "original") & (labels["style"] == "traditional")]
    assert trad["text"].str.contains("[電話問題請務]").mean() > 0.9
    assert trad["question"].str.contains("[們這個說請處時間買錢發號網費]").mean() > 0.5


# ----------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_round_trips_with_labels_beside_it(
    small: SampleExport, fmt: str, tmp_path: Path
) -> None:
    out = tmp_path / "nested" / f"complaints.{fmt}"
    labels_path = write_export(small, fmt, out)
    assert labels_path == tmp_path / "nested" / "complaints.labels.jsonl"
    back = read_back(fmt, out)
    assert len(back) == len(small.frame)
    assert back["工单编号"].tolist() == small.frame["工单编号"].tolist()
    records = [json.loads(line) for line in labels_path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == small.labels["id"].tolist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_round_trips_texts_exactly(small: SampleExport, fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"complaints.{fmt}"
    write_export(small, fmt, out)
    back = read_back(fmt, out)
    assert back["投诉内容"].tolist() == small.frame["投诉内容"].tolist()


def test_xlsx_round_trips_texts_up_to_carriage_returns(small: SampleExport, tmp_path: Path) -> None:
    out = tmp_path / "complaints.xlsx"
    write_export(small, "xlsx", out)
    back = read_back("xlsx", out)

    def fold(text: str) -> str:
        return text.replace("\r\n", "\n").replace("\r", "\n")

    assert [fold(t) for t in back["投诉内容"]] == [fold(t) for t in small.frame["投诉内容"]]


def test_xlsx_splits_rows_over_two_quarter_sheets(small: SampleExport, tmp_path: Path) -> None:
    out = tmp_path / "complaints.xlsx"
    write_export(small, "xlsx", out)
    sheets = pd.read_excel(out, sheet_name=None, dtype=str)
    assert list(sheets) == ["2026Q1", "2026Q2"]
    assert all(len(frame) > 0 for frame in sheets.values())
    assert sheets["2026Q1"]["提交时间"].max() < "2026-04-01"
    assert sheets["2026Q2"]["提交时间"].min() >= "2026-04-01"


def test_xlsx_keeps_formula_like_text_as_text(tmp_path: Path) -> None:
    export = generate_complaints(10, seed=0)
    frame = export.frame.copy()
    frame.loc[0, "投诉内容"] = "==== 1234 ----"
    frame.loc[1, "投诉内容"] = "#N/A"
    out = tmp_path / "formula.xlsx"
    write_export(SampleExport(frame=frame, labels=export.labels), "xlsx", out)
    back = read_back("xlsx", out)
    assert back["投诉内容"].tolist()[:2] == ["==== 1234 ----", "#N/A"]


def test_csv_is_utf8_with_bom(small: SampleExport, tmp_path: Path) -> None:
    out = tmp_path / "complaints.csv"
    write_export(small, "csv", out)
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")


def test_jsonl_keeps_chinese_unescaped(small: SampleExport, tmp_path: Path) -> None:
    out = tmp_path / "complaints.jsonl"
    labels_path = write_export(small, "jsonl", out)
    assert "投诉内容" in out.read_text(encoding="utf-8")
    assert "\\u" not in labels_path.read_text(encoding="utf-8").split("\n", 1)[0]


def test_labels_file_holds_none_for_absent_fields(small: SampleExport, tmp_path: Path) -> None:
    labels_path = write_export(small, "parquet", tmp_path / "complaints.parquet")
    records = [json.loads(line) for line in labels_path.read_text(encoding="utf-8").splitlines()]
    assert any(r["email"] is None for r in records)
    assert all(isinstance(r["injection"], bool) for r in records)
    assert records[0].keys() == set(small.labels.columns)


def test_unknown_format_is_rejected(small: SampleExport, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        write_export(small, "xml", tmp_path / "complaints.xml")  # type: ignore[arg-type]


def test_labels_path_sits_beside_the_export() -> None:
    assert labels_path_for(Path("/data/in/acme.xlsx")) == Path("/data/in/acme.labels.jsonl")


# -------------------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_generates_200k_rows() -> None:
    export = generate_complaints(200_000, seed=0)
    assert len(export.frame) == 200_000
    assert export.frame["工单编号"].is_unique
