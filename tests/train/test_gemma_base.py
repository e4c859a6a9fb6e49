"""The embedded Gemma-3-270m: converted once from the pip-installed GGUF package, then reused.

Slow (about a minute and a half for the one conversion per cache folder): the cache lives in
pytest's cache directory, so later sessions on the same checkout skip the conversion.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from services.train.request import TrainParams
from services.train.trainer import LoraTrainer
from shared import adapters
from shared.chat import encode_prompt, render_prompt, turn_end_token
from shared.models import (
    EMBEDDED_MODEL_ID,
    MARKER,
    ResolvedModel,
    ensure_embedded_model,
    resolve_base_model,
    weights_sha256,
)
from shared.prompts import student_messages
from shared.schema import get_schema
from shared.settings import Settings

pytestmark = pytest.mark.slow


def test_the_conversion_is_verified_and_happens_once(
    gemma: ResolvedModel, gemma_cache: Path
) -> None:
    marker = json.loads((gemma.path / MARKER).read_text())
    assert "4" in marker["sanity_check"]["answer"]
    assert marker["identity"]["weights_sha256"] == gemma.weights_sha256
    assert weights_sha256(gemma.path) == gemma.weights_sha256
    assert (gemma.eos_token, gemma.eos_token_id) == ("<end_of_turn>", 106)
    generation = json.loads((gemma.path / "generation_config.json").read_text())
    assert 106 in generation["eos_token_id"]
    assert not (json.loads((gemma.path / "config.json").read_text())).get("quantization_config")

    stamp = (gemma.path / MARKER).stat().st_mtime_ns
    started = time.perf_counter()
    assert ensure_embedded_model(gemma_cache) == gemma.path
    again = resolve_base_model(Settings(base_model=EMBEDDED_MODEL_ID, model_cache=gemma_cache))
    assert time.perf_counter() - started < 5
    assert again == gemma and (gemma.path / MARKER).stat().st_mtime_ns == stamp
    assert [p.name for p in gemma_cache.iterdir() if ".tmp-" in p.name] == []


def test_prompts_start_with_one_bos_and_use_gemma_turns(gemma: ResolvedModel) -> None:
    tokenizer = gemma.load_tokenizer()
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id == 2
    messages = student_messages("我是张三，电话13800138000。", get_schema())
    prompt = render_prompt(tokenizer, messages)
    assert prompt == (
        f"<bos><start_of_turn>user\n{messages[0]['content']}\n\n{messages[1]['content']}"
        "<end_of_turn>\n<start_of_turn>model\n"
    )
    ids = encode_prompt(tokenizer, messages)
    assert ids[:2] == [2, 105] and ids.count(2) == 1
    assert turn_end_token(tokenizer) == "<end_of_turn>"


def test_a_lora_adapter_on_gemma_is_servable(gemma: ResolvedModel, tmp_path: Path) -> None:
    model = gemma.load_model(torch.device("cpu"), torch.bfloat16)
    params = TrainParams(
        rank=16,
        alpha=32,
        dropout=0.05,
        learning_rate=3e-4,
        epochs=1,
        batch_size=4,
        max_length=512,
        patience=1,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = LoraTrainer(
        model, params, pad_id=0, work_dir=tmp_path, fingerprint="x", checkpoint_every=10
    )
    folder = trainer.save_adapter(tmp_path / "adapter", gemma.model_id)
    config = json.loads((folder / adapters.CONFIG_FILE).read_text())
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert config["base_model_name_or_path"] == EMBEDDED_MODEL_ID
    problems = adapters.lint(
        folder,
        max_rank=16,
        trained_on_sha256=gemma.weights_sha256,
        base_sha256=gemma.weights_sha256,
    )
    assert problems == []
