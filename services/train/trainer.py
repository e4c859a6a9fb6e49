"""The LoRA fine-tuning loop: answer-only loss, logits only where a label exists, resumable.

Two choices make it fast on a small model with a large vocabulary (Gemma: 262,144 tokens):
batches group examples of similar length, so little compute goes to padding; and the LM head,
which costs more than the whole transformer body, runs only on the hidden states that predict
an answer token instead of on every position.

Every `checkpoint_every` steps and at each epoch end the LoRA weights, the optimizer and the
position in the data go to `work_dir/checkpoint` (written aside, then renamed into place), so a
training that dies resumes from its last checkpoint with the same batches still ahead of it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.helpers import disable_input_dtype_casting
from safetensors.torch import load_file, save_file

from services.train.data import Encoded, length_grouped_batches
from services.train.request import TrainParams

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

CHECKPOINT = "checkpoint"
BEST = "best"
WEIGHTS = "adapter.safetensors"
# Steps timed before a time budget sets the run's length (the first one also warms up caches).
BUDGET_PROBE_STEPS = 5


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids, and which hidden states predict which answer token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor  # flat indices into (batch * width) of the predicting states
    targets: torch.Tensor
    tokens: int  # real (not padding) tokens

    @classmethod
    def collate(cls, examples: Sequence[Encoded], pad_id: int, device: torch.device) -> Batch:
        width = max(len(e) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        positions: list[int] = []
        targets: list[int] = []
        for row, example in enumerate(examples):
            ids[row, : len(example)] = torch.tensor(example.input_ids)
            mask[row, : len(example)] = 1
            # The state at position p predicts the token at p + 1.
            offset = row * width
            positions.extend(range(offset + example.prompt_length - 1, offset + len(example) - 1))
            targets.extend(example.input_ids[example.prompt_length :])
        return cls(
            ids.to(device),
            mask.to(device),
            torch.tensor(positions, dtype=torch.long, device=device),
            torch.tensor(targets, dtype=torch.long, device=device),
            int(mask.sum()),
        )


def answer_loss(causal_lm: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy of the answer tokens, with the LM head applied only where needed."""
    hidden = causal_lm.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state
    selected = hidden.flatten(0, 1).index_select(0, batch.positions)
    head = causal_lm.get_output_embeddings()
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return _HeadCrossEntropy.apply(selected, head.weight, head.bias, batch.targets, cap)


class _HeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `lm_head(hidden)` that never holds all the logits at once.

    The (frozen) head runs over chunks of positions; each chunk's gradient with respect to its
    hidden states is computed at once, so neither the float32 logits nor a separate softmax
    backward pass over `positions x vocabulary` values is kept for the backward pass.
    """

    CHUNK = 512

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        cap: float | None,
    ) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, hidden.shape[0], _HeadCrossEntropy.CHUNK):
            rows = slice(start, start + _HeadCrossEntropy.CHUNK)
            logits = F.linear(hidden[rows], weight, bias).float()
            if cap:
                squashed = torch.tanh(logits / cap)
                logits = squashed * cap
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, targets[rows, None]).squeeze(1)
            total += (lse - picked).sum()
            if grad is not None:
                # d loss / d logits = softmax - one-hot, through tanh when capped.
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(probs.shape[0], device=probs.device), targets[rows]] -= 1
                if cap:
                    probs.mul_(1 - squashed.square_())
                grad[rows] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None, None, None


@dataclass
class TrainProgress:
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    tokens_per_s: float
    elapsed_s: float


@dataclass
class TrainState:
    """Where a training stands; saved with every checkpoint."""

    fingerprint: str
    epoch: int = 0
    batches_done: int = 0  # within `epoch`
    step: int = 0
    train_tokens: int = 0
    step_seconds: float = 0.0
    losses: list[list[float]] = field(default_factory=list)  # [step, loss]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    # Set once, after the first steps, when a time budget is given: the steps that fit in it.
    planned_steps: int | None = None
    stopped_by_budget: bool = False
    finished: bool = False
    resumed_at_step: int | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.step_seconds if self.step_seconds else 0.0


ProgressCallback = Callable[[TrainProgress], None]


class LoraTrainer:
    """Wraps a base causal LM in LoRA adapters and fits them on encoded examples."""

    def __init__(
        self,
        base_model: PreTrainedModel,
        params: TrainParams,
        *,
        pad_id: int,
        work_dir: Path,
        fingerprint: str,
        checkpoint_every: int,
    ) -> None:
        self.params = params
        self.pad_id = pad_id
        self.work_dir = work_dir
        self.fingerprint = fingerprint
        self.checkpoint_every = checkpoint_every
        self.device = base_model.device
        self.compute_dtype = base_model.dtype
        if params.gradient_checkpointing:
            base_model.gradient_checkpointing_enable({"use_reentrant": False})
        torch.manual_seed(params.seed)
        config = LoraConfig(
            r=params.rank,
            lora_alpha=params.alpha,
            lora_dropout=params.dropout,
            target_modules="all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.model: PeftModel = get_peft_model(base_model, config)
        self.causal_lm = self.model.get_base_model()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=0.0)

    # -- training --------------------------------------------------------------------------------

    def fit(
        self,
        train: Sequence[Encoded],
        val: Sequence[Encoded],
        on_progress: ProgressCallback | None = None,
    ) -> TrainState:
        """Train for up to `epochs`, stop early on validation loss, keep the best weights."""
        params = self.params
        per_epoch = math.ceil(len(train) / params.batch_size)
        schedule = _WarmupThenDecay(per_epoch * params.epochs, params.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        state = self._resume(scheduler) or TrainState(self.fingerprint)
        if state.planned_steps is not None:
            schedule.total_steps = state.planned_steps
        lengths = [len(e) for e in train]
        self.model.train()
        while not state.finished and state.epoch < params.epochs:
            batches = length_grouped_batches(lengths, params.batch_size, params.seed + state.epoch)
            for indices in batches[state.batches_done :]:
                if state.step >= schedule.total_steps:
                    break
                started = time.perf_counter()
                batch = Batch.collate([train[i] for i in indices], self.pad_id, self.device)
                with self._precision():
                    loss = answer_loss(self.causal_lm, batch) / batch.targets.numel()
                loss.backward()
                self.optimizer.step()
                scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.step_seconds += time.perf_counter() - started
                state.train_tokens += batch.tokens
                state.step += 1
                state.batches_done += 1
                value = loss.item()
                state.losses.append([state.step, round(value, 5)])
                if params.max_minutes and state.planned_steps is None:
                    self._plan_to_budget(state, schedule, params.max_minutes * 60)
                if on_progress:
                    on_progress(
                        TrainProgress(
                            epoch=state.epoch + 1,
                            epochs=params.epochs,
                            step=state.step,
                            total_steps=schedule.total_steps,
                            loss=value,
                            tokens_per_s=state.tokens_per_s,
                            elapsed_s=state.step_seconds,
                        )
                    )
                if state.step % self.checkpoint_every == 0:
                    self._checkpoint(state, scheduler)
            self._end_epoch(state, val)
            if state.step >= schedule.total_steps:
                state.finished = True
            self._checkpoint(state, scheduler)
        if (self.work_dir / BEST / WEIGHTS).is_file():
            set_peft_model_state_dict(self.model, load_file(self.work_dir / BEST / WEIGHTS))
        self.model.eval()
        return state

    def _plan_to_budget(
        self, state: TrainState, schedule: _WarmupThenDecay, budget_s: float
    ) -> None:
        """Once the first steps are timed, cut the run to the steps that fit in the budget.

        The schedule's end moves with it, so the learning rate still decays to zero on the last
        step instead of the run stopping at a high rate halfway down its planned decay.
        """
        if state.step < min(BUDGET_PROBE_STEPS, schedule.total_steps):
            return
        fits = math.floor(budget_s / (state.step_seconds / state.step))
        state.planned_steps = min(schedule.total_steps, max(state.step, fits))
        state.stopped_by_budget = state.planned_steps < schedule.total_steps
        schedule.total_steps = state.planned_steps

    def _end_epoch(self, state: TrainState, val: Sequence[Encoded]) -> None:
        epoch_losses = [loss for _, loss in state.losses[len(state.losses) - state.batches_done :]]
        val_loss = self.mean_loss(val) if val else None
        state.epochs.append(
            {
                "epoch": state.epoch + 1,
                "step": state.step,
                "train_loss": sum(epoch_losses) / max(len(epoch_losses), 1),
                "val_loss": val_loss,
            }
        )
        state.epoch += 1
        state.batches_done = 0
        if val_loss is None or state.best_val_loss is None or val_loss < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
            self._save_weights(self.work_dir / BEST)
        else:
            state.bad_epochs += 1
            if self.params.patience and state.bad_epochs >= self.params.patience:
                state.stopped_early = state.finished = True
        if state.epoch >= self.params.epochs:
            state.finished = True

    @torch.inference_mode()
    def mean_loss(self, examples: Sequence[Encoded]) -> float:
        """Mean cross-entropy per answer token over `examples`."""
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
        size = self.params.batch_size
        for start in range(0, len(order), size):
            batch = Batch.collate(
                [examples[i] for i in order[start : start + size]], self.pad_id, self.device
            )
            with self._precision():
                total += answer_loss(self.causal_lm, batch).item()
            count += batch.targets.numel()
        self.model.train(was_training)
        return total / max(count, 1)

    def _precision(self) -> AbstractContextManager[object]:
        """Run the LoRA layers in the base model's half precision, as the base layers run.

        peft would cast their input to float32 (the adapter weights' type, kept so AdamW's
        small updates are not rounded away) and the output back: two copies per layer and
        float32 matmuls. Autocast computes in half precision from the float32 weights instead.
        """
        if self.compute_dtype == torch.float32:
            return nullcontext()
        stack = ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=self.compute_dtype))
        stack.enter_context(disable_input_dtype_casting(self.model))
        return stack

    # -- persistence -----------------------------------------------------------------------------

    def save_adapter(self, folder: Path, base_model_id: str) -> Path:
        """The adapter in peft's format (`adapter_model.safetensors`, `adapter_config.json`)."""
        self.model.peft_config["default"].base_model_name_or_path = base_model_id
        self.model.save_pretrained(folder, save_embedding_layers=False)
        return folder

    def _save_weights(self, folder: Path) -> None:
        scratch = _scratch_for(folder)
        self._write_weights(scratch / WEIGHTS)
        _swap_into_place(scratch, folder)

    def _write_weights(self, path: Path) -> None:
        state = get_peft_model_state_dict(self.model)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, path)

    def _checkpoint(
        self, state: TrainState, scheduler: torch.optim.lr_scheduler.LRScheduler
    ) -> None:
        folder = self.work_dir / CHECKPOINT
        scratch = _scratch_for(folder)
        self._write_weights(scratch / WEIGHTS)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
            },
            scratch / "optimizer.pt",
        )
        (scratch / "state.json").write_text(json.dumps(asdict(state)), encoding="utf-8")
        _swap_into_place(scratch, folder)

    def _resume(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> TrainState | None:
        folder = _latest(self.work_dir / CHECKPOINT)
        if folder is None:
            return None
        state = TrainState(**json.loads((folder / "state.json").read_text(encoding="utf-8")))
        if state.fingerprint != self.fingerprint:
            return None
        set_peft_model_state_dict(self.model, load_file(folder / WEIGHTS, device=str(self.device)))
        saved = torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"].cpu())
        state.resumed_at_step = state.step
        return state


class _WarmupThenDecay:
    """LambdaLR's factor: linear warm-up over `warmup_ratio` of the steps, then linear decay to 0.

    `total_steps` may be lowered while training (a time budget); the factor follows it.
    """

    def __init__(self, total_steps: int, warmup_ratio: float) -> None:
        self.total_steps = total_steps
        self.warmup_ratio = warmup_ratio

    def __call__(self, step: int) -> float:
        warmup = max(1, round(self.total_steps * self.warmup_ratio))
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))


def _scratch_for(folder: Path) -> Path:
    scratch = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return scratch


def _swap_into_place(scratch: Path, folder: Path) -> None:
    """Replace `folder` by `scratch`; a crash in between leaves `folder.old` to fall back on."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    scratch.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _latest(folder: Path) -> Path | None:
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").is_file():
            return candidate
    return None
