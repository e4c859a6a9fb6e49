"""Training benchmark: tiqu's LoRA trainer vs the seeds' `Trainer` + peft recipe, same run.

    .venv/bin/python bench/train.py [--steps 24] [--batch-size 4] [--max-length 512] [--tiny]

All three train the same LoRA (tiqu's default rank, alpha and dropout, every linear layer) of
the same base model (default: the embedded Gemma-3-270m; `--tiny`: a tiny Qwen3 built on the
spot), loaded the same way, for one pass over the same `steps * batch-size` sample complaints
rendered by tiqu's chat template with the loss on the answer only, one after the other in this
process:

- tiqu: `LoraTrainer.fit`: batches of similar lengths padded to their longest, the LM head
  applied only where an answer token is predicted;
- baseline, as the seeds write it: `transformers.Trainer` with the model's own loss (logits over
  the whole vocabulary at every position) and `DataCollatorForSeq2Seq(padding="max_length")`,
  every sequence padded to `--max-length` (default 512: the power of two above the longest
  example, not the seeds' 1024, which would flatter tiqu further);
- the same baseline with `padding=True` (padded to each random batch's longest), for a
  stricter comparison.

Prints training tokens/s (real prompt + answer tokens, padding excluded, per second of
optimizer steps) of each and tiqu's ratio to both (goal: >= 2x over the seeds' baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peft import LoraConfig, get_peft_model
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from services.train.data import Encoded, encode_examples, parse_jsonl
from services.train.request import TrainParams
from services.train.trainer import LoraTrainer
from shared.chat import turn_end_token
from shared.models import load_causal_lm, load_tokenizer, pick_dtype, resolve_base_model
from shared.settings import Settings
from tests.train.train_support import build_tiny_model, sample_records


def run_tiqu(
    model: PreTrainedModel, data: list[Encoded], pad_id: int, params: TrainParams
) -> float:
    with tempfile.TemporaryDirectory() as work:
        trainer = LoraTrainer(
            model,
            params,
            pad_id=pad_id,
            work_dir=Path(work),
            fingerprint="bench",
            checkpoint_every=10**9,
        )
        state = trainer.fit(data, [])
    return state.tokens_per_s


class _StepClock(TrainerCallback):
    """Seconds from the first step's start to the last step's end (data loading excluded)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.ended = time.perf_counter()


def run_baseline(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: list[Encoded],
    params: TrainParams,
    padding: str,
    max_length: int,
) -> float:
    config = LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    rows = [
        {
            "input_ids": list(e.input_ids),
            "attention_mask": [1] * len(e),
            "labels": [-100] * e.prompt_length + list(e.input_ids[e.prompt_length :]),
        }
        for e in data
    ]
    clock = _StepClock()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=params.batch_size,
            max_steps=math.ceil(len(rows) / params.batch_size),
            learning_rate=params.learning_rate,
            lr_scheduler_type="linear",
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
            seed=0,
        )
        collator = DataCollatorForSeq2Seq(
            tokenizer, padding=padding, max_length=max_length, label_pad_token_id=-100
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[clock]
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    assert clock.started is not None
    return sum(len(e) for e in data) / (clock.ended - clock.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps of each trainer")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512, help="baseline padding length")
    parser.add_argument("--tiny", action="store_true", help="a tiny Qwen3 instead of Gemma")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = TrainParams.from_settings(
        Settings(), epochs=1, batch_size=args.batch_size, max_length=args.max_length, patience=0
    )

    records = sample_records(args.steps * args.batch_size * 2, seed=99)
    examples = parse_jsonl("\n".join(json.dumps(r) for r in records), "bench")
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            corpus = [m["content"] for r in records for m in r["messages"]]
            folder = build_tiny_model(Path(scratch) / "tiny", corpus)
            model_id = "tiny Qwen3 (hidden 128, 2 layers)"
        else:
            folder = resolve_base_model(Settings(base_model="gemma-3-270m")).path
            model_id = "gemma-3-270m"
        tokenizer = load_tokenizer(folder)
        encoded, _ = encode_examples(
            tokenizer, examples, turn_end_token(tokenizer), args.max_length
        )
        data = encoded[: args.steps * args.batch_size]
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = pick_dtype(device)
        answer_share = sum(len(e) - e.prompt_length for e in data) / sum(len(e) for e in data)
        print(
            f"{model_id} on {device} ({str(dtype).removeprefix('torch.')}, "
            f"{torch.get_num_threads()} threads), LoRA r={params.rank} alpha={params.alpha} "
            f"dropout={params.dropout}: {len(data)} examples in {args.steps} steps of "
            f"{args.batch_size}, mean {sum(len(e) for e in data) / len(data):.0f} tokens "
            f"(longest {max(len(e) for e in data)}, {answer_share:.0%} answer)",
            flush=True,
        )
        ours = run_tiqu(load_causal_lm(folder, device, dtype), data, tokenizer.pad_token_id, params)
        print(f"tiqu                              {ours:8.1f} tokens/s", flush=True)
        for padding, label in (
            ("max_length", f"baseline, padded to {args.max_length}"),
            ("longest", "baseline, padded to batch longest"),
        ):
            theirs = run_baseline(
                load_causal_lm(folder, device, dtype),
                tokenizer,
                data,
                params,
                padding,
                args.max_length,
            )
            print(
                f"{label:<34}{theirs:8.1f} tokens/s   tiqu is {ours / theirs:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
