"""Fixtures of the reliability suite: the distill fixtures (datasets, teacher stub, teacher
settings, run files) and train fixtures (tiny model, distill run, settings) for scenario tests
that live here, batch jobs on a real gateway, and the four APIs started at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.distill.conftest import (  # noqa: F401 (fixtures, found by pytest by name)
    dataset,
    make_dataset,
    read_run_file,
    start_stub,
    use_teacher,
)
from tests.engine_fixtures import API_KEY
from tests.reliability.job_support import batch_jobs  # noqa: F401 (fixture)
from tests.support import ServiceProcess
from tests.train.conftest import (  # noqa: F401 (fixtures, found by pytest by name)
    distill_run,
    records,
    tiny_model,
    train_env,
)


@pytest.fixture
def serve_env_without_engine(serve_model: Path, tmp_path: Path) -> dict[str, str]:
    """A gateway that can start (tokenizer of the tiny model) with no engine behind it."""
    from tests.support import free_port

    return {
        "TIQU_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
        "TIQU_BASE_MODEL": str(serve_model),
        "TIQU_MODEL_CACHE": str(tmp_path / "models"),
        "TIQU_ADAPTER_DIR": str(tmp_path / "served-adapters"),
        "TIQU_API_KEYS": f"other-key,{API_KEY}",
    }


@pytest.fixture
def all_apis(start_api, serve_env_without_engine) -> Callable[..., dict[str, ServiceProcess]]:
    """Start the four APIs (`serve`: the gateway, with no engine unless `serve_env` says)."""

    def start(serve_env: dict[str, str] | None = None, **env: str) -> dict[str, ServiceProcess]:
        keys = {"TIQU_API_KEYS": f"other-key,{API_KEY}"}
        apis = {name: start_api(name, **keys, **env) for name in ("ingest", "distill", "train")}
        apis["serve"] = start_api("serve", **(serve_env or serve_env_without_engine), **env)
        return apis

    return start


@pytest.fixture
def key_headers() -> Iterator[dict[str, str]]:
    yield {"Authorization": f"Bearer {API_KEY}"}
