"""Scenario 13, second half: promotions racing each other leave one consistent alias."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from shared import adapters
from shared.models import ResolvedModel
from shared.store import Layout, Store
from tests.serve.serve_support import build_lora, register_lora


def test_concurrent_promotions_leave_one_consistent_alias(
    serve_model: Path, tmp_path: Path, record
) -> None:
    store = Store.from_settings()
    base = ResolvedModel(serve_model, "tiny", "a" * 64, "b" * 64, "<|im_end|>", 1)
    lora = build_lora(serve_model, tmp_path / "lora-0", seed=1)
    for number in range(3):
        # A folder name per training run: each registration claims its own version.
        copy = tmp_path / f"lora-{number + 1}"
        shutil.copytree(lora, copy)
        register_lora(store, base, "extractor", copy, promote=False)
    names = adapters.versions(store, "extractor")
    assert names == ["v1", "v2", "v3"]
    rounds, seen = 30, set()
    for round_number in range(rounds):
        start = threading.Barrier(len(names))

        def promote(version: str, barrier: threading.Barrier, reason: str) -> None:
            barrier.wait()
            adapters.promote(store, "extractor", version, reason=reason)

        threads = [
            threading.Thread(target=promote, args=(v, start, f"race {round_number}")) for v in names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        alias = store.read_json(Layout.adapter_alias("extractor"))
        # Whole JSON naming one registered version, which resolves to its own manifest.
        assert alias["version"] in names and alias["name"] == "extractor"
        assert adapters.resolve(store, "extractor")["version"] == alias["version"]
        seen.add(alias["version"])
    leftovers = [k for k in store.list("adapters/extractor") if ".tmp-" in k]
    assert leftovers == []
    record(
        13,
        f"{rounds} rounds of 3 threads promoting v1, v2 and v3 of one adapter at the same moment",
        f"after every round the alias was whole JSON naming one registered version that resolves "
        f"(winners seen: {', '.join(sorted(seen))}); no temporary files left",
    )
