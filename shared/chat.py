"""The exact token sequence a student model sees: one rendering for training, eval and serving.

A prompt is rendered by the model's own chat template with thinking disabled (Qwen3 would
otherwise open a `<think>` block) and tokenized without adding special tokens, because the
template already writes any `<bos>` the model needs. The answer the model learns, and must emit
when serving, is the assistant text followed by the template's end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = Sequence[dict[str, str]]

_SENTINEL = "tiqu-answer-sentinel-7f3a"


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The prompt text for `messages` up to the assistant's turn (generation prompt included)."""
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of rendered text; special tokens come from the template, never added again."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> list[int]:
    """Token ids of the rendered prompt, as training and serving feed them to the model."""
    return encode_text(tokenizer, render_prompt(tokenizer, messages))


def turn_end_token(tokenizer: PreTrainedTokenizerBase) -> str:
    """The special token the chat template closes an assistant turn with (`<end_of_turn>`,
    `<|im_end|>`): the stop token of generation and the last token the student learns.
    """
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}],
        tokenize=False,
        enable_thinking=False,
    )
    _, found, after = rendered.partition(_SENTINEL)
    if not found:
        raise ValueError("the chat template drops the assistant's content")
    special = sorted(tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()), key=len)
    for token in reversed(special):
        if token and after.startswith(token):
            return token
    raise ValueError("the chat template does not close an assistant turn with a special token")
