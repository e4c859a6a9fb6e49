"""Evaluation by generation: greedy, batched answers to labelled examples, scored per field.

The prompt is the one training and serving render (`shared.chat`); generation stops at the
template's end-of-turn token. Each row may generate at most as many tokens as its text plus an
all-null answer: answers copy from the text, so only a model that rambles needs more, and a
base model that never stops costs a bounded time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig

from services.train.data import EvalSet, Example
from services.train.scoring import parse_answer, score
from shared import adapters
from shared.anchors import TargetForm, expand_answer
from shared.chat import answer_budget, encode_prompt
from shared.prompts import student_messages
from shared.schema import ExtractionSchema

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GenerationProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Generation:
    batch_size: int
    max_new_tokens: int
    eos_token_id: int
    pad_token_id: int

    def describe(self) -> dict[str, Any]:
        return {
            "greedy": True,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "eos_token_id": self.eos_token_id,
        }


@torch.inference_mode()
def generate_answers(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    generation: Generation,
    schema: ExtractionSchema,
    on_progress: GenerationProgress | None = None,
) -> list[str]:
    """The model's answer to each example, in order (prompts of similar length batched)."""
    prompts = [encode_prompt(tokenizer, e.messages) for e in examples]
    budgets = [answer_budget(tokenizer, e.text, schema) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(prompts[i]))
    answers = [""] * len(examples)
    device = next(model.parameters()).device
    for start in range(0, len(order), generation.batch_size):
        rows = order[start : start + generation.batch_size]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), generation.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, index in enumerate(rows):
            # Left padding: every prompt ends where generation starts.
            ids[row, width - len(prompts[index]) :] = torch.tensor(prompts[index])
            mask[row, width - len(prompts[index]) :] = 1
        config = GenerationConfig(
            max_new_tokens=min(generation.max_new_tokens, max(budgets[i] for i in rows)),
            do_sample=False,
            eos_token_id=generation.eos_token_id,
            pad_token_id=generation.pad_token_id,
        )
        output = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
        )
        for row, index in enumerate(rows):
            answers[index] = tokenizer.decode(output[row, width:], skip_special_tokens=True)
        if on_progress:
            on_progress(min(start + generation.batch_size, len(order)), len(order))
    return answers


def expanded_answer(answer: str, text: str, schema: ExtractionSchema, form: TargetForm) -> str:
    """An answer in `form` as the fields it stands for (anchors expanded against `text`), so
    every form is scored on the values serving would return."""
    fields = parse_answer(answer)
    if fields is None or form == "copy":
        return answer
    return json.dumps(expand_answer(fields, text, schema, form), ensure_ascii=False)


def score_answers(
    answers: Sequence[str],
    examples: Sequence[Example],
    schema: ExtractionSchema,
    form: TargetForm = "copy",
) -> dict[str, Any]:
    expanded = [
        expanded_answer(answer, example.text, schema, form)
        for answer, example in zip(answers, examples, strict=True)
    ]
    return score(expanded, [e.label for e in examples], schema, ids=[e.id for e in examples])


StageCallback = Callable[[str, int, int], None]


def no_stage(_: str, __: int, ___: int) -> None:
    return None


@dataclass
class Evaluator:
    """A base model with a LoRA adapter, the tokenizer and the decoding settings to score it."""

    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    generation: Generation
    schema: ExtractionSchema
    on_progress: StageCallback = no_stage
    # How the adapter writes free-text fields (`shared.anchors`).
    target_form: TargetForm = "copy"

    def evaluate(self, sets: Sequence[EvalSet], *, include_base: bool = True) -> dict[str, Any]:
        """Scores of the adapter, and of the bare base model with the same prompt, per set."""
        results: dict[str, Any] = {}
        for eval_set in sets:
            entry: dict[str, Any] = {"source": eval_set.source, "rows": len(eval_set.examples)}
            entry["adapter"] = self.scores(eval_set, f"eval {eval_set.name}")
            if include_base:
                with self.model.disable_adapter():
                    entry["base"] = self.scores(eval_set, "eval base", "copy")
            results[eval_set.name] = entry
        return results

    def probe_values(self) -> dict[str, str]:
        """The values the adapter extracts right from the registry's probe complaint: serving
        loads this version only if the engine answers them again."""
        messages = tuple(student_messages(adapters.PROBE_COMPLAINT, self.schema))
        probe = Example("probe", messages, target="", label={})
        [answer] = generate_answers(
            self.model, self.tokenizer, [probe], self.generation, self.schema
        )
        answer = expanded_answer(answer, probe.text, self.schema, self.target_form)
        return adapters.probe_matches(parse_answer(answer) or {}, self.schema)

    def scores_of_other(self, folder: Path, eval_set: EvalSet, form: TargetForm) -> dict[str, Any]:
        """Scores of another adapter (e.g. the promoted one, trained to write `form`) loaded
        beside this one for a while."""
        self.model.load_adapter(folder, adapter_name="other")
        self.model.set_adapter("other")
        try:
            return self.scores(eval_set, "eval current", form)
        finally:
            self.model.set_adapter("default")
            self.model.delete_adapter("other")

    def scores(
        self, eval_set: EvalSet, stage: str, form: TargetForm | None = None
    ) -> dict[str, Any]:
        """Scores of the model as it is now on one set, with the time taken."""
        started = time.perf_counter()
        answers = generate_answers(
            self.model,
            self.tokenizer,
            eval_set.examples,
            self.generation,
            self.schema,
            lambda done, total: self.on_progress(stage, done, total),
        )
        scores = score_answers(answers, eval_set.examples, self.schema, form or self.target_form)
        scores["seconds"] = round(time.perf_counter() - started, 2)
        return scores
