"""Fixtures of the serve and end-to-end tests: one real vLLM engine (CPU) on a tiny model for the
whole session, adapters trained on it in seconds, and gateways started per test against the
test's own store; and the embedded Gemma-3-270m, converted once into pytest's cache. Engine and
models are only built when a test asks for them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.anchors import TargetForm
from shared.models import EMBEDDED_MODEL_ID, ResolvedModel, resolve_base_model
from shared.prompts import student_target
from shared.schema import get_schema
from shared.settings import Settings, get_settings
from shared.store import Store
from tests.serve.serve_support import build_lora, register_lora, train_lora
from tests.support import TIQU, ServiceProcess, free_port, start_process, wait_until
from tests.train.train_support import build_tiny_model, sample_records

API_KEY = "test-key-5f1e"
# The key the session's engine requires on its /v1 routes, as in production.
ENGINE_KEY = "engine-key-8c2d"


@dataclass(frozen=True)
class Loras:
    """Adapter folders on the tiny model: one answers null to everything, one learned labels,
    one is random and rambles until its token budget runs out."""

    nulls: Path
    labels: Path
    rambling: Path


@dataclass(frozen=True)
class Engine:
    url: str
    base_model: Path
    model_cache: Path
    process: ServiceProcess

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ENGINE_KEY}"}


@pytest.fixture(scope="session")
def gemma_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's cache folder (kept across sessions), or a session folder without the cache."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    return Path(cache.mkdir("tiqu-models")) if cache else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def gemma(gemma_cache: Path) -> ResolvedModel:
    """The embedded default base model (about a minute and a half to convert, once per cache)."""
    return resolve_base_model(Settings(base_model=EMBEDDED_MODEL_ID, model_cache=gemma_cache))


@pytest.fixture(scope="session")
def serve_records() -> list[dict[str, Any]]:
    return sample_records(90, seed=21)


@pytest.fixture(scope="session")
def serve_model(tmp_path_factory: pytest.TempPathFactory, serve_records) -> Path:
    corpus = [m["content"] for r in serve_records for m in r["messages"]]
    return build_tiny_model(tmp_path_factory.mktemp("serve-model"), corpus)


@pytest.fixture(scope="session")
def loras(tmp_path_factory: pytest.TempPathFactory, serve_model: Path, serve_records) -> Loras:
    root = tmp_path_factory.mktemp("loras")
    texts = [r["messages"][1]["content"] for r in serve_records[:40]]
    answered = [(r["messages"][1]["content"], r["messages"][2]["content"]) for r in serve_records]
    null_answer = student_target({}, get_schema())
    return Loras(
        nulls=train_lora(serve_model, root / "nulls", [(t, null_answer) for t in texts], steps=40),
        labels=train_lora(serve_model, root / "labels", answered[:40], steps=120),
        rambling=build_lora(serve_model, root / "rambling", seed=100),
    )


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory, serve_model: Path) -> Iterator[Engine]:
    """`tiqu serve engine`: vLLM's OpenAI server with runtime LoRA, shared by the session."""
    root = tmp_path_factory.mktemp("engine")
    started = start_engine(root, serve_model, TIQU_MODEL_CACHE=str(root / "models"))
    try:
        yield started
    finally:
        started.process.stop()


def start_engine(root: Path, base_model: Path, **extra_env: str) -> Engine:
    """`tiqu serve engine` on the tiny `base_model`, once healthy; the caller stops it."""
    import os

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIQU_")}
    env.update(
        TIQU_BASE_MODEL=str(base_model),
        TIQU_ENGINE_PORT=str(port),
        TIQU_ENGINE_API_KEY=ENGINE_KEY,
        TIQU_ENGINE_MAX_MODEL_LEN="2048",
        TIQU_ENGINE_MAX_NUM_SEQS="32",
        TIQU_ENGINE_MAX_CPU_LORAS="16",
        # The tiny model needs a few MB of KV cache; a share of the memory would depend on the
        # machine (and fail where vLLM's own process already holds more than that share).
        TIQU_ENGINE_KV_CACHE_GIB="0.25",
        # vLLM's own binding: one core stays free for the gateway and the tests' clients.
        TIQU_ENGINE_CPU_THREADS_BIND="auto",
        PYTHONUNBUFFERED="1",
        **extra_env,
    )
    process = start_process([TIQU, "serve", "engine"], root / "engine.log", env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 480, "vLLM engine start", process)  # minutes on a busy machine
    except BaseException:
        process.stop()
        raise
    return Engine(url, base_model, Path(env["TIQU_MODEL_CACHE"]), process)


@pytest.fixture
def base(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> ResolvedModel:
    """The engine's base model, as this test process resolves it (to register adapters)."""
    monkeypatch.setenv("TIQU_BASE_MODEL", str(engine.base_model))
    monkeypatch.setenv("TIQU_MODEL_CACHE", str(engine.model_cache))
    get_settings.cache_clear()
    return resolve_base_model()


@pytest.fixture
def register(base: ResolvedModel) -> Callable[..., dict[str, Any]]:
    """Register (and by default promote) a LoRA folder in the test's store."""
    store = Store.from_settings()

    def add(
        name: str,
        folder: Path,
        *,
        promote: bool = True,
        probe: dict[str, str] | None = None,
        target_form: TargetForm = "copy",
    ) -> dict[str, Any]:
        return register_lora(
            store, base, name, folder, promote=promote, probe=probe, target_form=target_form
        )

    return add


@pytest.fixture
def gateway_env(engine: Engine, tmp_path: Path) -> dict[str, str]:
    return {
        "TIQU_ENGINE_URL": engine.url,
        "TIQU_ENGINE_API_KEY": ENGINE_KEY,
        "TIQU_BASE_MODEL": str(engine.base_model),
        "TIQU_MODEL_CACHE": str(engine.model_cache),
        "TIQU_ADAPTER_DIR": str(tmp_path / "served-adapters"),
        "TIQU_API_KEYS": f"other-key,{API_KEY}",
        "TIQU_SERVE_MAX_NEW_TOKENS": "96",
    }


@pytest.fixture
def start_gateway(start_api, gateway_env: dict[str, str]) -> Callable[..., ServiceProcess]:
    """Start the gateway and wait until it is ready (engine reached, default adapter loaded)."""

    def start(**extra_env: str) -> ServiceProcess:
        server = start_api("serve", **{**gateway_env, **extra_env})
        wait_until(lambda: ready(server.url), 90, "gateway ready", server)
        return server

    return start


def ready(url: str | None) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def copy_lora(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest
