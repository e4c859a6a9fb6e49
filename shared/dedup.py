"""Exact and near-duplicate detection over cleaned texts, vectorized with pyarrow and numpy.

Near duplicates use one-permutation-hashing MinHash: each UTF-8 byte n-gram of a key is hashed
once with splitmix64; the top bits pick a bin, the low 32 bits are the value, and a bin keeps its
minimum. LSH banding over the bins proposes candidate pairs that the signatures then verify.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shared.cleaning import (
    CHUNK_ROWS,
    StringArray,
    as_text_chunks,
    concat_texts,
    parallel_map,
    split_rows,
    text_buffers,
)

__all__ = [
    "EMPTY_BIN",
    "dedup_keys",
    "estimated_jaccard",
    "find_exact_duplicates",
    "find_near_duplicates",
    "minhash_signatures",
]

EMPTY_BIN = np.uint32(0xFFFFFFFF)

# Punctuation, symbols, whitespace, invisible format characters and emoji variation selectors:
# none of them change what a complaint says.
_KEY_DROP = r"[\p{P}\p{S}\p{Z}\p{Cc}\p{Cf}\s\x{fe00}-\x{fe0f}\x{20e3}\x{e0100}-\x{e01ef}]+"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# n-grams hashed per task: bounds every per-task temporary to tens of MB.
_GRAMS_PER_TASK = 1 << 20
# Signature pairs verified at once.
_VERIFY_BATCH = 1 << 16


def dedup_keys(cleaned: StringArray) -> pa.Array:
    """Comparison keys: lower-cased, without whitespace, punctuation or symbols."""
    chunked = as_text_chunks(cleaned)

    def key(arr: pa.Array) -> pa.Array:
        arr = pc.fill_null(arr, "") if arr.null_count else arr
        return pc.replace_substring_regex(pc.utf8_lower(arr), _KEY_DROP, "")

    return concat_texts(parallel_map(key, split_rows(chunked, CHUNK_ROWS)), chunked.type)


def _check_eligible(eligible: np.ndarray, n: int) -> np.ndarray:
    """`eligible` as a boolean mask of n rows."""
    mask = np.asarray(eligible, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"eligible must have shape ({n},), got {mask.shape}")
    return mask


def _first_of_group(codes: np.ndarray) -> np.ndarray:
    """For codes numbered in order of first appearance, the position of each code's first row."""
    seen_before = np.maximum.accumulate(codes)
    is_first = np.empty(len(codes), dtype=bool)
    is_first[:1] = True
    is_first[1:] = codes[1:] > seen_before[:-1]
    return np.flatnonzero(is_first)[codes]


def find_exact_duplicates(keys: StringArray, eligible: np.ndarray) -> np.ndarray:
    """For each row, the index of the first earlier eligible row with the same key, else -1.

    Rows where `eligible` is False are never matched and never match.
    """
    chunked = as_text_chunks(keys)
    mask = _check_eligible(eligible, len(chunked))
    out = np.full(len(chunked), -1, dtype=np.int64)
    rows = np.flatnonzero(mask)
    if rows.size < 2:
        return out
    subset = chunked if rows.size == len(chunked) else chunked.take(pa.array(rows))
    subset = pc.fill_null(subset, "") if subset.null_count else subset
    # Group by a 64-bit hash of each key, then compare the texts of every proposed pair: hashing
    # in parallel pieces needs far less memory than a dictionary of all distinct keys.
    hashes = parallel_map(_row_hashes, split_rows(subset, CHUNK_ROWS))
    codes, _ = pd.factorize(np.concatenate(hashes))
    first = _first_of_group(codes)
    later = np.flatnonzero(first != np.arange(len(first)))
    if later.size:
        same = pc.equal(subset.take(later), subset.take(first[later]))
        collided = later[~same.to_numpy(zero_copy_only=False)]
        if collided.size:
            first = _regroup_exactly(subset, codes, first, collided)
    out[rows] = np.where(first != np.arange(len(first)), rows[first], -1)
    return out


def _regroup_exactly(
    subset: pa.ChunkedArray, codes: np.ndarray, first: np.ndarray, collided: np.ndarray
) -> np.ndarray:
    """Redo grouping by the texts themselves for the hash groups that hold a collision."""
    members = np.flatnonzero(np.isin(codes, np.unique(codes[collided])))
    encoded = pc.dictionary_encode(subset.take(pa.array(members)))
    exact = np.concatenate([chunk.indices.to_numpy() for chunk in encoded.chunks])
    first = first.copy()
    first[members] = members[_first_of_group(exact)]
    return first


def _row_hashes(arr: pa.Array) -> np.ndarray:
    """A 64-bit hash of each row's bytes (no nulls): mixed 8-byte words, summed per row."""
    offsets, data = text_buffers(arr)
    lengths = np.diff(offsets)
    words_per_row = np.maximum((lengths + 7) // 8, 1)
    first = np.cumsum(words_per_row) - words_per_row
    rank = np.arange(int(words_per_row.sum()), dtype=np.int64)
    rank -= np.repeat(first, words_per_row)
    view = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    words = view[np.repeat(offsets[:-1], words_per_row) + 8 * rank].astype(np.uint64)
    # Zero the bytes of the last word that belong to the next row.
    last = first + words_per_row - 1
    tail = (lengths - 8 * (words_per_row - 1)).astype(np.uint64)
    partial = tail < 8
    words[last[partial]] &= (np.uint64(1) << (np.uint64(8) * tail[partial])) - np.uint64(1)
    words ^= rank.astype(np.uint64) * _MIX2
    sums = np.add.reduceat(_mix64(words), first)
    sums ^= lengths.astype(np.uint64) * _MIX1
    return _mix64(sums)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64, in place on a uint64 array."""
    scratch = np.empty_like(x)
    x += _GOLDEN
    for shift, factor in ((30, _MIX1), (27, _MIX2), (31, None)):
        np.right_shift(x, np.uint64(shift), out=scratch)
        x ^= scratch
        if factor is not None:
            x *= factor
    return x


def _words_at_every_byte(data: np.ndarray) -> np.ndarray:
    """The little-endian uint64 starting at each byte of `data` but the 8 padding bytes."""
    view = np.ndarray(shape=(len(data) - 8,), dtype="<u8", buffer=data, strides=(1,))
    return view.astype(np.uint64)


def _signature_block(arr: pa.Array, flat: np.ndarray, num_bins: int, ngram_bytes: int) -> None:
    """Write the signatures of `arr` (no nulls), row after row, into the 1-D view `flat`."""
    rows = len(arr)
    offsets, data = text_buffers(arr)
    lengths = np.diff(offsets)
    # A gram starts at every byte; the row of each byte decides its slice of `flat`.
    values = _words_at_every_byte(data)
    if ngram_bytes < 8:
        values &= np.uint64((1 << (8 * ngram_bytes)) - 1)
    short = np.flatnonzero((lengths > 0) & (lengths < ngram_bytes))
    if short.size:
        # A text shorter than a gram is one gram of its own bytes, tagged with its length.
        short_len = lengths[short].astype(np.uint64)
        keep = (np.uint64(1) << (np.uint64(8) * short_len)) - np.uint64(1)
        starts = offsets[short]
        values[starts] = (values[starts] & keep) ^ (short_len << np.uint64(56))
    hashes = _mix64(values)
    bits = num_bins.bit_length() - 1
    slots = np.repeat(np.arange(rows, dtype=np.int64) * num_bins, lengths)
    if bits:
        slots += (hashes >> np.uint64(64 - bits)).view(np.int64)
    mins = hashes.astype(np.uint32)
    # 0xFFFFFFFF marks an empty bin, so no real minimum may take that value; grams that run
    # past the end of their row get it and so change nothing.
    np.minimum(mins, EMPTY_BIN - np.uint32(1), out=mins)
    mins[_overhanging_grams(offsets, lengths, ngram_bytes)] = EMPTY_BIN
    flat[:] = EMPTY_BIN
    np.minimum.at(flat, slots, mins)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        # "" is one gram too: the zero word, tagged with length 0.
        digest = _mix64(np.zeros(1, dtype=np.uint64))
        slot = int(digest[0] >> np.uint64(64 - bits)) if bits else 0
        flat[empty * num_bins + slot] = min(int(digest[0] & 0xFFFFFFFF), int(EMPTY_BIN) - 1)


def _overhanging_grams(offsets: np.ndarray, lengths: np.ndarray, ngram_bytes: int) -> np.ndarray:
    """Byte positions whose gram runs past the end of its row (short rows keep their first)."""
    ends = offsets[1:]
    full = ends[lengths >= ngram_bytes]
    tails = (full[:, None] - np.arange(1, ngram_bytes, dtype=np.int64)[None, :]).ravel()
    short = np.flatnonzero((lengths > 1) & (lengths < ngram_bytes))
    if not short.size:
        return tails
    extra = lengths[short] - 1
    rank = np.arange(int(extra.sum()), dtype=np.int64) - np.repeat(np.cumsum(extra) - extra, extra)
    return np.concatenate([tails, np.repeat(offsets[short] + 1, extra) + rank])


def minhash_signatures(
    keys: StringArray, *, num_bins: int = 64, ngram_bytes: int = 6, chunk_rows: int = 50_000
) -> np.ndarray:
    """(n, num_bins) uint32 OPH MinHash signatures over the UTF-8 byte n-grams of each key.

    Empty bins hold 0xFFFFFFFF; a key shorter than `ngram_bytes` (even "") is one gram.
    `num_bins` must be a power of two, `ngram_bytes` within 1..8. Rows are processed in tasks of
    at most `chunk_rows` rows (fewer for long texts) so temporaries stay small.
    """
    if num_bins < 1 or num_bins & (num_bins - 1) or num_bins > 1 << 16:
        raise ValueError(f"num_bins must be a power of two up to 65536, got {num_bins}")
    if not 1 <= ngram_bytes <= 8:
        raise ValueError(f"ngram_bytes must be within 1..8, got {ngram_bytes}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    chunked = as_text_chunks(keys)
    out = np.empty((len(chunked), num_bins), dtype=np.uint32)
    if len(chunked) == 0:
        return out
    flat = out.reshape(-1)
    bytes_per_row = max(1, sum(_data_size(c) for c in chunked.chunks) // len(chunked))
    rows_per_task = max(1, min(chunk_rows, _GRAMS_PER_TASK // bytes_per_row))
    tasks = []
    start = 0
    for piece in split_rows(chunked, rows_per_task):
        tasks.append((start, piece))
        start += len(piece)

    def run(task: tuple[int, pa.Array]) -> None:
        begin, piece = task
        piece = pc.fill_null(piece, "") if piece.null_count else piece
        block = flat[begin * num_bins : (begin + len(piece)) * num_bins]
        _signature_block(piece, block, num_bins, ngram_bytes)

    parallel_map(run, tasks)
    return out


def _data_size(arr: pa.Array) -> int:
    """Bytes of text in `arr`, from its offsets."""
    if len(arr) == 0:
        return 0
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    raw = np.frombuffer(arr.buffers()[1], dtype=offset_type)
    return int(raw[arr.offset + len(arr)] - raw[arr.offset])


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard estimate: agreeing bins over bins where either side is non-empty.

    Two rows with no non-empty bin at all count as identical (1.0).
    """
    a2 = np.atleast_2d(np.asarray(a, dtype=np.uint32))
    b2 = np.atleast_2d(np.asarray(b, dtype=np.uint32))
    if a2.shape != b2.shape:
        raise ValueError(f"signature shapes differ: {a2.shape} vs {b2.shape}")
    used = (a2 != EMPTY_BIN) | (b2 != EMPTY_BIN)
    agree = (a2 == b2) & used
    used_count = used.sum(axis=1)
    agree_count = agree.sum(axis=1)
    return np.where(used_count > 0, agree_count / np.maximum(used_count, 1), 1.0)


def _band_keys(block: np.ndarray) -> np.ndarray:
    """One uint64 per row for a (rows, r) uint32 band; equal bands give equal keys."""
    key = np.zeros(len(block), dtype=np.uint64)
    for column in range(block.shape[1]):
        key *= _MIX1
        key += block[:, column]
    return key


def _first_in_bucket(keys: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same key (itself if none is earlier)."""
    first = np.arange(len(keys), dtype=np.int64)
    # Only rows whose top key bits are shared can share a bucket; counting those bits is far
    # cheaper than hashing every key, and usually leaves a small fraction to group exactly.
    bits = min(22, max(1, 2 * len(keys)).bit_length())
    top = (keys >> np.uint64(64 - bits)).view(np.int64)
    shared = np.flatnonzero(np.bincount(top, minlength=1 << bits)[top] > 1)
    if shared.size:
        codes, _ = pd.factorize(keys[shared])
        first[shared] = shared[_first_of_group(codes)]
    return first


def find_near_duplicates(
    signatures: np.ndarray, eligible: np.ndarray, *, threshold: float, bands: int = 16
) -> np.ndarray:
    """For each eligible row, an earlier eligible row with estimated Jaccard >= threshold, else -1.

    Candidates are the first earlier row of each LSH band bucket the row falls in (bands of
    num_bins / bands bins; all-empty bands are skipped); the earliest candidate that the
    signatures verify wins.
    """
    sig = np.asarray(signatures)
    if sig.ndim != 2 or sig.dtype != np.uint32:
        raise ValueError("signatures must be a 2-D uint32 array")
    n, num_bins = sig.shape
    if bands < 1 or num_bins % bands:
        raise ValueError(f"bands ({bands}) must divide the number of bins ({num_bins})")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    mask = _check_eligible(eligible, n)
    out = np.full(n, -1, dtype=np.int64)
    rows = np.flatnonzero(mask)
    if rows.size < 2:
        return out
    width = num_bins // bands
    empty_key = _band_keys(np.full((1, width), EMPTY_BIN, dtype=np.uint32))[0]
    pairs = []
    for band in range(bands):
        columns = slice(band * width, (band + 1) * width)
        block = sig[:, columns] if rows.size == n else sig[rows, columns]
        keys = _band_keys(block)
        first = _first_in_bucket(keys)
        later = np.flatnonzero((first != np.arange(len(first))) & (keys != empty_key))
        pairs.append(later * rows.size + first[later])
    candidates = np.unique(np.concatenate(pairs))
    # Sorted by (row, candidate): the first verified pair of a row is its earliest match.
    row_of = rows[candidates // rows.size]
    cand_of = rows[candidates % rows.size]
    verified = np.zeros(len(candidates), dtype=bool)
    for start in range(0, len(candidates), _VERIFY_BATCH):
        part = slice(start, start + _VERIFY_BATCH)
        similarity = estimated_jaccard(sig[row_of[part]], sig[cand_of[part]])
        verified[part] = similarity >= threshold
    matched_rows, first_pair = np.unique(row_of[verified], return_index=True)
    out[matched_rows] = cand_of[verified][first_pair]
    return out
