"""The offline teacher stand-in speaks the OpenAI protocol and misbehaves exactly as documented."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from services.distill.parsing import AnswerParseError, parse_teacher_json, parse_teacher_list
from services.distill.stub import LabelIndex, StubConfig, StubServer, load_labels
from services.distill.stub_cli import register
from shared.cleaning import clean_text
from shared.normalize import field_grounded
from shared.samples import FIELDS, generate_complaints, write_export
from shared.schema import get_schema
from shared.settings import get_settings
from tests.support import free_port, start_process, wait_until

QUESTION = next(spec for spec in get_schema().fields if spec.name == "question")

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer stub-key"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("stub") / "complaints.csv"
    labels_path = write_export(generate_complaints(120, seed=21), "csv", out)
    rows = [json.loads(line) for line in labels_path.read_text(encoding="utf-8").splitlines()]
    return labels_path, rows


@pytest.fixture(scope="module")
def index(sample: tuple[Path, list[dict[str, Any]]]) -> LabelIndex:
    return load_labels([sample[0]])


@pytest.fixture
def stub(index: LabelIndex) -> Iterator[Any]:
    servers: list[StubServer] = []

    def start(**settings: Any) -> StubServer:
        server = StubServer(StubConfig(**settings), index=index).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def originals(sample: tuple[Path, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for r in sample[1] if r["kind"] == "original" and not r["injection"]]


def chat_body(text: str, *, marked: bool = True, **extra: Any) -> dict[str, Any]:
    content = f"请抽取。\n<complaint>\n{text}\n</complaint>" if marked else text
    return {
        "model": "tiqu-stub",
        "messages": [
            {"role": "system", "content": "你是信息抽取助手。"},
            {"role": "user", "content": content},
        ],
        **extra,
    }


@pytest.fixture(scope="module", autouse=True)
def http() -> Iterator[httpx.Client]:
    """One keep-alive client for the module: a fresh connection per request costs ~10 ms."""
    with httpx.Client(timeout=10) as client:
        _CLIENT[:] = [client]
        yield client
    _CLIENT.clear()


_CLIENT: list[httpx.Client] = []


def post(server: StubServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return _CLIENT[0].post(
        f"{server.base_url}/chat/completions",
        json=body,
        headers={**AUTH, **(headers or {})},
    )


def content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def label(row: dict[str, Any]) -> dict[str, Any]:
    return {f: row[f] for f in FIELDS}


def test_models_health_and_auth(stub) -> None:
    server = stub()
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    models = httpx.get(f"{server.base_url}/models", headers=AUTH).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiqu-stub"]
    assert httpx.get(f"{server.base_url}/models/tiqu-stub", headers=AUTH).status_code == 200
    assert httpx.get(f"{server.base_url}/models/other", headers=AUTH).status_code == 404

    missing = httpx.get(f"{server.base_url}/models")
    assert missing.status_code == 401
    wrong = post(server, chat_body("x"), headers={"Authorization": "Bearer sk-very-wrong-key"})
    assert wrong.status_code == 401
    error = wrong.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert "sk-very-wrong-key" not in error["message"]
    assert set(error) == {"message", "type", "param", "code"}

    open_server = stub(api_key=None)
    assert httpx.get(f"{open_server.base_url}/models").status_code == 200


def test_tiqus_own_api_keys_do_not_guard_the_stand_in(
    stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in plays an external teacher: only its own key counts, whatever TIQU_API_KEYS is.
    monkeypatch.setenv("TIQU_API_KEYS", "a-tiqu-gateway-key")
    get_settings.cache_clear()
    server = stub()
    assert httpx.get(f"{server.base_url}/models", headers=AUTH).status_code == 200
    assert httpx.get(f"{server.base_url}/models").status_code == 401


def test_a_chat_completion_has_the_openai_shape(stub, sample) -> None:
    server = stub()
    row = originals(sample)[0]
    response = post(server, chat_body(clean_text(row["text"])))
    body = response.json()
    assert response.headers["content-type"].startswith("application/json")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body["model"] == "tiqu-stub"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert json.loads(choice["message"]["content"]) == label(row)


def test_labels_are_found_by_cleaned_raw_and_unmarked_text(stub, sample) -> None:
    server = stub()
    rows = originals(sample)
    messy = [r for r in rows if clean_text(r["text"]) != r["text"]]
    assert messy, "the sample should hold rows that cleaning changes"
    for row in rows[:10] + messy[:10]:
        assert json.loads(content(post(server, chat_body(clean_text(row["text"]))))) == label(row)
        assert json.loads(content(post(server, chat_body(row["text"])))) == label(row)
    row = rows[1]
    unmarked = chat_body(clean_text(row["text"]), marked=False)
    assert json.loads(content(post(server, unmarked))) == label(row)
    # Extra blanks around or inside the text do not matter.
    spaced = chat_body("  " + clean_text(row["text"]).replace("，", "， ") + "\n")
    assert json.loads(content(post(server, spaced))) == label(row)


def test_the_last_complaint_of_the_last_user_message_is_answered(stub, sample) -> None:
    server = stub()
    first, second = originals(sample)[:2]
    body = chat_body(first["text"])
    body["messages"][1:1] = [
        {"role": "user", "content": f"<complaint>{second['text']}</complaint>"},
        {"role": "assistant", "content": json.dumps(label(second), ensure_ascii=False)},
    ]
    assert json.loads(content(post(server, body))) == label(first)


def test_unknown_text_gets_nulls_and_the_text_as_question(stub) -> None:
    server = stub()
    text = "这是一条标签文件里没有的投诉：空调坏了没人修。"
    answer = json.loads(content(post(server, chat_body(text))))
    assert answer == {"name": None, "phone": None, "email": None, "address": None, "question": text}
    assert httpx.get(f"{server.url}/stats").json()["answers"] == {"unknown": 1}


def test_fields_follow_the_response_format_schema(stub, sample) -> None:
    server = stub()
    row = originals(sample)[0]
    schema = {"type": "object", "properties": {"phone": {}, "email": {}, "order_no": {}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    answer = json.loads(
        content(post(server, chat_body(row["text"], response_format=response_format)))
    )
    assert answer == {"phone": row["phone"], "email": row["email"], "order_no": None}


def test_errors_for_unknown_model_and_bad_requests(stub) -> None:
    server = stub()
    unknown = post(server, {**chat_body("x"), "model": "gpt-4o"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert "gpt-4o" in unknown.json()["error"]["message"]
    for bad in ({"model": "tiqu-stub"}, {"model": "tiqu-stub", "messages": []}, [1, 2], {}):
        response = post(server, bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["type"] == "invalid_request_error"
    raw = httpx.post(f"{server.base_url}/chat/completions", content=b"{not json", headers=AUTH)
    assert raw.status_code == 400
    stats = httpx.get(f"{server.url}/stats").json()
    assert stats["outcomes"] == {"model_not_found": 1, "bad_request": 5}
    assert stats["chat_requests"] == 6


def test_augmentation_is_deterministic_and_its_labels_are_remembered(stub) -> None:
    server = stub()
    prompt = '<augment n="4">\n<example>快递丢了</example>\n只输出一个 JSON 数组。'
    body = {"model": "tiqu-stub", "messages": [{"role": "user", "content": prompt}]}
    texts = parse_teacher_list(content(post(server, body)))
    assert len(texts) == 4 and len(set(texts)) == 4
    assert all(isinstance(t, str) and len(t) > 10 for t in texts)
    assert parse_teacher_list(content(post(server, body))) == texts
    other = {"model": "tiqu-stub", "messages": [{"role": "user", "content": prompt + " "}]}
    assert parse_teacher_list(content(post(server, other))) != texts

    for text in texts:
        answer = json.loads(content(post(server, chat_body(text))))
        # Copied from the text, possibly in pieces (a complaint spread over paragraphs).
        assert answer["question"] and field_grounded(QUESTION, answer["question"], clean_text(text))
        for field in ("name", "phone", "email", "address"):
            assert answer[field] is None or answer[field] in text
    stats = httpx.get(f"{server.url}/stats").json()
    assert stats["answers"] == {"augment": 3, "known": 4}
    assert stats["augmented_texts"] == 8

    # A fresh stub with the same seed writes the same complaints.
    again = stub()
    assert parse_teacher_list(content(post(again, body))) == texts


def test_fault_selection_follows_the_documented_rule(stub, sample) -> None:
    rates = {"rate_429": 0.2, "rate_500": 0.2, "rate_timeout": 0.0, "rate_malformed": 0.2}
    server = stub(seed=5, **rates)
    rows = originals(sample)[:12]

    def draw(key: str, attempt: int, name: str) -> float:
        digest = hashlib.blake2b(f"5|{key}|{attempt}|{name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64

    seen: list[tuple[str, int, str]] = []
    for row in rows:
        body = chat_body(row["text"])
        key = hashlib.blake2b(
            json.dumps(
                [body["model"], body["messages"]], ensure_ascii=False, sort_keys=True
            ).encode("utf-8"),
            digest_size=16,
        ).hexdigest()
        for attempt in range(1, 5):
            response = post(server, body)
            u = draw(key, attempt, "transport")
            expected = 429 if u < 0.2 else 500 if u < 0.4 else "malformed" if u < 0.6 else 200
            if expected == "malformed":
                assert response.status_code == 200
                with pytest.raises(ValueError):
                    json.loads(response.content)["choices"][0]["message"]["content"]
            else:
                assert response.status_code == expected
            if expected == 429:
                assert response.headers["retry-after"] == "1"
            seen.append((key, attempt, str(expected)))
    assert {outcome for _, _, outcome in seen} == {"429", "500", "malformed", "200"}
    log = httpx.get(f"{server.url}/stub/requests").json()
    assert [(e["key"], e["attempt"]) for e in log] == [(k, a) for k, a, _ in seen]

    # Same seed, same requests, same faults; another seed, other faults.
    def outcomes(server: StubServer) -> list[int]:
        return [post(server, chat_body(r["text"])).status_code for r in rows for _ in range(3)]

    first = outcomes(stub(seed=5, **rates))
    assert outcomes(stub(seed=5, **rates)) == first
    assert outcomes(stub(seed=6, **rates)) != first


def test_a_rate_limited_prompt_succeeds_when_retried(stub, sample) -> None:
    server = stub(rate_429=0.5, retry_after_s=2)
    for row in originals(sample)[:10]:
        statuses = []
        for _ in range(20):
            response = post(server, chat_body(row["text"]))
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            assert response.headers["retry-after"] == "2"
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {429}


def test_fail_first_fails_every_prompt_n_times(stub, sample) -> None:
    server = stub(fail_first=2)
    for row in originals(sample)[:3]:
        codes = [post(server, chat_body(row["text"])).status_code for _ in range(4)]
        assert codes == [500, 500, 200, 200]
    error = post(stub(fail_first=1), chat_body("x")).json()["error"]
    assert error["type"] == "server_error"
    stats = httpx.get(f"{server.url}/stats").json()
    assert stats["outcomes"] == {"server_error": 6, "ok": 6}
    assert stats["distinct_prompts"] == 3


def test_content_faults(stub, sample) -> None:
    rows = [r for r in originals(sample) if r["name"] and r["phone"] and r["email"]][:3]
    assert rows

    think = stub(rate_think=1)
    for row in rows:
        answer = content(post(think, chat_body(row["text"])))
        assert answer.startswith("<think>") and "</think>" in answer
        assert parse_teacher_json(answer) == label(row)

    fence = stub(rate_fence=1)
    for row in rows:
        answer = content(post(fence, chat_body(row["text"])))
        assert "```json" in answer and not answer.startswith("{")
        assert parse_teacher_json(answer) == label(row)

    hallucinate = stub(rate_hallucinate=1)
    for row in rows:
        answer = json.loads(content(post(hallucinate, chat_body(row["text"]))))
        for field in ("name", "phone", "email"):
            assert answer[field] and answer[field] not in row["text"]
        assert answer["question"] == row["question"]

    wrong = stub(rate_wrong_types=1)
    for row in rows:
        answer = json.loads(content(post(wrong, chat_body(row["text"]))))
        assert isinstance(answer["phone"], int) and answer["name"] == [row["name"]]

    truncated = stub(rate_truncated=1, rate_fence=1)
    for row in rows:
        response = post(truncated, chat_body(row["text"]))
        assert response.json()["choices"][0]["finish_reason"] == "length"
        with pytest.raises(AnswerParseError, match="truncated"):
            parse_teacher_json(content(response))
    assert httpx.get(f"{truncated.url}/stats").json()["content_faults"] == {
        "truncated": 3,
        "fence": 3,
    }


def test_malformed_bodies_are_not_chat_completions(stub) -> None:
    server = stub(rate_malformed=1)
    kinds = set()
    for index in range(12):
        response = post(server, chat_body(f"投诉{index}"))
        assert response.status_code == 200
        try:
            json.loads(response.content)
            kinds.add("parsed")
        except ValueError:
            kinds.add("text" if response.content.startswith(b"upstream") else "cut")
    assert kinds == {"text", "cut"}


def test_timeout_fault_sleeps_past_the_client_timeout(stub) -> None:
    server = stub(rate_timeout=1, timeout_sleep_s=5)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.base_url}/chat/completions", json=chat_body("x"), headers=AUTH, timeout=0.3
        )
    assert time.monotonic() - started < 2
    assert httpx.get(f"{server.url}/stats").json()["outcomes"] == {"timeout": 1}


def test_latency_and_max_tokens(stub, sample) -> None:
    server = stub(latency_ms=150, latency_jitter_ms=20)
    started = time.monotonic()
    response = post(server, chat_body(originals(sample)[0]["text"], max_tokens=1))
    assert time.monotonic() - started >= 0.125
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) <= 4
    assert response.json()["usage"]["completion_tokens"] <= 1


def test_per_request_fault_header_and_live_fault_changes(stub, sample) -> None:
    server = stub()
    row = originals(sample)[0]
    assert post(server, chat_body(row["text"]), {"X-Stub-Faults": "rate_500=1"}).status_code == 500
    as_json = {"X-Stub-Faults": json.dumps({"rate_429": 1, "retry_after_s": 3})}
    limited = post(server, chat_body(row["text"]), as_json)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert post(server, chat_body(row["text"])).status_code == 200
    bad = post(server, chat_body(row["text"]), {"X-Stub-Faults": "labels=x"})
    assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]["message"]
    assert post(server, chat_body("x"), {"X-Stub-Faults": "rate_500=7"}).status_code == 400

    changed = httpx.put(f"{server.url}/stub/faults", json={"rate_500": 1.0})
    assert changed.status_code == 200 and changed.json()["rate_500"] == 1.0
    assert post(server, chat_body("y")).status_code == 500
    assert httpx.put(f"{server.url}/stub/faults", json={"rate_500": 2}).status_code == 422
    assert httpx.put(f"{server.url}/stub/faults", json={"api_key": None}).status_code == 422

    reset = httpx.post(f"{server.url}/stub/reset").json()
    assert reset["chat_requests"] == 0 and reset["outcomes"] == {}


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        StubConfig(rate_429=1.5)
    with pytest.raises(ValueError):
        StubConfig(fail_first=-1)
    with pytest.raises(ValueError):
        StubConfig(unknown_option=1)  # type: ignore[call-arg]


def test_label_files_load_from_the_export_or_fail_clearly(sample, tmp_path: Path) -> None:
    labels_path, rows = sample
    export = labels_path.with_name("complaints.csv")
    assert load_labels([export]).rows == load_labels([labels_path]).rows
    assert load_labels([labels_path]).rows == sum(1 for r in rows if r["text"].strip())
    with pytest.raises(FileNotFoundError, match="tiqu sample"):
        load_labels([tmp_path / "missing.labels.jsonl"])
    broken = tmp_path / "broken.labels.jsonl"
    broken.write_text('{"text": "ok", "name": null}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.labels\.jsonl:2"):
        load_labels([broken])


def test_many_concurrent_clients_are_served_in_parallel(stub, sample) -> None:
    server = stub(latency_ms=200)
    texts = [r["text"] for r in originals(sample)]

    async def main() -> float:
        limits = httpx.Limits(max_connections=8)
        clients = [httpx.AsyncClient(headers=AUTH, limits=limits, timeout=30) for _ in range(8)]
        url = f"{server.base_url}/chat/completions"
        started = time.monotonic()
        responses = await asyncio.gather(
            *(
                clients[i % 8].post(url, json=chat_body(f"{texts[i % len(texts)]}#{i}"))
                for i in range(128)
            )
        )
        elapsed = time.monotonic() - started
        for client in clients:
            await client.aclose()
        assert all(r.status_code == 200 for r in responses)
        return elapsed

    elapsed = asyncio.run(main())
    # 64 requests held at once (each sleeps 200 ms) is the proof of parallel serving; the wall
    # time is only a sanity bound (sequential serving would take 25.6 s), loose for busy machines.
    assert httpx.get(f"{server.url}/stats").json()["max_in_flight"] == 64
    assert elapsed < 20


def test_register_adds_the_teacher_stub_command() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:
        """Keeps typer in multi-command mode."""

    result = CliRunner().invoke(app, ["teacher-stub", "--help"])
    assert result.exit_code == 0
    for option in ("--labels", "--port", "--rate-429", "--fail-first", "--timeout-sleep-s"):
        assert option in result.output


def test_cli_serves_with_a_clear_banner(sample, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    argv = [
        sys.executable,
        "-m",
        "services.distill.stub_cli",
        "--labels",
        str(sample[0]),
        "--port",
        str(port),
        "--api-key",
        "cli-key",
        "--rate-500",
        "0.25",
    ]
    process = start_process(argv, tmp_path / "stub.log", env)
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, "teacher stub start", process)
        models = httpx.get(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer cli-key"}
        )
        assert models.json()["data"][0]["id"] == "tiqu-stub"
        log = process.log()
        assert "OFFLINE STAND-IN" in log and "NOT a real language model" in log
        assert f"http://127.0.0.1:{port}/v1" in log and "rate_500=0.25" in log
    finally:
        process.stop()


def test_cli_refuses_bad_options(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "services.distill.stub_cli", "--labels", str(tmp_path / "x")]
    process = start_process(argv, tmp_path / "bad.log", dict(os.environ))
    assert process.process.wait(timeout=30) == 2
    assert "does not exist" in process.log()
    argv += ["--rate-429", "3"]
    process = start_process(argv, tmp_path / "bad2.log", dict(os.environ))
    assert process.process.wait(timeout=30) == 2
