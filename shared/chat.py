"""The exact token sequence a student model sees: one rendering for training, eval and serving.

A prompt is rendered by the model's own chat template with thinking disabled (Qwen3 would
otherwise open a `<think>` block) and tokenized without adding special tokens, because the
template already writes any `<bos>` the model needs. The answer the model learns, and must emit
when serving, is the assistant text followed by the template's end-of-turn token.

A tokenizer matches its added tokens (`<end_of_turn>`, `<|im_start|>`, `<bos>`, `<think>`...)
anywhere in the text it is given, so a complaint that types one would close the user turn and
open another. Message contents are escaped before rendering: a zero-width space after the first
character of each such token leaves the characters (the model still reads them) and only the
template's control tokens in the ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from shared.prompts import student_target

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from shared.schema import ExtractionSchema

Messages = Sequence[dict[str, str]]

_SENTINEL = "tiqu-answer-sentinel-7f3a"
# Breaks a typed control token into plain characters; the cleaning removes it from any text a
# client sends, so it never stands for anything else.
_TOKEN_BREAK = "\u200b"


@dataclass(frozen=True)
class _ControlTokens:
    """The added tokens of one tokenizer, indexed for a scan: by first character, their lengths."""

    tokens: frozenset[str]
    lengths: dict[str, tuple[int, ...]]


@lru_cache(maxsize=8)
def _control_tokens(tokenizer: PreTrainedTokenizerBase) -> _ControlTokens:
    # Whitespace runs (Gemma adds "\n\n" and longer) are ordinary text and stay as they are.
    tokens = frozenset(t for t in tokenizer.get_added_vocab() if t.strip())
    lengths: dict[str, set[int]] = {}
    for token in tokens:
        lengths.setdefault(token[0], set()).add(len(token))
    return _ControlTokens(tokens, {c: tuple(sorted(n)) for c, n in lengths.items()})


def escape_control_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """`text` with every added token of `tokenizer` it contains broken after its first character.

    One pass is enough: the break is in no token, so no new occurrence can form across it.
    """
    control = _control_tokens(tokenizer)
    pieces = []
    for at, char in enumerate(text):
        pieces.append(char)
        if any(text[at : at + n] in control.tokens for n in control.lengths.get(char, ())):
            pieces.append(_TOKEN_BREAK)
    return "".join(pieces)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The prompt text for `messages` up to the assistant's turn (generation prompt included);
    control tokens typed into the messages are escaped."""
    escaped = [
        {**message, "content": escape_control_tokens(tokenizer, message["content"])}
        for message in messages
    ]
    return tokenizer.apply_chat_template(
        escaped, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of rendered text; special tokens come from the template, never added again."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> list[int]:
    """Token ids of the rendered prompt, as training and serving feed them to the model."""
    return encode_text(tokenizer, render_prompt(tokenizer, messages))


def answer_budget(tokenizer: PreTrainedTokenizerBase, text: str, schema: ExtractionSchema) -> int:
    """The tokens an answer about `text` may take: the text's own plus an all-null answer's.
    Answers copy from the text, so only a model that rambles needs more."""
    null_answer = encode_text(tokenizer, student_target({}, schema))
    return len(encode_text(tokenizer, text)) + len(null_answer)


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
