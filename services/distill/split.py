"""Train/val/test assignment of a run's rows: seeded, exact in size, near duplicates kept together.

Rows are first grouped: two rows whose MinHash signatures (the ones ingest de-duplicates with)
share an LSH band bucket and estimate a Jaccard similarity at or above the near-duplicate
threshold are joined, and groups are the connected components of those pairs. Whole groups are
then dealt out in a seeded order, so a complaint and its near copy never sit on both sides of the
train/test line. The order depends on the seed and the row ids only, not on the row order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from shared.dedup import EMPTY_BIN, dedup_keys, estimated_jaccard, minhash_signatures
from shared.errors import InvalidInputError

SPLITS = ("train", "val", "test")
LSH_BANDS = 16
_VERIFY_BATCH = 1 << 16


def parse_split(spec: str) -> tuple[float, float, float]:
    """`"0.8,0.1,0.1"` as three non-negative fractions summing to 1."""
    try:
        parts = tuple(float(part) for part in spec.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise InvalidInputError(
            f"split {spec!r} must be three fractions summing to 1, e.g. 0.8,0.1,0.1",
            param="distill_split",
        )
    return parts[0], parts[1], parts[2]


def _candidate_pairs(signatures: np.ndarray) -> np.ndarray:
    """Every (i, j), i < j, of rows sharing at least one non-empty LSH band bucket."""
    width = signatures.shape[1] // LSH_BANDS
    found = [np.empty((0, 2), dtype=np.int64)]
    for band in range(LSH_BANDS):
        block = signatures[:, band * width : (band + 1) * width]
        members = np.flatnonzero((block != EMPTY_BIN).any(axis=1))
        if members.size < 2:
            continue
        _, codes = np.unique(block[members], axis=0, return_inverse=True)
        order = np.argsort(codes.reshape(-1), kind="stable")
        sorted_codes = codes.reshape(-1)[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        sizes = np.diff(np.r_[starts, order.size])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            rows = np.sort(members[order[start : start + size]])
            first, second = np.triu_indices(size, 1)
            found.append(np.stack([rows[first], rows[second]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component number of each of `n` rows (the smallest row index in it)."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.fromiter((root(i) for i in range(n)), dtype=np.int64, count=n)


def near_duplicate_groups(texts: Sequence[str], threshold: float) -> np.ndarray:
    """A group number per text; near duplicates (estimated Jaccard >= threshold) share one."""
    if not texts:
        return np.empty(0, dtype=np.int64)
    signatures = minhash_signatures(dedup_keys(pa.array(texts, type=pa.string())))
    pairs = _candidate_pairs(signatures)
    keep = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), _VERIFY_BATCH):
        batch = pairs[start : start + _VERIFY_BATCH]
        similarity = estimated_jaccard(signatures[batch[:, 0]], signatures[batch[:, 1]])
        keep[start : start + _VERIFY_BATCH] = similarity >= threshold
    return _components(len(texts), pairs[keep])


def assign_splits(
    ids: Sequence[str], groups: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> list[str]:
    """The split of each row: whole groups in a seeded order fill train, then val, then test."""
    n = len(ids)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(index)

    def order(rows: list[int]) -> tuple[str, int]:
        digest = hashlib.sha256(f"{seed}:{ids[rows[0]]}".encode()).hexdigest()
        return digest, rows[0]

    train_end = round(fractions[0] * n)
    val_end = round((fractions[0] + fractions[1]) * n)
    assigned = [""] * n
    position = 0
    for rows in sorted(members.values(), key=order):
        split = "train" if position < train_end else "val" if position < val_end else "test"
        for index in rows:
            assigned[index] = split
        position += len(rows)
    return assigned
