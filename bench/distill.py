"""Distill benchmark: labelled rows/s against the teacher stub, as a share of the concurrency bound.

    .venv/bin/python bench/distill.py [--rows 3000] [--latency-ms 200] [--concurrency 64]

Generates complaints with the sample generator and ingests them into a temporary store, starts the
teacher stub in its own process (so its CPU does not compete with the run for this process's GIL)
answering after `--latency-ms`, and distills the dataset with `--concurrency` requests in flight.
Prints labelled rows/s and its ratio to the bound concurrency / latency (64 / 0.2 s = 320 rows/s;
goal: >= 80%), for the whole run and for the labelling stage alone. A second run over the same
rows (`--export alpaca`: a new run id asking the same questions) must make zero teacher calls; the
stub's /stats says how many it received.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.distill.run import DistillOptions, DistillResult, RunProgress, run_distill
from services.distill.teacher import TeacherConfig
from services.ingest.pipeline import IngestOptions, ingest_bytes
from shared.samples import generate_complaints, write_export
from shared.settings import Settings
from shared.store import Store
from tests.support import free_port, wait_until


class StageClock:
    """Progress callback that remembers when each stage started."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def __call__(self, progress: RunProgress) -> None:
        self.started.setdefault(progress.stage, time.perf_counter())

    def seconds(self, stage: str, until: str) -> float:
        return self.started[until] - self.started[stage]


def chat_requests(stub_url: str) -> int:
    return int(httpx.get(f"{stub_url}/stats", timeout=5).json()["chat_requests"])


def timed_run(
    dataset_id: str, options: DistillOptions, store: Store, config: TeacherConfig
) -> tuple[DistillResult, float, StageClock]:
    clock = StageClock()
    started = time.perf_counter()
    result = run_distill(dataset_id, options, store, config=config, progress=clock)
    return result, time.perf_counter() - started, clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiqu-bench-distill-") as work:
        bench(Path(work), args)


def bench(work: Path, args: argparse.Namespace) -> None:
    export = work / "complaints.jsonl"
    labels = write_export(generate_complaints(args.rows, seed=args.seed), "jsonl", export)
    store = Store(f"file://{work / 'store'}")
    dataset = ingest_bytes(export.read_bytes(), export.name, IngestOptions(), store)
    rows = dataset.manifest["counts"]["clean"]

    port = free_port()
    stub_url = f"http://127.0.0.1:{port}"
    stub_argv = ["--labels", str(labels), "--port", str(port), "--latency-ms", str(args.latency_ms)]
    stub = subprocess.Popen(
        [sys.executable, "-m", "services.distill.stub_cli", *stub_argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(f"{stub_url}/healthz"), 60, "teacher stub")
        settings = Settings(
            teacher_base_url=f"{stub_url}/v1", teacher_max_concurrency=args.concurrency
        )
        config = TeacherConfig.from_settings(settings)
        first, seconds, clock = timed_run(
            dataset.dataset_id, DistillOptions.from_settings(settings), store, config
        )
        asked = chat_requests(stub_url)
        again, again_seconds, _ = timed_run(
            dataset.dataset_id,
            DistillOptions.from_settings(settings, export="alpaca"),
            store,
            config,
        )
        asked_again = chat_requests(stub_url) - asked
    finally:
        stub.terminate()
        stub.wait(timeout=10)

    seconds_per_request = args.latency_ms / 1000
    bound = args.concurrency / seconds_per_request
    labelling = clock.seconds("label", "write")
    counts = first.manifest["counts"]
    print(f"dataset: {rows:,} rows ({args.rows:,} generated); stub latency {args.latency_ms:g} ms")
    print(f"run {first.run_id}: {counts['accepted']:,} accepted, {counts['rejected']:,} rejected")
    print(
        f"concurrency bound: {args.concurrency} / {seconds_per_request:g} s = {bound:,.0f} rows/s"
    )
    for what, rate in (("whole run", rows / seconds), ("labelling stage", rows / labelling)):
        print(f"{what:>16}: {rate:8,.1f} rows/s = {rate / bound:6.1%} of the bound")
    print(f"teacher requests (first run): {asked:,}")
    print(
        f"second run over the same rows ({again.run_id}): {asked_again} teacher calls, "
        f"{again.manifest['teacher']['cached_answers']:,} answers from cache, "
        f"{rows / again_seconds:,.1f} rows/s"
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
