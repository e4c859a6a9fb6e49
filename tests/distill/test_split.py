"""Train/val/test assignment: exact sizes, seeded, and no near duplicate across the line."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from services.distill.split import assign_splits, near_duplicate_groups, parse_split
from shared.dedup import dedup_keys, estimated_jaccard, minhash_signatures
from shared.errors import InvalidInputError
from shared.samples import generate_complaints

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def complaints() -> tuple[list[str], list[str]]:
    """Generated complaints, near and exact duplicates included (ingest would drop those)."""
    labels = generate_complaints(600, seed=8).labels
    labels = labels[labels["kind"].isin(["original", "near_duplicate", "exact_duplicate"])]
    assert (labels["kind"] != "original").sum() > 20
    return [str(i) for i in labels["id"]], [str(t) for t in labels["text"]]


def test_parse_split() -> None:
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.2", "0.5,0.5,0.5", "a,b,c", "-0.2,0.6,0.6"):
        with pytest.raises(InvalidInputError):
            parse_split(bad)


def test_near_duplicates_never_straddle_train_and_test(
    complaints: tuple[list[str], list[str]],
) -> None:
    ids, texts = complaints
    groups = near_duplicate_groups(texts, THRESHOLD)
    splits = assign_splits(ids, groups, (0.8, 0.1, 0.1), seed=0)
    # Every pair the estimator calls near-duplicate, found by brute force.
    signatures = minhash_signatures(dedup_keys(pa.array(texts, type=pa.string())))
    first, second = np.triu_indices(len(texts), 1)
    similar = estimated_jaccard(signatures[first], signatures[second]) >= THRESHOLD
    pairs = list(zip(first[similar].tolist(), second[similar].tolist(), strict=True))
    assert len(pairs) > 20
    for a, b in pairs:
        assert groups[a] == groups[b]
        assert splits[a] == splits[b]


def test_sizes_follow_the_fractions(complaints: tuple[list[str], list[str]]) -> None:
    ids, _ = complaints
    singletons = np.arange(len(ids))
    sizes = Counter(assign_splits(ids, singletons, (0.8, 0.1, 0.1), seed=0))
    assert sizes["train"] == round(0.8 * len(ids))
    assert sizes["val"] == round(0.9 * len(ids)) - sizes["train"]
    assert sum(sizes.values()) == len(ids)


def test_assignment_is_seeded_and_independent_of_row_order(
    complaints: tuple[list[str], list[str]],
) -> None:
    ids, _ = complaints
    singletons = np.arange(len(ids))
    once = dict(zip(ids, assign_splits(ids, singletons, (0.8, 0.1, 0.1), seed=0), strict=True))
    reversed_ids = ids[::-1]
    again = assign_splits(reversed_ids, singletons, (0.8, 0.1, 0.1), seed=0)
    assert dict(zip(reversed_ids, again, strict=True)) == once
    other = assign_splits(ids, singletons, (0.8, 0.1, 0.1), seed=1)
    assert dict(zip(ids, other, strict=True)) != once
