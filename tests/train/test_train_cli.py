"""`tiqu train`, `tiqu eval` and `tiqu adapters` as a user runs them, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared import adapters, labelsets
from shared.cli import app
from shared.labelsets import Source
from shared.settings import get_settings
from shared.store import Layout, Store
from tests.train.conftest import DATASET_ID
from tests.train.train_support import write_distill_run

runner = CliRunner()


@pytest.fixture
def cli_env(train_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("TIQU_TRAIN_THREADS", "1")
    monkeypatch.setenv("TIQU_LOG_JSON", "false")
    get_settings.cache_clear()
    return train_env


def tiqu(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_train_register_promote_and_evaluate(
    cli_env: dict[str, str],
    distill_run: str,
    records: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = tiqu("train", distill_run, "--json", "--seed", "3")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["adapter"] == {"name": "extractor", "version": "v1"} and summary["promoted"]

    second = tiqu("train", distill_run, "--seed", "4", "--no-promote", "--epochs", "1")
    assert second.exit_code == 0, second.output
    assert "extractor:v2" in second.stdout and "not promoted" in second.stdout
    assert "exact (base)" in second.stdout
    store = Store.from_settings()
    assert adapters.read_alias(store, "extractor")["version"] == "v1"

    promoted = tiqu("adapters", "promote", "extractor", "v2")
    assert promoted.exit_code == 0 and "now serves v2 (was v1)" in promoted.stdout
    listing = tiqu("adapters", "list")
    assert "extractor:v1" in listing.stdout and "extractor:v2 ★" in listing.stdout
    shown = tiqu("adapters", "show", "extractor:v1")
    assert shown.exit_code == 0 and "hyperparameters rank=16" in shown.stdout

    gold = tmp_path / "gold.jsonl"
    held_out = records[78:]  # the distill run's splits hold records[:78]
    assert len(held_out) >= 3
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in held_out))
    evaluated = tiqu("eval", "extractor:v1", "--gold", str(gold), "--json")
    assert evaluated.exit_code == 0, evaluated.output
    document = json.loads(evaluated.stdout)
    assert set(document["sets"]) == {"test", "gold gold.jsonl"}
    assert document["sets"]["gold gold.jsonl"]["rows"] == len(held_out)
    stored = store.read_json(Layout.adapter("extractor", "v1", "eval.json"))
    assert stored["sets"].keys() == document["sets"].keys()

    # Hand labels train beside the run; the one of a val complaint is left out. This time the
    # bare base model is not scored (as in make demo).
    monkeypatch.setenv("TIQU_EVAL_BASE_MODEL", "false")
    get_settings.cache_clear()
    for row, record in enumerate((records[78], records[65])):
        text, label = record["messages"][1]["content"], record["label"]
        labelsets.accept(store, "corrections", text, label, Source(DATASET_ID, "dr-x", str(row)))
    third = tiqu(
        "train",
        distill_run,
        *("--seed", "5", "--epochs", "1", "--labels", "corrections", "--json"),
        *("--target-form", "anchors"),
    )
    verdict = json.loads(third.stdout)
    assert verdict["adapter"]["version"] == "v3"
    assert "extractor:v2" in verdict["promotion"]  # compared with the promoted version
    assert "same test split" in verdict["promotion"]
    manifest = adapters.load_manifest(store, "extractor", "v3")
    assert manifest["labelsets"] == [
        {"labelset": "corrections@v2", "rows": 2, "used": 1, "dropped_held_out": 1}
    ]
    assert "+ corrections@v2 (1 rows)" in tiqu("adapters", "show", "extractor:v3").stdout
    assert manifest["metrics"]["base_exact_match"] == {}
    # Trained to write the question as its ends: serving and evaluation read the form here.
    assert adapters.target_form(manifest) == "anchors"
    assert adapters.target_form(adapters.load_manifest(store, "extractor", "v2")) == "copy"
    assert (
        "base"
        not in store.read_json(Layout.adapter("extractor", "v3", "eval.json"))["sets"]["test"]
    )
    assert "base" in store.read_json(Layout.adapter("extractor", "v2", "eval.json"))["sets"]["test"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["train", "dr-unknown"], {}, "distill run dr-unknown not found"),
        (["train", "dr-empty"], {}, "empty train split"),
        (["train", "RUN", "--rank", "32"], {}, "rank 32 is above the serving limit of 16"),
        (["train", "RUN", "--labels", "nope"], {}, "label set nope not found"),
        (["train", "RUN"], {"TIQU_BASE_MODEL": "/no/such/model"}, "/no/such/model does not exist"),
        (["eval", "extractor"], {}, "adapter extractor has no promoted version"),
    ],
)
def test_bad_input_fails_with_one_line_and_registers_nothing(
    cli_env: dict[str, str],
    distill_run: str,
    isolated_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    write_distill_run(Store.from_settings(), DATASET_ID, "dr-empty", {"train": [], "test": []})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    result = tiqu(*[distill_run if a == "RUN" else a for a in args])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (isolated_settings / "adapters").exists()
