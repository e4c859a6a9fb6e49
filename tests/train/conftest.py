"""Fixtures of the train tests: a tiny model built once per session, distill runs, settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import get_settings
from shared.store import Store
from tests.train.train_support import (
    build_tiny_model,
    sample_records,
    split_records,
    write_distill_run,
)

DATASET_ID = "ds-00000000000000aa"
RUN_ID = "dr-00000000000000aa-000000000001"


@pytest.fixture(scope="session")
def records() -> list[dict[str, Any]]:
    """Distill-format records of about 80 generated complaints."""
    return sample_records(90, seed=21)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]]) -> Path:
    corpus = [message["content"] for record in records for message in record["messages"]]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), corpus)


@pytest.fixture
def train_env(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Settings for fast trainings of the tiny model; also returned for worker processes."""
    env = {
        "TIQU_BASE_MODEL": str(tiny_model),
        "TIQU_MODEL_CACHE": str(tmp_path / "models"),
        "TIQU_TRAIN_WORK_DIR": str(tmp_path / "work"),
        "TIQU_TRAIN_EPOCHS": "2",
        "TIQU_TRAIN_BATCH_SIZE": "8",
        "TIQU_TRAIN_LEARNING_RATE": "0.02",
        "TIQU_TRAIN_MAX_LENGTH": "512",
        "TIQU_TRAIN_CHECKPOINT_EVERY": "3",
        "TIQU_EVAL_BATCH_SIZE": "8",
        "TIQU_EVAL_MAX_NEW_TOKENS": "24",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
def distill_run(isolated_settings: Path, records: list[dict[str, Any]]) -> str:
    """A distill run of 60 train, 10 val and 8 test records in the test's store."""
    splits = split_records(records[:78], val=10, test=8)
    write_distill_run(Store.from_settings(), DATASET_ID, RUN_ID, splits)
    return RUN_ID
