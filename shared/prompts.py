"""What the student model sees and answers: one rendering for distillation, training and serving.

The student is tiny and its context short (~512 tokens), so the instruction is one line naming the
fields; the training examples, not the prompt, teach it what each field means. Both functions are
deterministic: the same text and schema always give the same messages and target.
"""

from __future__ import annotations

import json
from typing import Any

from shared.anchors import TargetForm, target_fields
from shared.schema import ExtractionSchema


def student_instruction(schema: ExtractionSchema) -> str:
    """The system instruction: extract these fields as one JSON object, null when absent."""
    fields = "、".join(schema.field_names)
    return f"从投诉文本中提取 {fields}，只输出一个 JSON 对象；值照抄原文，原文没有的填 null。"


def student_messages(text: str, schema: ExtractionSchema) -> list[dict[str, str]]:
    """Chat messages for the student: the instruction, then the complaint text as the user turn."""
    return [
        {"role": "system", "content": student_instruction(schema)},
        {"role": "user", "content": text},
    ]


def student_target(
    label: dict[str, Any], schema: ExtractionSchema, form: TargetForm = "copy"
) -> str:
    """The answer the student learns: compact JSON, keys in schema order, missing keys null;
    in the `anchors` form free-text fields are written as their ends (`shared.anchors`)."""
    return json.dumps(target_fields(label, schema, form), ensure_ascii=False, separators=(",", ":"))
