"""Ingest benchmark: tiqu's vectorized pipeline vs a naive row-by-row baseline, same run.

    .venv/bin/python bench/ingest.py [--rows 1000000] [--baseline-rows 20000]

Generates a messy CSV export with the sample generator, ingests it with tiqu in a child process
(so its peak memory can be read on its own), then runs the baseline on the first
`--baseline-rows` rows: the seeds' style, `iterrows` with per-row `re`/`unicodedata` cleaning, a
set for exact duplicates and per-row MinHash with an LSH dictionary for near duplicates. Prints
rows/s of both, the ratio (goal: >= 10x) and tiqu's peak memory (goal: < 4 GiB for 1M rows).
"""

from __future__ import annotations

import argparse
import html
import multiprocessing as mp
import re
import resource
import sys
import tempfile
import time
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.ingest.pipeline import IngestOptions, ingest_bytes
from shared.samples import generate_complaints, write_export
from shared.store import Store

HOMOGLYPHS = str.maketrans("АВСЕНКМОРТХаеорсхуіјѕ", "ABCEHKMOPTXaeopcxyijs")
NUM_PERM = 64
MERSENNE = (1 << 31) - 1
BANDS = 16
BAND_IDS = range(BANDS)


def naive_clean(text: str) -> str:
    text = re.sub(r"<br\s*/?>|</p>|</div>", "\n", text, flags=re.I)
    text = re.sub(r"<[a-zA-Z/!][^>]*>", "", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2060\ufeff]", "", text)
    text = re.sub(
        r"[A-Za-z0-9@._+\-АВСЕНКМОРТХаеорсхуіјѕ]+",
        lambda m: (
            m.group().translate(HOMOGLYPHS) if re.search("[A-Za-z]", m.group()) else m.group()
        ),
        text,
    )
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_RNG = np.random.default_rng(1)
_PERM_A = _RNG.integers(1, MERSENNE, NUM_PERM, dtype=np.uint64)
_PERM_B = _RNG.integers(0, MERSENNE, NUM_PERM, dtype=np.uint64)


def naive_minhash(key: str) -> np.ndarray:
    """datasketch's way: hash each n-gram, then one numpy pass per row over all permutations."""
    data = key.encode("utf-8")
    grams = {data[i : i + 6] for i in range(max(len(data) - 5, 1))}
    hashes = np.fromiter((zlib.crc32(g) for g in grams), dtype=np.uint64, count=len(grams))
    return ((hashes[:, None] * _PERM_A + _PERM_B) % MERSENNE).min(axis=0)


def naive_ingest(frame: pd.DataFrame, options: IngestOptions) -> dict[str, int]:
    """The seeds' way: one row at a time through Python."""
    seen: set[str] = set()
    buckets: dict[tuple[int, bytes], list[int]] = {}
    signatures: list[np.ndarray] = []
    outcome: dict[str, int] = {}
    width = NUM_PERM // BANDS
    for _, row in frame.iterrows():
        text = naive_clean(str(row["投诉内容"]) if pd.notna(row["投诉内容"]) else "")
        letters = sum(ch.isalpha() for ch in text)
        if not text:
            reason = "empty"
        elif len(text) < options.min_chars:
            reason = "too_short"
        elif len(text) > options.max_chars:
            reason = "too_long"
        elif letters / len(text) < options.min_text_ratio:
            reason = "not_text"
        else:
            key = re.sub(r"[\W_]+", "", text.lower())
            if key in seen:
                reason = "duplicate"
            else:
                seen.add(key)
                signature = naive_minhash(key)
                bands = [(b, signature[b * width : (b + 1) * width].tobytes()) for b in BAND_IDS]
                similar = any(
                    np.mean(signature == signatures[other]) >= options.near_dup_threshold
                    for band in bands
                    for other in buckets.get(band, [])
                )
                reason = "near_duplicate" if similar else "clean"
                if not similar:
                    for band in bands:
                        buckets.setdefault(band, []).append(len(signatures))
                    signatures.append(signature)
        outcome[reason] = outcome.get(reason, 0) + 1
    return outcome


def tiqu_child(csv_path: str, store_dir: str, queue: mp.Queue) -> None:
    data = Path(csv_path).read_bytes()
    started = time.perf_counter()
    result = ingest_bytes(data, Path(csv_path).name, IngestOptions(), Store(f"file://{store_dir}"))
    queue.put((time.perf_counter() - started, result.manifest["counts"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tiqu-bench-") as tmp:
        csv_path = Path(tmp) / "complaints.csv"
        started = time.perf_counter()
        write_export(generate_complaints(args.rows, seed=args.seed), "csv", csv_path)
        size_mb = csv_path.stat().st_size / 2**20
        print(
            f"generated {args.rows:,} rows ({size_mb:,.0f} MiB CSV) in "
            f"{time.perf_counter() - started:.1f} s"
        )

        queue: mp.Queue = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(
            target=tiqu_child, args=(str(csv_path), str(Path(tmp) / "store"), queue)
        )
        child.start()
        tiqu_seconds, counts = queue.get()
        child.join()
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        tiqu_rate = args.rows / tiqu_seconds

        frame = pd.read_csv(csv_path, nrows=args.baseline_rows, dtype=str, encoding="utf-8-sig")
        started = time.perf_counter()
        naive_outcome = naive_ingest(frame, IngestOptions())
        naive_seconds = time.perf_counter() - started
        naive_rate = len(frame) / naive_seconds

    print(
        f"tiqu ingest      {args.rows:>10,} rows  {tiqu_seconds:8.1f} s  {tiqu_rate:>10,.0f} rows/s"
        f"  (clean {counts['clean']:,}, rejected {counts['rejected']:,})"
    )
    print(
        f"naive iterrows   {len(frame):>10,} rows  {naive_seconds:8.1f} s  "
        f"{naive_rate:>10,.0f} rows/s"
        f"  (clean {naive_outcome.get('clean', 0):,})"
    )
    print(f"speed-up         {tiqu_rate / naive_rate:.1f}x   (goal >= 10x)")
    print(f"tiqu peak memory {peak_gib:.2f} GiB   (goal < 4 GiB)")


if __name__ == "__main__":
    main()
