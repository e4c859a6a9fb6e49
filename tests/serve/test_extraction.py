"""The gateway's pure parts: prompts identical to training, answer parsing, grounding, the
engine command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.serve.engine import cpu_threads_bind, engine_command, usable_cores
from services.serve.extraction import (
    Answer,
    Prompter,
    check_grounding,
    completed_members,
    parse_answer,
)
from services.train.data import Example, encode_examples
from shared.models import ResolvedModel, load_tokenizer
from shared.prompts import student_instruction, student_target
from shared.schema import get_schema
from shared.settings import Settings

TEXT = "我叫张三，电话 138 0013 8000，邮箱 zs@example.com，住上海市浦东新区世纪大道1号。快递丢了。"


def test_the_serving_prompt_is_the_training_prompt_token_for_token(serve_model: Path) -> None:
    tokenizer = load_tokenizer(serve_model)
    schema = get_schema()
    label = {"name": "张三", "phone": "138 0013 8000"}
    prompter = Prompter(tokenizer, schema)
    example = Example(
        id="1",
        messages=tuple(
            [
                {"role": "system", "content": student_instruction(schema)},
                {"role": "user", "content": TEXT},
            ]
        ),
        target=student_target(label, schema),
        label=label,
    )
    (encoded,), _ = encode_examples(tokenizer, [example], "<|im_end|>", 4096)
    assert list(encoded.input_ids[: encoded.prompt_length]) == prompter.prompt_ids(TEXT)


def test_a_whole_valid_answer_is_kept() -> None:
    schema = get_schema()
    answer = parse_answer(
        json.dumps(
            {"name": "张三", "phone": None, "email": None, "address": None, "question": "x"}
        ),
        schema,
        truncated=False,
    )
    assert answer.valid_json and not answer.truncated
    assert answer.fields["name"] == "张三"


def test_a_cut_answer_keeps_the_fields_it_completed() -> None:
    schema = get_schema()
    cut = '{"name":"张三","phone":"13800138000","email":"zs@exa'
    answer = parse_answer(cut, schema, truncated=True)
    assert answer.fields == {
        "name": "张三",
        "phone": "13800138000",
        "email": None,
        "address": None,
        "question": None,
    }
    assert not answer.valid_json and answer.truncated


def test_wrong_types_and_garbage_become_null() -> None:
    schema = get_schema()
    assert parse_answer("not json at all", schema, truncated=False).fields == schema.empty()
    odd = parse_answer('{"name": 5, "phone": "1", "extra": 1}', schema, truncated=False)
    assert odd.fields == {**schema.empty(), "phone": "1"} and not odd.valid_json


@given(st.dictionaries(st.sampled_from(["name", "phone", "email"]), st.text(max_size=20)))
def test_completed_members_of_any_prefix_are_a_subset_of_the_object(value: dict) -> None:
    text = json.dumps(value, ensure_ascii=False)
    for cut in range(len(text) + 1):
        members = completed_members(text[:cut])
        assert all(value[k] == v for k, v in members.items())


def test_values_absent_from_the_text_are_dropped_and_flagged() -> None:
    schema = get_schema()
    answer = Answer(
        fields={
            "name": "张三",
            "phone": "+86 13800138000",
            "email": "boss@evil.com",
            "address": None,
            "question": "快递丢了",
        },
        valid_json=True,
        truncated=False,
    )
    extraction = check_grounding(answer, TEXT, schema)
    assert extraction.fields["name"] == "张三"
    assert extraction.fields["phone"] == "+86 13800138000"  # same number, other spelling
    assert extraction.fields["email"] is None
    assert extraction.grounded == {
        "name": True,
        "phone": True,
        "email": False,
        "address": None,
        "question": True,
    }


def test_the_engine_command_enables_runtime_multi_lora(tmp_path: Path) -> None:
    settings = Settings(
        engine_port=8123, engine_max_loras=3, serve_max_lora_rank=12, engine_extra_args="--seed 1"
    )
    model = ResolvedModel(tmp_path, "m", "0" * 64, "0" * 64, "<|im_end|>", 1)
    command = engine_command(settings, model, python="python", hardware="gpu")
    argv = command.argv
    assert argv[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str(tmp_path)
    assert "--enable-lora" in argv
    assert argv[argv.index("--max-loras") + 1] == "3"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # the next rank vLLM accepts
    assert argv[argv.index("--port") + 1] == "8123"
    assert json.loads(argv[argv.index("--structured-outputs-config") + 1])["disable_any_whitespace"]
    assert argv[-2:] == ["--seed", "1"]
    assert command.env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.3"
    assert "--kv-cache-memory-bytes" not in argv


def test_vllm_on_cpu_gets_every_core_of_a_small_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ResolvedModel(tmp_path, "m", "0" * 64, "0" * 64, "<|im_end|>", 1)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    command = engine_command(Settings(), model, python="python", hardware="cpu")
    assert command.env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_threads_bind(Settings(), usable_cores())
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_command(Settings(), model, hardware="gpu").env
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # vLLM's variable, set by hand
    command = engine_command(Settings(), model, python="python", hardware="cpu")
    assert command.env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    chosen = Settings(engine_cpu_threads_bind="1")  # the setting wins over it
    assert engine_command(chosen, model, hardware="cpu").env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert cpu_threads_bind(Settings(), [0, 1]) == "0,1"
    assert cpu_threads_bind(Settings(), [3]) == "3"
    assert cpu_threads_bind(Settings(), list(range(8))) == "auto"  # one core for the scheduler
    chosen = Settings(engine_cpu_threads_bind="2-5")
    assert cpu_threads_bind(chosen, [0, 1]) == "2-5"


def test_a_fixed_kv_cache_size_replaces_the_memory_share(tmp_path: Path) -> None:
    model = ResolvedModel(tmp_path, "m", "0" * 64, "0" * 64, "<|im_end|>", 1)
    argv = engine_command(Settings(engine_kv_cache_gib=0.25), model, python="python").argv
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(256 * 2**20)
    assert "--gpu-memory-utilization" not in argv
