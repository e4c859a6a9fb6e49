"""One adapter merged into the base weights (TIQU_ENGINE_MERGED_ADAPTER): the same answers as the
runtime LoRA, through a real vLLM engine and the gateway, and no other adapter loaded beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.serve.engine import BASE_MODEL_NAME
from services.serve.lifecycle import AdapterIntegrityError, engine_name
from services.serve.merge import COMPLETE_MARK, merged_model
from shared import adapters
from shared.models import ResolvedModel, resolve_base_model
from shared.samples import generate_complaints
from shared.settings import get_settings
from shared.store import Layout, Store
from tests.engine_fixtures import auth, start_engine
from tests.serve.serve_support import register_lora
from tests.serve.test_gateway import README_TRY_IT, extract
from tests.support import wait_until


@pytest.fixture
def tiny_base(serve_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResolvedModel:
    """The engine's tiny base model, resolved without starting an engine."""
    monkeypatch.setenv("TIQU_BASE_MODEL", str(serve_model))
    monkeypatch.setenv("TIQU_MODEL_CACHE", str(tmp_path / "models"))
    get_settings.cache_clear()
    return resolve_base_model()


def test_the_merged_weights_compute_what_base_plus_lora_computes(
    loras, tiny_base: ResolvedModel
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    settings, store, base = get_settings(), Store.from_settings(), tiny_base
    manifest = register_lora(store, base, "extractor", loras.labels)
    merged = merged_model(settings, store, base, "extractor")
    assert merged.served_name == engine_name("extractor", "v1", manifest["adapter_sha256"])
    assert merged.reference == "extractor@v1"
    assert json.loads((merged.path / COMPLETE_MARK).read_text())["adapter"] == "extractor@v1"
    tokenizer_files = {p.name for p in base.path.iterdir() if p.name.startswith("tokenizer")}
    assert tokenizer_files and tokenizer_files <= {p.name for p in merged.path.iterdir()}

    ids = torch.tensor([[1, 5, 9, 42, 7, 3, 11]])
    plain = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    with_lora = PeftModel.from_pretrained(plain, loras.labels).eval()
    folded = AutoModelForCausalLM.from_pretrained(merged.path, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = with_lora(ids).logits
        got = folded(ids).logits
        untouched = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)(ids)
    assert torch.allclose(got, expected, atol=1e-3), (got - expected).abs().max()
    # The adapter changes the model: equal logits are not the base model's.
    assert not torch.allclose(got, untouched.logits, atol=1e-3)

    # Cached: a restart serves the merged folder without merging again.
    before = (merged.path / COMPLETE_MARK).stat().st_mtime_ns
    assert merged_model(settings, store, base, "extractor@v1").path == merged.path
    assert (merged.path / COMPLETE_MARK).stat().st_mtime_ns == before


def test_a_tampered_adapter_is_never_merged(loras, tiny_base: ResolvedModel) -> None:
    store, base = Store.from_settings(), tiny_base
    register_lora(store, base, "extractor", loras.labels)
    key = Layout.adapter("extractor", "v1", adapters.WEIGHTS_FILE)
    weights = bytearray(store.read_bytes(key))
    weights[-16:] = bytes(16)
    store.write_bytes(key, bytes(weights))
    with pytest.raises(AdapterIntegrityError, match="not the one registered"):
        merged_model(get_settings(), store, base, "extractor")
    merged_root = Path(get_settings().model_cache).resolve() / "merged"
    assert not list(merged_root.glob("extractor-v1-*"))


def runtime_lora_answers(start_gateway: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Complaints and what a gateway on the shared runtime-LoRA engine answers for them: what an
    engine serving the same adapter another way must answer too."""
    texts = [README_TRY_IT, *generate_complaints(40, seed=5).labels["text"].tolist()[:8]]
    gateway = start_gateway()
    answers = [extract(gateway.url, text).json() for text in texts]
    gateway.stop()
    return texts, answers


def test_a_merged_engine_answers_as_the_runtime_lora_and_loads_nothing_else(
    register, loras, engine, start_gateway, tmp_path: Path, isolated_settings: Path
) -> None:
    manifest = register("extractor", loras.labels)
    texts, expected = runtime_lora_answers(start_gateway)

    merged_engine = start_engine(
        tmp_path / "merged-engine",
        engine.base_model,
        TIQU_MODEL_CACHE=str(engine.model_cache),
        TIQU_STORE_URL=f"file://{isolated_settings}",
        TIQU_ADAPTER_DIR=str(tmp_path / "engine-adapters"),
        TIQU_ENGINE_MERGED_ADAPTER="extractor",
    )
    try:
        models = httpx.get(f"{merged_engine.url}/v1/models", headers=engine.headers, timeout=10)
        served_name = engine_name("extractor", "v1", manifest["adapter_sha256"])
        assert {m["id"] for m in models.json()["data"]} == {BASE_MODEL_NAME, served_name}
        assert "merged into the base" in merged_engine.process.log()

        gateway = start_gateway(TIQU_ENGINE_URL=merged_engine.url)
        answers = [extract(gateway.url, text).json() for text in texts]
        assert [a["adapter"] for a in answers] == ["extractor@v1"] * len(texts)
        assert [a["fields"] for a in answers] == [e["fields"] for e in expected]
        assert [a["usage"] for a in answers] == [e["usage"] for e in expected]

        # A new version cannot be loaded beside the merged one: it is refused with a reason,
        # and the merged version keeps serving.
        register("extractor", loras.nulls)
        refused = extract(gateway.url, README_TRY_IT, adapter="extractor@v2")
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "adapter_not_served"
        assert "TIQU_ENGINE_MERGED_ADAPTER" in refused.json()["error"]["message"]
        wait_until(lambda: "promoted adapter refused" in gateway.log(), 30, "the promotion refused")
        again = extract(gateway.url, README_TRY_IT)
        assert again.status_code == 200 and again.json()["adapter"] == "extractor@v1"
        assert again.json()["fields"] == expected[0]["fields"]
        listed = httpx.get(f"{gateway.url}/v1/adapters", headers=auth(), timeout=10).json()
        assert [(a["name"], a["version"]) for a in listed["adapters"]] == [("extractor", "v1")]
    finally:
        merged_engine.process.stop()
