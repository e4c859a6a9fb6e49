"""Exact and near-duplicate detection of the ingest service."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from shared import dedup
from shared.cleaning import clean_texts
from shared.dedup import (
    EMPTY_BIN,
    dedup_keys,
    estimated_jaccard,
    find_exact_duplicates,
    find_near_duplicates,
    minhash_signatures,
)

PEOPLE = ["我", "我母亲", "我爱人", "我们公司", "我父亲", "我朋友", "我女儿", "我同事"]
TIMES = [
    "上周三",
    "3月12日",
    "昨天下午",
    "上个月底",
    "元旦前后",
    "前天晚上",
    "去年十月",
    "五一期间",
]
PLACES = [
    "在贵公司官网",
    "在朝阳门店",
    "通过手机App",
    "在天猫旗舰店",
    "在徐汇营业厅",
    "通过电话客服",
]
PRODUCTS = ["一台空调", "一部手机", "宽带套餐", "年度会员", "一张信用卡", "两箱牛奶", "一台洗衣机"]
PROBLEMS = [
    "收到货后发现屏幕有明显裂痕",
    "安装师傅迟迟不肯上门安装",
    "每个月话费被莫名多扣三十元",
    "使用不到一周就完全无法开机",
    "承诺的退款至今没有到账",
    "订单在发货前被无故取消",
    "快递员未经同意把包裹放在驿站",
    "发票抬头开错了却拒绝重开",
    "会员权益与宣传内容严重不符",
    "维修后同样的故障再次出现",
]
ACTIONS = ["我多次拨打客服热线", "我在网上提交了工单", "我亲自去门店找过店长", "我发了三封邮件"]
OUTCOMES = ["但一直没有人处理", "对方只是让我耐心等待", "客服态度非常恶劣", "各部门之间互相推诿"]
DEMANDS = ["要求尽快全额退款", "希望免费更换新机", "请求赔偿相应损失", "希望给出书面解释"]
OPENING = "您好，我要投诉一个问题。"
CLOSING = "请尽快联系我处理，谢谢。"


def complaint(rng: random.Random) -> str:
    """A ~150-character synthetic complaint that shares only its opening and closing."""
    first, second = rng.sample(PROBLEMS, 2)
    return (
        f"{OPENING}{rng.choice(PEOPLE)}{rng.choice(TIMES)}{rng.choice(PLACES)}购买了"
        f"{rng.choice(PRODUCTS)}，订单号{rng.randrange(10**11, 10**12)}，"
        f"金额{rng.randrange(100, 9999)}元。{first}，"
        f"{rng.choice(ACTIONS)}，{rng.choice(OUTCOMES)}。"
        f"另外{second}。{rng.choice(DEMANDS)}，联系电话1{rng.randrange(3 * 10**9, 9 * 10**9)}。"
        f"{CLOSING}"
    )


def edited(text: str, rng: random.Random, kind: int) -> str:
    """A copy with one or two characters changed, or an emoji, space or punctuation added."""
    chars = list(text)
    if kind in (0, 1):
        for position in rng.sample(range(len(chars)), kind + 1):
            chars[position] = rng.choice("的了是在有我他这")
    else:
        position = rng.randrange(len(chars))
        chars.insert(position, ["😡", "  ", "！！", "\n"][kind - 2])
    return "".join(chars)


def keys_of(texts: list[str]) -> pa.Array:
    return dedup_keys(clean_texts(pa.array(texts)))


@pytest.fixture(scope="module")
def originals() -> list[str]:
    rng = random.Random(20240601)
    texts = list(dict.fromkeys(complaint(rng) for _ in range(400)))
    assert len(texts) >= 390 and 120 <= np.mean([len(t) for t in texts]) <= 180
    return texts


def test_keys_are_lower_case_without_space_punctuation_or_symbols() -> None:
    keys = dedup_keys(pa.array(["Refund, NOT received!! 退款 ¥50 😡 #1", None]))
    assert keys.to_pylist() == ["refundnotreceived退款501", ""]


def test_keys_accept_chunked_large_strings() -> None:
    keys = dedup_keys(pa.chunked_array([["A b"], ["C-d"]], type=pa.large_string()))
    assert keys.type == pa.large_string()
    assert keys.to_pylist() == ["ab", "cd"]


def test_exact_duplicates_point_to_the_first_earlier_row() -> None:
    keys = pa.array(["a", "b", "a", "c", "b", "a"])
    assert find_exact_duplicates(keys, np.ones(6, dtype=bool)).tolist() == [-1, -1, 0, -1, 1, 0]


def test_ineligible_rows_are_never_matched_nor_match() -> None:
    keys = pa.array(["a", "a", "a", "b", "b"])
    eligible = np.array([False, True, True, True, False])
    assert find_exact_duplicates(keys, eligible).tolist() == [-1, -1, 1, -1, -1]


def test_exact_duplicates_survive_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedup, "_row_hashes", lambda arr: np.zeros(len(arr), dtype=np.uint64))
    keys = pa.array(["a", "b", "a", "c", "b"])
    assert find_exact_duplicates(keys, np.ones(5, dtype=bool)).tolist() == [-1, -1, 0, -1, 1]


def test_exact_duplicates_compare_whole_texts_of_any_length() -> None:
    base = "投诉" * 40
    keys = pa.array([base, base + "x", base[:-1], "", base + "x", ""])
    assert find_exact_duplicates(keys, np.ones(6, dtype=bool)).tolist() == [-1, -1, -1, -1, 1, 3]


def test_exact_duplicates_refuse_a_wrong_eligible_shape() -> None:
    with pytest.raises(ValueError):
        find_exact_duplicates(pa.array(["a", "b"]), np.ones(3, dtype=bool))


def test_signatures_are_deterministic_and_independent_of_chunking(originals: list[str]) -> None:
    keys = keys_of(originals)
    reference = minhash_signatures(keys)
    chunked = pa.chunked_array([keys.slice(0, 7), keys.slice(7)])
    assert np.array_equal(reference, minhash_signatures(keys))
    assert np.array_equal(reference, minhash_signatures(chunked, chunk_rows=5))
    assert np.array_equal(reference, minhash_signatures(keys.cast(pa.large_string())))


def test_signature_of_a_row_does_not_depend_on_its_neighbours(originals: list[str]) -> None:
    keys = keys_of(originals[:50])
    alone = minhash_signatures(keys.slice(20, 1))
    assert np.array_equal(minhash_signatures(keys)[20:21], alone)


def test_signatures_shape_and_dtype() -> None:
    signatures = minhash_signatures(pa.array(["投诉退款", "abcdefgh", ""]), num_bins=32)
    assert signatures.shape == (3, 32)
    assert signatures.dtype == np.uint32


def test_texts_shorter_than_a_gram_are_one_gram() -> None:
    signatures = minhash_signatures(pa.array(["ab", "", "abcdef", "abcdefg"]), ngram_bytes=6)
    assert ((signatures != EMPTY_BIN).sum(axis=1) == [1, 1, 1, 2]).all()


def test_each_gram_fills_its_own_bin() -> None:
    long_key = "".join(chr(0x4E00 + i) for i in range(2000))
    signatures = minhash_signatures(pa.array([long_key]))
    assert (signatures != EMPTY_BIN).all()


def test_signatures_refuse_bad_parameters() -> None:
    with pytest.raises(ValueError):
        minhash_signatures(pa.array(["x"]), num_bins=48)
    with pytest.raises(ValueError):
        minhash_signatures(pa.array(["x"]), ngram_bytes=9)


def test_identical_keys_have_similarity_one(originals: list[str]) -> None:
    signatures = minhash_signatures(keys_of(originals[:5] * 2))
    assert np.array_equal(estimated_jaccard(signatures[:5], signatures[5:]), np.ones(5))


def test_estimated_jaccard_ignores_bins_empty_on_both_sides() -> None:
    empty = int(EMPTY_BIN)
    a = np.array([[1, 2, empty, empty], [empty] * 4], dtype=np.uint32)
    b = np.array([[1, 3, 4, empty], [empty] * 4], dtype=np.uint32)
    assert estimated_jaccard(a, b).tolist() == [1 / 3, 1.0]


def test_estimated_jaccard_tracks_true_jaccard() -> None:
    rng = random.Random(3)
    base = "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(150))
    half = base[:75] + "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(75))
    signatures = minhash_signatures(pa.array([base, half]), num_bins=256)
    grams = [{t.encode()[i : i + 6] for i in range(len(t.encode()) - 5)} for t in (base, half)]
    truth = len(grams[0] & grams[1]) / len(grams[0] | grams[1])
    assert abs(estimated_jaccard(signatures[:1], signatures[1:])[0] - truth) < 0.1


def test_near_duplicates_find_edited_copies(originals: list[str]) -> None:
    rng = random.Random(11)
    copies = [edited(text, rng, i % 6) for i, text in enumerate(originals)]
    signatures = minhash_signatures(keys_of(originals + copies))
    found = find_near_duplicates(signatures, np.ones(len(signatures), dtype=bool), threshold=0.8)
    expected = np.arange(len(originals))
    assert np.mean(found[len(originals) :] == expected) >= 0.98


def test_near_duplicates_leave_distinct_complaints_alone(originals: list[str]) -> None:
    signatures = minhash_signatures(keys_of(originals))
    found = find_near_duplicates(signatures, np.ones(len(originals), dtype=bool), threshold=0.8)
    assert (found == -1).all()


def test_distinct_complaints_sharing_a_template_score_low(originals: list[str]) -> None:
    signatures = minhash_signatures(keys_of(originals[:100]))
    similarity = estimated_jaccard(signatures[:-1], signatures[1:])
    assert similarity.max() < 0.6


def test_near_duplicates_point_only_to_earlier_rows(originals: list[str]) -> None:
    texts = originals[:20] + originals[:20]
    signatures = minhash_signatures(keys_of(texts))
    found = find_near_duplicates(signatures, np.ones(40, dtype=bool), threshold=0.8)
    assert found.tolist() == [-1] * 20 + list(range(20))


def test_near_duplicates_respect_eligibility(originals: list[str]) -> None:
    texts = [originals[0], originals[0], originals[0], originals[1]]
    signatures = minhash_signatures(keys_of(texts))
    eligible = np.array([False, True, True, True])
    found = find_near_duplicates(signatures, eligible, threshold=0.8)
    assert found.tolist() == [-1, -1, 1, -1]


def test_near_duplicates_refuse_bands_that_do_not_divide_the_bins() -> None:
    signatures = np.zeros((2, 64), dtype=np.uint32)
    with pytest.raises(ValueError):
        find_near_duplicates(signatures, np.ones(2, dtype=bool), threshold=0.8, bands=7)
