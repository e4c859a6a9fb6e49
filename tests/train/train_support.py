"""Distill runs and tiny models for the train tests, built from the sample generator's truth.

A distill run here is written in exactly the layout and record format the distill service
writes (`datasets/<id>/distill/<run>/{train,val,test}.jsonl` + `manifest.json`), with the
generator's labels standing in for a teacher's answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.cleaning import clean_text
from shared.prompts import student_messages, student_target
from shared.queue import EVENT_CHANNEL, redis_client, subscribe_events
from shared.samples import FIELDS, generate_complaints
from shared.schema import ExtractionSchema, get_schema
from shared.store import Layout, Store
from tests.support import wait_until

TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen3's template, reduced to what tiqu renders: system/user/assistant turns and the empty
# thinking block that `enable_thinking=False` writes.
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' and loop.last -%}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif -%}"
    "{{ message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif -%}{%- endif -%}"
)


def sample_records(
    rows: int, seed: int, schema: ExtractionSchema | None = None
) -> list[dict[str, Any]]:
    """Distill-format records of the generator's original complaints (cleaned text, true label)."""
    schema = schema or get_schema()
    labels = generate_complaints(rows, seed=seed).labels
    records = []
    for row in labels[labels["kind"] == "original"].itertuples(index=False):
        label = {name: getattr(row, name) for name in FIELDS}
        target = student_target(label, schema)
        records.append(
            {
                "messages": [
                    *student_messages(clean_text(row.text), schema),
                    {"role": "assistant", "content": target},
                ],
                "id": row.id,
                "label": label,
                "agreement": None,
                "augmented": False,
                "prompt_version": "samples",
            }
        )
    return records


def write_distill_run(
    store: Store,
    dataset_id: str,
    run_id: str,
    splits: dict[str, Sequence[dict[str, Any]]],
) -> None:
    """Write a distill run's split files, then its manifest, as the distill service does."""
    files = {}
    for split, records in splits.items():
        key = Layout.distill_run(dataset_id, run_id, f"{split}.jsonl")
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        store.write_bytes(key, lines.encode("utf-8"))
        files[split] = key
    manifest = {
        "run_id": run_id,
        "dataset_id": dataset_id,
        "splits": {split: len(records) for split, records in splits.items()},
        "files": files,
    }
    store.write_json(Layout.distill_run(dataset_id, run_id, "manifest.json"), manifest)


def split_records(
    records: Sequence[dict[str, Any]], val: int, test: int
) -> dict[str, list[dict[str, Any]]]:
    """The last `test` records as test, the `val` before them as val, the rest as train."""
    train_end = len(records) - val - test
    return {
        "train": list(records[:train_end]),
        "val": list(records[train_end : train_end + val]),
        "test": list(records[train_end + val :]),
    }


def build_tiny_model(folder: Path, corpus: Sequence[str], *, vocab_size: int = 2048) -> Path:
    """A tiny Qwen3 (hidden 128, 2 layers, head_dim 64) and a byte-level BPE fit to `corpus`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(TINY_SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(TINY_SPECIAL_TOKENS[1:]),
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # Larger random weights than the default 0.02, so LoRA visibly lowers the loss in a few
        # steps (from near-uniform logits it barely moves).
        initializer_range=0.1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    return folder


def listen_for_events(event_type: str, count: int, found: list[dict[str, Any]]) -> threading.Thread:
    """Collect `count` events of `event_type` in a thread; returns once it is subscribed."""

    def listen() -> None:
        for event in subscribe_events(timeout=240):
            if event["type"] == event_type:
                found.append(event)
                if len(found) == count:
                    return

    def subscribers() -> int:
        return dict(redis_client().pubsub_numsub(EVENT_CHANNEL)).get(EVENT_CHANNEL.encode(), 0)

    # Pub/sub ignores Redis database numbers: other processes may listen on the channel too.
    before = subscribers()
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    wait_until(lambda: subscribers() > before, 10, "event subscription")
    return thread
