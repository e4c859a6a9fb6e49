"""Distillation through a real language model served by vLLM's OpenAI server.

The teacher stand-in injects the faults of real teachers on purpose; this test takes what a real
model writes instead: the session's vLLM engine (CPU) with a LoRA adapter on the tiny test model
loaded at run time, answering `/v1/chat/completions` with the distill service's own teacher prompt.
Whatever it writes, every row must end accepted (typed, grounded) or rejected with its reason,
exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from services.distill.run import DistillOptions, run_distill
from shared.normalize import field_grounded
from shared.schema import get_schema
from shared.store import Store
from tests.distill.test_distill_run import output_ids
from tests.engine_fixtures import ENGINE_KEY

if TYPE_CHECKING:
    from tests.distill.conftest import Dataset
    from tests.engine_fixtures import Engine, Loras

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEACHER_NAME = "real-teacher"
ENGINE_KEY_AS_TEACHER = {"teacher_api_key": ENGINE_KEY}
REASONS = {"teacher_error", "parse_error", "schema", "ungrounded", "low_agreement"}


@pytest.fixture
def teacher(engine: Engine, loras: Loras) -> Iterator[str]:
    """The base URL of a real model answering as teacher: vLLM with a runtime-loaded LoRA,
    unloaded afterwards so that it takes no slot from the serve tests sharing the engine."""
    response = httpx.post(
        f"{engine.url}/v1/load_lora_adapter",
        json={"lora_name": TEACHER_NAME, "lora_path": str(loras.labels)},
        headers=engine.headers,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    yield f"{engine.url}/v1"
    httpx.post(
        f"{engine.url}/v1/unload_lora_adapter",
        json={"lora_name": TEACHER_NAME},
        headers=engine.headers,
        timeout=60,
    )


def check_accounting(dataset: Dataset, result: Any, read_run_file) -> dict[str, Any]:
    counts = result.manifest["counts"]
    assert counts["rows"] == dataset.rows
    assert counts["accepted"] + counts["rejected"] == dataset.rows
    by_reason = counts["rejected_by_reason"]
    assert set(by_reason) <= REASONS and sum(by_reason.values()) == counts["rejected"]
    ids = output_ids(read_run_file, dataset, result.run_id)
    assert len(ids) == dataset.rows and set(ids.values()) == {1}
    rejected = read_run_file(dataset.dataset_id, result.run_id, "rejected.jsonl")
    assert Counter(r["reason"] for r in rejected) == {k: v for k, v in by_reason.items() if v}
    schema = get_schema()
    for name in ("train", "val", "test"):
        for record in read_run_file(dataset.dataset_id, result.run_id, f"{name}.jsonl"):
            text = record["messages"][1]["content"]
            assert schema.errors(record["label"]) == []
            for spec in schema.fields:
                assert field_grounded(spec, record["label"][spec.name], text)
    return counts


def test_a_real_model_as_teacher_is_parsed_verified_and_accounted_for(
    make_dataset, teacher: str, use_teacher, read_run_file
) -> None:
    dataset = make_dataset(16, 3)
    store = Store.from_settings()
    # Free text: whatever the model writes goes through the answer parser.
    use_teacher(
        teacher, teacher_model=TEACHER_NAME, teacher_json_schema="false", **ENGINE_KEY_AS_TEACHER
    )
    free = run_distill(dataset.dataset_id, DistillOptions.from_settings(limit=8), store)
    free_counts = check_accounting(
        type(dataset)(dataset.dataset_id, dataset.labels, 8), free, read_run_file
    )
    # Constrained to the typed schema by the server: every answer parses and is typed, so what
    # is left to reject is what the text does not hold.
    use_teacher(
        teacher, teacher_model=TEACHER_NAME, teacher_json_schema="true", **ENGINE_KEY_AS_TEACHER
    )
    typed = run_distill(dataset.dataset_id, DistillOptions.from_settings(), store)
    typed_counts = check_accounting(dataset, typed, read_run_file)
    # The grammar keeps every answer JSON of the schema's types; it cannot make a model that
    # rambles inside a string close it before the token budget, so those are the only
    # unparsed answers.
    assert typed_counts["rejected_by_reason"].get("schema", 0) == 0
    rejected = read_run_file(dataset.dataset_id, typed.run_id, "rejected.jsonl")
    unparsed = [r["detail"] for r in rejected if r["reason"] == "parse_error"]
    assert all(detail.startswith("truncated JSON") for detail in unparsed), unparsed
    assert typed.manifest["teacher"]["model"] == TEACHER_NAME
    print("free text:", free_counts, "typed:", typed_counts)
