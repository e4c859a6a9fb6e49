"""Scenario 19: the gateway serves only promoted or pinned adapter versions, each one whole and as
it was trained (issue 13, items 8 and 9).

- A registered version that was never promoted nor pinned in `TIQU_SERVE_ADAPTERS` is refused
  (404) without being downloaded; a tampered pinned version is downloaded and hashed once, then
  refused from memory; a thousand unknown references leave no lock, no refusal and no metric
  label behind.
- Every adapter file is hashed: a registered version whose `adapter_config.json` was altered in
  the store (`lora_alpha`) is refused, as is one registered with a hash of its weights only. The
  load probe checks the values the version extracted from the probe complaint when trained.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest

from services.serve.lifecycle import AdapterManager, ServedAdapter
from shared import adapters
from shared.errors import NotFoundError
from shared.models import ResolvedModel, load_tokenizer
from shared.prompts import student_target
from shared.schema import get_schema
from shared.settings import get_settings
from shared.store import Layout, Store
from tests.engine_fixtures import auth, copy_lora
from tests.serve.serve_support import build_lora, register_lora, train_lora

COMPLAINT = "快递丢了，电话 13800138000"
# The phone of the registry's probe complaint (`adapters.PROBE_COMPLAINT`).
PHONE = {"phone": "13800138000"}


def extract(
    url: str, adapter: str | None, text: str = COMPLAINT, client: httpx.Client | None = None
) -> httpx.Response:
    body = {"text": text} | ({"adapter": adapter} if adapter else {})
    post = client.post if client else httpx.post
    return post(f"{url}/v1/extract", json=body, headers=auth(), timeout=120)


def loads(url: str, result: str) -> float:
    """How many times the gateway tried to load a version of `extractor` (`loaded`, `failed`):
    each try downloads and hashes the version."""
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(
        rf'tiqu_adapter_loads_total\{{adapter="extractor",result="{result}"\}} (\S+)', metrics
    )
    return float(found.group(1)) if found else 0.0


def adapter_labels(url: str) -> set[str]:
    return set(re.findall(r'adapter="([^"]*)"', httpx.get(f"{url}/metrics", timeout=10).text))


def rewrite(store: Store, version: str, filename: str, change) -> None:
    """Change one file of a registered `extractor` version in the store, as an intruder would."""
    key = Layout.adapter("extractor", version, filename)
    store.write_bytes(key, change(store.read_bytes(key)))


def unknown_references(count: int) -> list[str]:
    """Half unknown names, half unknown versions of the served name."""
    rng = random.Random(19)
    names = [f"x{rng.getrandbits(48):012x}" for _ in range(count // 2)]
    versions = [f"extractor@v{rng.randint(6, 10**9)}" for _ in range(count - count // 2)]
    return names + versions


@pytest.mark.integration
@pytest.mark.slow
def test_only_promoted_or_pinned_versions_are_served(
    register, loras, start_gateway, gateway_env, tmp_path: Path, record
) -> None:
    store = Store.from_settings()
    register("extractor", loras.nulls)  # v1
    register("extractor", copy_lora(loras.labels, tmp_path / "v2"))  # v2, promoted...
    adapters.promote(store, "extractor", "v1", reason="rolled back")  # ...then rolled back
    register("extractor", copy_lora(loras.labels, tmp_path / "v3"), promote=False)
    register("extractor", copy_lora(loras.labels, tmp_path / "v4"), promote=False)
    rewrite(store, "v4", adapters.WEIGHTS_FILE, lambda data: data[:-16] + bytes(16))
    gateway = start_gateway(TIQU_SERVE_ADAPTERS="extractor,extractor@v4")
    served_dir = Path(gateway_env["TIQU_ADAPTER_DIR"])

    never_promoted = extract(gateway.url, "extractor@v3")
    assert never_promoted.status_code == 404, never_promoted.text
    assert never_promoted.json()["error"]["code"] == "adapter_not_served"
    assert loads(gateway.url, "loaded") == 1 and loads(gateway.url, "failed") == 0  # v1 only
    assert not [p.name for p in served_dir.iterdir() if "-v3-" in p.name]

    promoted_before = extract(gateway.url, "extractor@v2")
    assert promoted_before.status_code == 200, promoted_before.text
    assert promoted_before.json()["adapter"] == "extractor@v2"

    tampered = [extract(gateway.url, "extractor@v4") for _ in range(20)]
    assert {r.status_code for r in tampered} == {422}, tampered[0].text
    assert {r.json()["error"]["code"] for r in tampered} == {"hash_mismatch"}
    tampered_loads = loads(gateway.url, "failed")
    assert tampered_loads == 1

    references = unknown_references(1000)
    with httpx.Client() as client:
        statuses = Counter(
            extract(gateway.url, ref, client=client).status_code for ref in references
        )
    assert statuses == {404: len(references)}, statuses
    labels = adapter_labels(gateway.url)
    assert labels <= {"extractor", "default", "other"}, sorted(labels)[:10]
    tried = {result: loads(gateway.url, result) for result in ("loaded", "failed")}
    assert tried == {"loaded": 2, "failed": 1}  # v1 and v2; v4 once
    folders = sorted(p.name.rsplit("-", 1)[0] for p in served_dir.iterdir())
    assert folders == ["extractor-v1", "extractor-v2"], folders
    default = extract(gateway.url, None)
    assert default.status_code == 200 and default.json()["adapter"] == "extractor@v1"
    record(
        19,
        "gateway serving extractor (v1 promoted; v2 promoted then rolled back; v3 registered, "
        "never promoted; v4 pinned in TIQU_SERVE_ADAPTERS, weights tampered in the store): v3 "
        f"asked once, v4 asked {len(tampered)} times, then {len(references)} random unknown "
        "references (names and versions)",
        f"v3 404 adapter_not_served, never downloaded; v2 served; v4 422 hash_mismatch "
        f"{len(tampered)} times from {tampered_loads:.0f} download; unknown references "
        f"{statuses[404]}/{len(references)} 404, adapter label values on /metrics: "
        f"{', '.join(sorted(labels))}; versions loaded in all {tried['loaded']:.0f} (v1, v2), "
        f"refused {tried['failed']:.0f}",
    )


def test_unknown_references_hold_no_lock(
    serve_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record
) -> None:
    """The manager itself, with the engine's load and probe recorded: unknown references never
    reach a lock, a refusal or the engine."""
    monkeypatch.setenv("TIQU_ADAPTER_DIR", str(tmp_path / "served"))
    get_settings.cache_clear()
    store = Store.from_settings()
    base = ResolvedModel(serve_model, "tiny", "a" * 64, "b" * 64, "<|im_end|>", 1)
    register_lora(store, base, "extractor", build_lora(serve_model, tmp_path / "lora", seed=1))
    engine_loads: list[str] = []

    async def load(lora_name: str, _: Path) -> None:
        engine_loads.append(lora_name)

    async def unload(_: str) -> None:
        return None

    async def probe(_: ServedAdapter) -> None:
        return None

    manager = AdapterManager(
        store=store,
        settings=get_settings(),
        base=base,
        tokenizer=load_tokenizer(serve_model),
        load=load,
        unload=unload,
        probe=probe,
    )
    references = unknown_references(1000)

    async def run() -> int:
        await manager.activate("extractor", "v1")
        refused = 0
        for reference in references:
            with pytest.raises(NotFoundError):
                await manager.acquire(reference)
            refused += 1
        return refused

    refused = asyncio.run(run())
    locks = len(manager._locks)
    assert locks == 2  # the alias of extractor and the load of v1
    assert not manager.refused and len(engine_loads) == 1
    record(
        19,
        f"{len(references)} random unknown adapter references (names, versions of a served "
        "name) asked of the gateway's adapter manager",
        f"{refused}/{len(references)} refused (404); locks held: {locks} (those of the served "
        f"v1), refusals remembered: {len(manager.refused)}, engine loads: {len(engine_loads)}",
    )


@pytest.mark.integration
@pytest.mark.slow
def test_a_version_is_served_only_whole_and_as_trained(
    register, loras, start_gateway, serve_model: Path, tmp_path: Path, record
) -> None:
    store = Store.from_settings()
    register("extractor", loras.nulls)  # v1, the default
    register("extractor", copy_lora(loras.labels, tmp_path / "v2"), promote=False)
    register("extractor", copy_lora(loras.labels, tmp_path / "v3"), promote=False)
    # v4 claims it extracted the probe complaint's phone; it answers null to everything.
    register("extractor", copy_lora(loras.nulls, tmp_path / "v4"), promote=False, probe=PHONE)

    def scaled_alpha(data: bytes) -> bytes:
        config = json.loads(data)
        config["lora_alpha"] *= 4
        return json.dumps(config).encode()

    rewrite(store, "v2", adapters.CONFIG_FILE, scaled_alpha)
    # v3 as registered before whole-adapter hashes: its manifest has the weights' hash only.
    manifest = adapters.load_manifest(store, "extractor", "v3")
    assert manifest is not None
    old = {k: v for k, v in manifest.items() if k not in ("files", "adapter_sha256")}
    store.write_json(Layout.adapter("extractor", "v3", adapters.MANIFEST_FILE), old)
    pins = ",".join(f"extractor@v{n}" for n in range(2, 6))
    gateway = start_gateway(TIQU_SERVE_ADAPTERS=f"extractor,{pins}")

    altered = extract(gateway.url, "extractor@v2")
    assert altered.status_code == 422, altered.text
    assert altered.json()["error"]["code"] == "hash_mismatch"
    assert adapters.CONFIG_FILE in altered.json()["error"]["message"]
    weights_only = extract(gateway.url, "extractor@v3")
    assert weights_only.status_code == 422, weights_only.text
    assert weights_only.json()["error"]["code"] == "integrity_unknown"
    wrong_probe = extract(gateway.url, "extractor@v4")
    assert wrong_probe.status_code == 422, wrong_probe.text
    assert wrong_probe.json()["error"]["code"] == "probe_failed"

    # v5 learned the probe complaint; training records what it extracts (as the pipeline does).
    target = student_target({**adapters.PROBE_VALUES, "question": "快递丢了"}, get_schema())
    folder = train_lora(
        serve_model, tmp_path / "v5", [(adapters.PROBE_COMPLAINT, target)], steps=60
    )
    probe = probe_values(serve_model, folder)
    assert probe.get("phone") == PHONE["phone"], probe
    register("extractor", folder, promote=False, probe=probe)
    answered = extract(gateway.url, "extractor@v5", text=adapters.PROBE_COMPLAINT)
    assert answered.status_code == 200, answered.text
    assert answered.json()["fields"]["phone"] == PHONE["phone"]
    default = extract(gateway.url, None)
    assert default.status_code == 200 and default.json()["adapter"] == "extractor@v1"
    record(
        19,
        "pinned versions: v2 with lora_alpha x4 in its stored adapter_config.json, v3 with a "
        "manifest holding its weights' hash only, v4 (answers null) whose manifest says it "
        "extracted the probe complaint's phone, v5 trained on the probe complaint",
        f"v2 {altered.status_code} {altered.json()['error']['code']}, v3 "
        f"{weights_only.status_code} {weights_only.json()['error']['code']}, v4 "
        f"{wrong_probe.status_code} {wrong_probe.json()['error']['code']}; v5 passed its probe "
        f"({', '.join(sorted(probe))} as in training) and answered the phone; v1 kept serving",
    )


def probe_values(base: Path, folder: Path) -> dict[str, str]:
    """What the training pipeline records for the adapter in `folder`: its greedy answer to the
    probe complaint (peft, no constraint), fields that hold the known value."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from services.train.evaluate import Evaluator, Generation

    tokenizer = load_tokenizer(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), folder
    )
    generation = Generation(
        batch_size=1,
        max_new_tokens=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Evaluator(model, tokenizer, generation, get_schema()).probe_values()
