"""The adapter registry: atomic versions, immutable weights, lint, promotion and its event."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import torch
from safetensors.torch import save_file

from shared import adapters
from shared.errors import ConflictError, InvalidInputError, NotFoundError
from shared.store import Store
from tests.train.train_support import listen_for_events

BASE = "a" * 64


def adapter_folder(
    folder: Path, *, rank: int = 8, extra: dict | None = None, seed: int = 0
) -> Path:
    """A minimal peft LoRA adapter folder (config and weights) for registry tests."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "modules_to_save": None}
    config.update(extra or {})
    (folder / adapters.CONFIG_FILE).write_text(json.dumps(config))
    torch.manual_seed(seed)
    weights = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(rank, 8),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(8, rank),
    }
    save_file(weights, folder / adapters.WEIGHTS_FILE)
    return folder


def test_concurrent_trainings_never_share_a_version(isolated_settings: Path) -> None:
    store = Store.from_settings()
    with ThreadPoolExecutor(8) as pool:
        claimed = list(pool.map(lambda i: adapters.claim_version(store, "ex", f"tr-{i}"), range(8)))
    assert sorted(claimed, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 9)]
    assert adapters.claim_version(store, "ex", "tr-3") == claimed[3]  # a retry finds its claim
    assert adapters.versions(store, "ex") == []  # claimed, not registered


def test_a_registered_version_never_changes_its_weights(
    isolated_settings: Path, tmp_path: Path
) -> None:
    store = Store.from_settings()
    version = adapters.claim_version(store, "ex", "tr-1")
    folder = adapter_folder(tmp_path / "a")
    manifest = adapters.register(store, "ex", version, folder, {"train_run_id": "tr-1"}, {})
    assert manifest["version"] == "v1" and len(manifest["weights_sha256"]) == 64
    again = adapters.register(store, "ex", version, folder, {"train_run_id": "tr-1"}, {})
    assert again == manifest
    other = adapter_folder(tmp_path / "b", seed=1)
    with pytest.raises(ConflictError):
        adapters.register(store, "ex", version, other, {"train_run_id": "tr-1"}, {})
    assert adapters.find_by_train_run(store, "ex", "tr-1") == manifest
    with pytest.raises(ValueError):
        adapters.write_files(store, "ex", version, {adapters.WEIGHTS_FILE: b"x"})


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"rank": 32}, "rank 32 is above the serving limit 16"),
        ({"extra": {"modules_to_save": ["lm_head"]}}, "modules_to_save"),
        ({"extra": {"rank_pattern": {"q_proj": 64}}}, "rank 64"),
        ({"extra": {"peft_type": "IA3"}}, "not LORA"),
    ],
)
def test_lint_refuses_what_vllm_cannot_serve(tmp_path: Path, kwargs: dict, problem: str) -> None:
    folder = adapter_folder(tmp_path, **kwargs)
    problems = adapters.lint(folder, max_rank=16, trained_on_sha256=BASE, base_sha256=BASE)
    assert any(problem in p for p in problems), problems
    with pytest.raises(InvalidInputError, match="adapter fails lint"):
        adapters.require_lint(folder, max_rank=16, trained_on_sha256=BASE, base_sha256=BASE)


def test_lint_refuses_embedding_weights_and_another_base(tmp_path: Path) -> None:
    folder = adapter_folder(tmp_path)
    save_file(
        {"base_model.model.lm_head.weight": torch.zeros(4, 4)}, folder / adapters.WEIGHTS_FILE
    )
    problems = adapters.lint(folder, max_rank=16, trained_on_sha256=BASE, base_sha256="b" * 64)
    assert any("lm_head" in p for p in problems)
    assert any("trained on base weights aaaaaaaaaaaa" in p for p in problems)
    servable = adapter_folder(tmp_path / "servable")
    assert adapters.lint(servable, max_rank=16, trained_on_sha256=BASE, base_sha256=BASE) == []


def test_promotion_moves_the_alias_and_announces_it(
    isolated_settings: Path, tmp_path: Path, redis_url: str
) -> None:
    store = Store.from_settings()
    for number in (1, 2):
        version = adapters.claim_version(store, "ex", f"tr-{number}")
        folder = adapter_folder(tmp_path / version, seed=number)
        adapters.register(store, "ex", version, folder, {"train_run_id": f"tr-{number}"}, {})
    events: list[dict] = []
    listener = listen_for_events("adapter.promoted", 2, events)
    adapters.promote(store, "ex", "v1", reason="first")
    alias = adapters.promote(store, "ex", "v2", reason="better")
    assert alias["previous_version"] == "v1"
    assert adapters.resolve(store, "ex")["version"] == "v2"
    assert adapters.resolve(store, "ex:v1")["version"] == "v1"
    with pytest.raises(NotFoundError):
        adapters.promote(store, "ex", "v3", reason="missing")
    listener.join(15)
    assert [(e["data"]["version"], e["data"]["previous_version"]) for e in events] == [
        ("v1", None),
        ("v2", "v1"),
    ]


def test_promotion_needs_every_field_at_least_as_good() -> None:
    current = {"name": 0.9, "phone": 1.0}
    assert adapters.regressions({"name": 0.95, "phone": 1.0}, current, margin=0.0) == []
    assert adapters.regressions({"name": 0.95, "phone": 0.98}, current, margin=0.0) == ["phone"]
    assert adapters.regressions({"name": 0.95, "phone": 0.98}, current, margin=0.05) == []


def test_versions_are_claimed_exclusively_on_s3_too(s3_server: str) -> None:
    bucket = f"tiqu-train-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    store = Store(f"s3://{bucket}/root", endpoint_url=s3_server, key="testing", secret="testing")
    assert store.create("adapters/ex/v1/claim.json", b'{"train_run_id": "tr-1"}')
    assert not store.create("adapters/ex/v1/claim.json", b'{"train_run_id": "tr-2"}')
    assert store.read_json("adapters/ex/v1/claim.json") == {"train_run_id": "tr-1"}
    assert adapters.claim_version(store, "ex", "tr-2") == "v2"
    assert adapters.claim_version(store, "ex", "tr-1") == "v1"
