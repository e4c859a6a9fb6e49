"""Adapters for the serve tests: peft LoRAs on the tiny model, registered as training would."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from shared import adapters
from shared.anchors import TargetForm
from shared.models import ResolvedModel
from shared.schema import get_schema
from shared.store import Store


def build_lora(base: Path, out: Path, *, seed: int, rank: int = 8, scale: float = 1.0) -> Path:
    """A peft LoRA on every linear layer of `base` with random (non-zero) A and B matrices.

    Different seeds give adapters whose greedy answers differ, as two trained adapters would.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank * 2,
        target_modules="all-linear",
        lora_dropout=0.0,
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, scale)
    peft_model.save_pretrained(out)
    return out


def register_lora(
    store: Store,
    base: ResolvedModel,
    name: str,
    folder: Path,
    *,
    promote: bool = True,
    probe: dict[str, str] | None = None,
    target_form: TargetForm = "copy",
) -> dict[str, Any]:
    """Register `folder` as the next version of `name` (and promote it) like a training does;
    `probe`: the values it extracted right from the probe complaint (none by default);
    `target_form`: how it was taught to write free-text fields."""
    version = adapters.claim_version(store, name, f"tr-test-{folder.name}")
    manifest = {
        "train_run_id": f"tr-test-{folder.name}",
        "schema_version": get_schema().version,
        "base_model": {k: v for k, v in base.describe().items() if k != "path"},
        "metrics": {},
        "hyperparameters": {"target_form": target_form},
        "probe": probe or {},
        "lint": "passed",
    }
    registered = adapters.register(store, name, version, folder, manifest, {})
    if promote:
        adapters.promote(store, name, version, reason="test")
    return registered


def lora_folders(base: Path, count: int) -> list[Path]:
    """`count` distinct LoRA folders on `base` in a fresh temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="tiqu-loras-"))
    return [build_lora(base, root / f"lora-{i}", seed=100 + i) for i in range(count)]


def train_lora(
    base: Path, out: Path, examples: list[tuple[str, str]], *, steps: int = 60, seed: int = 0
) -> Path:
    """A LoRA taught to answer each text with its target (prompt rendered as serving does)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from shared.chat import encode_prompt, encode_text, turn_end_token
    from shared.models import load_tokenizer
    from shared.prompts import student_messages

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(base)
    schema = get_schema()
    end = turn_end_token(tokenizer)
    encoded = []
    for text, target in examples:
        prompt = encode_prompt(tokenizer, student_messages(text, schema))
        answer = encode_text(tokenizer, target + end)
        encoded.append((prompt + answer, [-100] * len(prompt) + answer))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    peft_model.train()
    for step in range(steps):
        ids, labels = encoded[step % len(encoded)]
        loss = peft_model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    return out
