"""Training interrupted (scenario 15): the train worker is killed mid-training after a checkpoint,
restarted, and resumes from that checkpoint instead of step 0; the adapter it registers loads in
peft and in the vLLM engine, which give the same greedy answers on a fixed set of complaints, up
to float ties (vLLM computes in bf16 on CPU; see `compare_with_peft`).

The base model is the engine's tiny model, so the adapter is served by the session's real vLLM.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import adapters
from shared.prompts import student_messages
from shared.schema import get_schema
from shared.store import Store
from tests.engine_fixtures import Engine
from tests.support import wait_until
from tests.train.train_support import split_records, write_distill_run

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]

DATASET_ID = "ds-00000000000000bb"
RUN_ID = "dr-00000000000000bb-000000000001"
EPOCHS = 6
CHECKPOINT_EVERY = 2
MAX_NEW_TOKENS = 96
PROBES = 5
# Logprob differences below this are float rounding: vLLM serves the float32 checkpoint in bf16
# on CPU, whose logits carry about three significant digits (0.03-0.09 nats seen here). A LoRA
# applied wrongly (or not at all) moves them by several nats.
FLOAT_TIE = 0.2


def train_env(base_model: Path, work_dir: Path) -> dict[str, str]:
    return {
        "TIQU_BASE_MODEL": str(base_model),
        "TIQU_MODEL_CACHE": str(work_dir / "models"),
        "TIQU_TRAIN_WORK_DIR": str(work_dir),
        "TIQU_TRAIN_EPOCHS": str(EPOCHS),
        "TIQU_TRAIN_BATCH_SIZE": "8",
        "TIQU_TRAIN_LEARNING_RATE": "0.02",
        "TIQU_TRAIN_MAX_LENGTH": "512",
        "TIQU_TRAIN_PATIENCE": "0",
        "TIQU_TRAIN_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
        "TIQU_TRAIN_THREADS": "1",
        "TIQU_EVAL_BATCH_SIZE": "8",
        "TIQU_EVAL_MAX_NEW_TOKENS": "24",
    }


def checkpoint_step(work_dir: Path) -> int:
    """The step of the checkpoint a resumed training would start from (0: none yet)."""
    for run in work_dir.glob("tr-*"):
        # Where the trainer looks: the checkpoint, or the previous one while it is replaced.
        for name in ("checkpoint", "checkpoint.old"):
            state = run / name / "state.json"
            try:
                return int(json.loads(state.read_text(encoding="utf-8"))["step"])
            except (OSError, ValueError, KeyError):
                continue  # absent, or renamed meanwhile
    return 0


def vllm_answers(engine: Engine, name: str, adapter: Path, prompts: list[list[int]], eos: int):
    """Greedy answers of the adapter served by vLLM: token ids and their logprobs."""
    loaded = httpx.post(
        f"{engine.url}/v1/load_lora_adapter",
        json={"lora_name": name, "lora_path": str(adapter)},
        headers=engine.headers,
        timeout=120,
    )
    assert loaded.status_code == 200, loaded.text
    try:
        answers = []
        for ids in prompts:
            response = httpx.post(
                f"{engine.url}/v1/completions",
                json={
                    "model": name,
                    "prompt": ids,
                    "max_tokens": MAX_NEW_TOKENS,
                    "temperature": 0.0,
                    "stop_token_ids": [eos],
                    "logprobs": 1,
                    "return_token_ids": True,
                    "skip_special_tokens": False,
                },
                headers=engine.headers,
                timeout=120,
            )
            assert response.status_code == 200, response.text
            choice = response.json()["choices"][0]
            answers.append((choice["token_ids"], choice["logprobs"]["token_logprobs"]))
        return answers
    finally:
        httpx.post(
            f"{engine.url}/v1/unload_lora_adapter",
            json={"lora_name": name},
            headers=engine.headers,
            timeout=60,
        )


@dataclass
class Parity:
    identical: int  # probes whose free-running greedy answers are the same token for token
    tokens: int  # answer tokens compared
    worst_gap: float  # largest (peft's best logprob - logprob of vLLM's token), nats
    worst_logprob_diff: float  # largest |peft - vLLM| logprob of the same token, nats
    adapter_effect: float  # smallest mean |adapter - base| logprob over a probe, nats


def compare_with_peft(
    base_model: Path, adapter: Path, prompts: list[list[int]], served: list[Any], eos: int
) -> Parity:
    """Check vLLM's answers against peft on the same weights, in vLLM's precision (bf16).

    Each vLLM answer is fed to peft (teacher forcing): at every position vLLM's token must be
    peft's greedy choice, up to a float tie, and both must give it the same logprob; and with
    the adapter disabled, those logprobs must move, or the engine could be ignoring the LoRA.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter).eval()
    parity = Parity(0, 0, 0.0, 0.0, float("inf"))

    def logprobs(ids: list[int], tokens: list[int]) -> torch.Tensor:
        logits = model(torch.tensor([ids + tokens])).logits[0].float()
        return torch.log_softmax(logits[len(ids) - 1 : len(ids) - 1 + len(tokens)], dim=-1)

    with torch.inference_mode():
        for ids, (tokens, served_logprobs) in zip(prompts, served, strict=True):
            assert tokens and len(tokens) == len(served_logprobs)
            picked = torch.tensor(tokens)
            rows = torch.arange(len(tokens))
            table = logprobs(ids, tokens)
            chosen = table[rows, picked]
            with model.disable_adapter():
                base = logprobs(ids, tokens)[rows, picked]
            free = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos,
            )[0, len(ids) :].tolist()
            parity.identical += free == tokens
            parity.tokens += len(tokens)
            gap = float((table.max(dim=-1).values - chosen).max())
            diff = float((chosen - torch.tensor(served_logprobs)).abs().max())
            parity.worst_gap = max(parity.worst_gap, gap)
            parity.worst_logprob_diff = max(parity.worst_logprob_diff, diff)
            parity.adapter_effect = min(parity.adapter_effect, float((chosen - base).abs().mean()))
    return parity


def test_a_killed_training_resumes_from_its_checkpoint_and_serves_like_peft(
    request: pytest.FixtureRequest,
    serve_model: Path,
    serve_records: list[dict[str, Any]],
    start_worker,
    start_api,
    tmp_path: Path,
    record,
) -> None:
    store = Store.from_settings()
    splits = split_records(serve_records[:78], val=10, test=8)
    write_distill_run(store, DATASET_ID, RUN_ID, splits)
    work_dir = tmp_path / "work"
    env = train_env(serve_model, work_dir)
    worker = start_worker("train", **env)
    api = start_api("train", **env)
    created = httpx.post(f"{api.url}/v1/train-runs", json={"run_id": RUN_ID, "seed": 3}, timeout=60)
    assert created.status_code == 202, created.text
    train_run_id = created.json()["train_run_id"]

    # Killed past its second checkpoint, well before the end (48 steps).
    wait_until(lambda: checkpoint_step(work_dir) >= 2 * CHECKPOINT_EVERY, 240, "two checkpoints")
    worker.stop(signal.SIGKILL)
    killed_at_checkpoint = checkpoint_step(work_dir)
    status = httpx.get(f"{api.url}/v1/train-runs/{train_run_id}", timeout=10).json()
    assert status["state"] == "running"
    assert not adapters.versions(store, "extractor")

    restarted = time.monotonic()
    start_worker("train", **env)
    body: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal body
        body = httpx.get(f"{api.url}/v1/train-runs/{train_run_id}", timeout=10).json()
        return body["state"] in ("ready", "failed")

    wait_until(finished, 300, "the training after the restart")
    resumed_s = time.monotonic() - restarted
    assert body["state"] == "ready", body
    manifest = adapters.resolve(store, "extractor")
    assert adapters.versions(store, "extractor") == ["v1"]
    training = manifest["training"]
    total = training["steps"]
    assert total == EPOCHS * math.ceil(len(splits["train"]) / 8)
    resumed_at = training["resumed_at_step"]
    assert resumed_at is not None and resumed_at >= killed_at_checkpoint > 0
    assert [step for step, _ in training["losses"]] == list(range(1, total + 1))

    # The registered adapter in peft and in vLLM: the same greedy answers. The engine (on the
    # same tiny model) is only started now, so that it does not slow the training down.
    engine: Engine = request.getfixturevalue("engine")
    assert engine.base_model == serve_model
    from shared.chat import encode_prompt, turn_end_token
    from shared.models import load_tokenizer

    tokenizer = load_tokenizer(engine.base_model)
    eos = tokenizer.convert_tokens_to_ids(turn_end_token(tokenizer))
    schema = get_schema()
    texts = [r["messages"][1]["content"] for r in serve_records[:3] + serve_records[70:72]]
    prompts = [encode_prompt(tokenizer, student_messages(text, schema)) for text in texts]
    assert len(prompts) == PROBES
    folder = adapters.download(store, "extractor", manifest["version"], tmp_path / "adapter")
    served = vllm_answers(engine, f"probe-{train_run_id}", folder, prompts, eos)
    parity = compare_with_peft(engine.base_model, folder, prompts, served, eos)
    assert parity.worst_gap <= FLOAT_TIE, parity
    assert parity.worst_logprob_diff <= FLOAT_TIE, parity
    assert parity.adapter_effect >= 10 * FLOAT_TIE, parity  # the engine applies the LoRA
    record(
        15,
        f"train worker SIGKILLed mid-training ({EPOCHS} epochs, {total} steps, checkpoint every "
        f"{CHECKPOINT_EVERY}) past its second checkpoint, then restarted; the registered adapter "
        f"loaded in peft and in vLLM, greedy answers to {PROBES} complaints compared",
        f"resumed at step {resumed_at} (checkpoint at the kill: {killed_at_checkpoint}), "
        f"{total - resumed_at} of {total} steps run after the restart, ready {resumed_s:.0f} s "
        f"after it; one version registered; vLLM (bf16) vs peft (bf16) on {PROBES} greedy "
        f"answers ({parity.tokens} tokens, up to {MAX_NEW_TOKENS} each): {parity.identical}/"
        f"{PROBES} identical token for token, every vLLM token peft's greedy choice within "
        f"{parity.worst_gap:.3f} nats (a float tie) and its logprob within "
        f"{parity.worst_logprob_diff:.3f} nats; the LoRA moves those logprobs by >= "
        f"{parity.adapter_effect:.1f} nats",
    )
