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
from shared.cleaning import clean_with_offsets
from shared.models import ResolvedModel, load_tokenizer
from shared.prompts import student_instruction, student_target
from shared.schema import get_schema
from shared.settings import Settings
from shared.spans import NOT_FOUND, Span

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
    odd = parse_answer('{"name": 5, "phone": "13800138000", "extra": 1}', schema, truncated=False)
    assert odd.fields == {**schema.empty(), "phone": "13800138000"} and not odd.valid_json


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
    extraction = check_grounding(answer, TEXT, clean_with_offsets(TEXT), schema)
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
    assert extraction.spans["email"] == NOT_FOUND
    assert extraction.spans["address"] is None
    name, phone = extraction.spans["name"], extraction.spans["phone"]
    assert TEXT[name.start : name.end] == "张三" and name.status == "exact"
    assert TEXT[phone.start : phone.end] == "138 0013 8000" and phone.status == "normalized"


def answer_of(**fields: str | None) -> Answer:
    return Answer(fields={**get_schema().empty(), **fields}, valid_json=True, truncated=False)


def spans_of(original: str, **fields: str | None) -> dict[str, Span | None]:
    return check_grounding(
        answer_of(**fields), original, clean_with_offsets(original), get_schema()
    ).spans


# Every noise kind the sample generator makes, around and inside the values.
NOISY = [
    ("<p>我叫&nbsp;<b>李娜</b></p>", "李娜", "李娜"),
    ("投诉人：张\u200b三，退款未到", "张三", "张\u200b三"),
    ("电话：１３９ １２３４ ５６７８", "139 1234 5678", "１３９ １２３４ ５６７８"),
    (
        "邮箱 ｌｉｎａ＠ｅｘａｍｐｌｅ．ｃｏｍ 谢谢",
        "lina@example.com",
        "ｌｉｎａ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    ),
    ("mail: zhАng.wei@163.com", "zhAng.wei@163.com", "zhАng.wei@163.com"),
    (
        "地址:  上海市\u3000浦东新区 世纪大道1号",
        "上海市 浦东新区 世纪大道1号",
        "上海市\u3000浦东新区 世纪大道1号",
    ),
    (
        "我住在北京市朝阳区 &amp; 建国路1号😀",
        "北京市朝阳区 & 建国路1号",
        "北京市朝阳区 &amp; 建国路1号",
    ),
    (
        "繁體：臺北市大安區忠孝東路四段1號",
        "臺北市大安區忠孝東路四段1號",
        "臺北市大安區忠孝東路四段1號",
    ),
    ("Tel:+86 138-0013-8000\r\n\r\n\r\n转达", "+86 138-0013-8000", "+86 138-0013-8000"),
]


@pytest.mark.parametrize(("original", "value", "source"), NOISY)
def test_spans_point_into_the_original_text_through_every_noise(
    original: str, value: str, source: str
) -> None:
    field = (
        "phone"
        if value[-1].isdigit() and "号" not in value
        else "email"
        if "@" in value
        else "address"
    )
    span = spans_of(original, **{field: value})[field]
    assert span is not None and span.start is not None
    assert original[span.start : span.end] == source
    assert span.status == ("exact" if source == value else "normalized")


def test_a_phone_spelled_with_other_separators_maps_to_the_written_number() -> None:
    original = "来电 +86 (138) 0013-8000 找我"
    span = spans_of(original, phone="13800138000")["phone"]
    assert span is not None
    assert original[span.start : span.end] == "(138) 0013-8000"
    assert span.status == "normalized"


def test_a_phone_in_chinese_numerals_is_found_and_grounded() -> None:
    original = "我的电话是一三八一二三四五六七八，快递丢了"
    extraction = check_grounding(
        answer_of(phone="一三八一二三四五六七八"),
        original,
        clean_with_offsets(original),
        get_schema(),
    )
    span = extraction.spans["phone"]
    assert extraction.grounded["phone"] is True
    assert span is not None and original[span.start : span.end] == "一三八一二三四五六七八"


def test_a_question_that_drops_an_inner_clause_is_a_fuzzy_span() -> None:
    original = "您好，我的快递（电话13800138000）三天没更新了，请尽快处理。"
    question = "我的快递三天没更新了，请尽快处理。"
    span = spans_of(original, question=question)["question"]
    assert span is not None and span.status == "fuzzy"
    assert (
        original[span.start : span.end] == "我的快递（电话13800138000）三天没更新了，请尽快处理。"
    )


def test_a_question_the_cleaning_folded_is_normalized() -> None:
    original = "工单号 12。<br>快递丢了，请赔偿。"
    span = spans_of(original, question="快递丢了,请赔偿。")["question"]
    assert span is not None and span.status == "normalized"
    assert original[span.start : span.end] == "快递丢了，请赔偿。"


def test_a_digit_string_is_never_answered_as_an_email() -> None:
    # The README's own example once answered email "13800138000", marked grounded.
    answer = parse_answer(
        json.dumps(
            {
                "name": "王芳",
                "phone": "13800138000",
                "email": "13800138000",
                "address": None,
                "question": "快递丢了",
            },
            ensure_ascii=False,
        ),
        get_schema(),
        truncated=False,
    )
    assert answer.valid_json is False
    assert answer.fields["email"] is None
    assert answer.fields["phone"] == "13800138000"


@pytest.mark.parametrize(
    ("field", "value", "fits"),
    [
        ("phone", "138 0013 8000", True),
        ("phone", "+86 (010) 8888-6666转12", True),
        ("phone", "138****5678", True),
        ("phone", "一三八一二三四五六七八", True),
        ("phone", "zs@example.com", False),
        ("phone", "张三", False),
        ("phone", "12", False),
        ("email", "first.last+tag@mail.company.com.cn", True),
        ("email", "13800138000", False),
        ("email", "zs@", False),
        ("email", "上海市@x.cn", False),
    ],
)
def test_phone_and_email_values_are_typed(field: str, value: str, fits: bool) -> None:
    assert get_schema().value_fits(field, value) is fits


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


def test_ngram_drafting_runs_at_small_batches_only(tmp_path: Path) -> None:
    model = ResolvedModel(tmp_path, "m", "0" * 64, "0" * 64, "<|im_end|>", 1)
    assert "--speculative-config" not in engine_command(Settings(), model, python="python").argv
    drafting = Settings(engine_ngram_draft_tokens=4, engine_ngram_max_batch=4)
    argv = engine_command(drafting, model, python="python").argv
    config = json.loads(argv[argv.index("--speculative-config") + 1])
    assert (config["method"], config["num_speculative_tokens"]) == ("ngram", 4)
    schedule = config["num_speculative_tokens_per_batch_size"]
    assert schedule == [[1, 4, 4], [5, 64, 0]]
    # vLLM's own reading of the schedule: 4 drafts for 1..4 running requests, none from 5 on.
    dynamic = pytest.importorskip("vllm.v1.spec_decode.dynamic.utils")
    lookup = dynamic.build_dynamic_sd_schedule_lookup(schedule, 64, 4)
    assert lookup[1:5] == [4] * 4 and set(lookup[5:]) == {0}
    # A limit at or above the engine's batch drafts at every batch size.
    wide = Settings(engine_ngram_draft_tokens=3, engine_ngram_max_batch=64, engine_max_num_seqs=8)
    argv = engine_command(wide, model, python="python").argv
    config = json.loads(argv[argv.index("--speculative-config") + 1])
    assert config["num_speculative_tokens_per_batch_size"] == [[1, 8, 3]]
    for extra in ("--speculative-config '{}'", "--speculative-config='{}'"):
        both = Settings(engine_ngram_draft_tokens=2, engine_extra_args=extra)
        with pytest.raises(ValueError, match="set one of them"):
            engine_command(both, model, python="python")
