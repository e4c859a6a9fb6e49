"""The training loop: answer-only loss, loss going down, a time budget, resuming after a crash."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from services.train import trainer as trainer_module
from services.train.data import Encoded, encode_examples, parse_jsonl
from services.train.request import TrainParams
from services.train.trainer import (
    Batch,
    LoraTrainer,
    TrainProgress,
    TrainState,
    _HeadCrossEntropy,
    answer_loss,
)
from shared.chat import turn_end_token
from shared.models import load_causal_lm, load_tokenizer

PARAMS = TrainParams(
    rank=8,
    alpha=16,
    dropout=0.05,
    learning_rate=0.02,
    epochs=2,
    batch_size=8,
    max_length=512,
    patience=1,
    gradient_checkpointing=False,
    seed=0,
)


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """A tiny model gains nothing from more threads, and loses a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoded(tiny_model: Path, records: list[dict[str, Any]]) -> list[Encoded]:
    tokenizer = load_tokenizer(tiny_model)
    examples = parse_jsonl("\n".join(json.dumps(r) for r in records[:40]), "run")
    return encode_examples(tokenizer, examples, turn_end_token(tokenizer), 512)[0]


def make_trainer(tiny_model: Path, work_dir: Path, **changes: Any) -> LoraTrainer:
    model = load_causal_lm(tiny_model, torch.device("cpu"), torch.float32)
    return LoraTrainer(
        model,
        PARAMS.model_copy(update=changes),
        pad_id=load_tokenizer(tiny_model).pad_token_id,
        work_dir=work_dir,
        fingerprint="run-1",
        checkpoint_every=2,
    )


def test_answer_loss_and_gradients_equal_the_full_logits_ones(
    tiny_model: Path, encoded: list[Encoded]
) -> None:
    trainer = make_trainer(tiny_model, Path("unused"), dropout=0.0)
    batch = Batch.collate(encoded[:4], pad_id=0, device=torch.device("cpu"))
    labels = torch.full_like(batch.input_ids, -100)
    labels.view(-1)[batch.positions + 1] = batch.targets
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]

    full = trainer.model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels
    ).loss
    full_grads = torch.autograd.grad(full, trainable)
    ours = answer_loss(trainer.causal_lm, batch) / batch.targets.numel()
    our_grads = torch.autograd.grad(ours, trainable)

    assert ours.item() == pytest.approx(full.item(), rel=1e-5)
    for mine, theirs in zip(our_grads, full_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
    assert batch.tokens == sum(len(e) for e in encoded[:4])


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, encoded: list[Encoded]
) -> TrainState:
    """An uninterrupted training: 32 examples, 2 epochs of 4 steps."""
    return make_trainer(tiny_model, tmp_path_factory.mktemp("reference")).fit(
        encoded[:32], encoded[32:]
    )


def test_loss_goes_down_and_the_best_epoch_is_kept(reference: TrainState) -> None:
    losses = [loss for _, loss in reference.losses]
    assert reference.step == len(losses) == 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    assert [e["epoch"] for e in reference.epochs] == [1, 2]
    assert reference.epochs[-1]["val_loss"] < reference.epochs[0]["val_loss"]
    assert reference.best_epoch == 2 and reference.finished and reference.tokens_per_s > 0


def test_a_crashed_training_resumes_where_its_checkpoint_left_it(
    tmp_path: Path, tiny_model: Path, encoded: list[Encoded], reference: TrainState
) -> None:
    def crash_at_step_5(progress: TrainProgress) -> None:
        if progress.step == 5:
            raise Crash

    with pytest.raises(Crash):
        make_trainer(tiny_model, tmp_path).fit(encoded[:32], encoded[32:], crash_at_step_5)
    resumed = make_trainer(tiny_model, tmp_path).fit(encoded[:32], encoded[32:])
    assert resumed.resumed_at_step == 4  # the checkpoint of step 4; step 5 ran again
    assert [s for s, _ in resumed.losses] == list(range(1, 9))
    assert [loss for _, loss in resumed.losses] == pytest.approx(
        [loss for _, loss in reference.losses], abs=1e-3
    )
    assert resumed.epochs[-1]["val_loss"] == pytest.approx(reference.epochs[-1]["val_loss"])


def test_a_time_budget_cuts_the_run_and_its_learning_rate_decay_to_the_steps_that_fit(
    tmp_path: Path, tiny_model: Path, encoded: list[Encoded], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that makes every step take exactly 1 s: a 7.5 s budget fits 7 of the 8 steps.
    ticks = itertools.count()
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    trainer = make_trainer(tiny_model, tmp_path / "cut", max_minutes=7.5 / 60)
    lrs: list[float] = []
    cut = trainer.fit(
        encoded[:32],
        encoded[32:],
        lambda _: lrs.append(trainer.optimizer.param_groups[0]["lr"]),
    )
    assert cut.step == cut.planned_steps == 7 and cut.stopped_by_budget and cut.finished
    assert [e["epoch"] for e in cut.epochs] == [1, 2]  # the cut epoch still gets its val loss
    assert cut.epochs[-1]["val_loss"] is not None
    # The decay ends on the last step that runs (uncut, step 7 of 8 would leave 1/7 of the peak).
    assert lrs[-1] == 0.0 and lrs[-2] > 0

    roomy = make_trainer(tiny_model, tmp_path / "roomy", max_minutes=60).fit(
        encoded[:32], encoded[32:]
    )
    assert roomy.step == roomy.planned_steps == 8 and not roomy.stopped_by_budget


def test_a_checkpoint_of_other_training_is_ignored(
    tmp_path: Path, tiny_model: Path, encoded: list[Encoded]
) -> None:
    make_trainer(tiny_model, tmp_path).fit(encoded[:16], [])
    other = make_trainer(tiny_model, tmp_path)
    other.fingerprint = "run-2"
    assert other.fit(encoded[:16], []).resumed_at_step is None


def test_gradient_checkpointing_trains_the_same(
    tmp_path: Path, tiny_model: Path, encoded: list[Encoded]
) -> None:
    plain = make_trainer(tiny_model, tmp_path / "plain", dropout=0.0, epochs=1)
    saving = make_trainer(
        tiny_model, tmp_path / "saving", dropout=0.0, epochs=1, gradient_checkpointing=True
    )
    assert saving.causal_lm.is_gradient_checkpointing
    assert not plain.causal_lm.is_gradient_checkpointing
    first = plain.fit(encoded[:16], []).losses
    second = saving.fit(encoded[:16], []).losses
    assert [loss for _, loss in second] == pytest.approx([loss for _, loss in first], abs=1e-4)


@pytest.mark.parametrize("cap", [None, 3.0])
def test_the_chunked_head_loss_matches_autograd(cap: float | None) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(1100, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    targets = torch.randint(0, 50, (1100,))
    logits = hidden @ weight.T
    if cap:
        logits = torch.tanh(logits / cap) * cap
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected, hidden)
    loss = _HeadCrossEntropy.apply(hidden, weight, None, targets, cap)
    (grad,) = torch.autograd.grad(loss * 2, hidden)
    assert loss.item() == pytest.approx(expected.item())
    torch.testing.assert_close(grad, expected_grad * 2, rtol=1e-4, atol=1e-5)
