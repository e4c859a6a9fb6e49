"""Scenario 11: complaints carrying unique canary names, phones and e-mails go through the whole
chain as real processes (ingest, distill and train APIs and workers, the teacher stub, the
gateway on vLLM), with malformed uploads and bad requests on the way. Afterwards no canary may
appear in any process log, in anything written to Redis (Celery task messages and results,
events: recorded with MONITOR), in any metrics page, or in any error response."""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared.samples import generate_complaints, write_export
from tests.engine_fixtures import API_KEY, auth
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANARIES = [
    ("濮阳翠羽", "13571946028", "cuiyu.canary7q@tiqu-test.org"),
    ("司空霁月", "18829374615", "jiyue_canary3k@tiqu-test.org"),
    ("端木清砚", "15963082741", "qy.canary9z@tiqu-test.org"),
    ("皇甫素笺", "17718264093", "sujian.canary2m@tiqu-test.org"),
    ("Quentin Zorbanelli", "13390517268", "qzorbanelli.canary@tiqu-test.org"),
]
TEMPLATES = [
    "您好，我是{name}，上周买的扫地机器人坏了，客服一直不回复。电话 {phone}，邮箱 {email}，"
    "地址是成都市武侯区天府大道1700号。请尽快处理！",
    "投诉人：{name}；联系电话：{phone}；电子邮箱：{email}。宽带已经断网五天，报修三次没人上门。",
    "我叫{name}，手机{phone}，在贵司APP充值的话费一直没到账，邮箱{email}可以联系我。",
    "{name}反映：快递显示已签收但本人没有收到，联系方式 {phone} / {email}，请核实。",
    "Hello, my name is {name}. 我的信用卡被重复扣款两次，电话 {phone}，email {email}。",
]


def canary_texts() -> list[str]:
    return [
        template.format(name=name, phone=phone, email=email)
        for template, (name, phone, email) in zip(TEMPLATES, CANARIES, strict=True)
    ]


def needles() -> list[str]:
    values = [v for triple in CANARIES for v in triple]
    # Also as JSON writes them with ensure_ascii (\\uXXXX), the form a log or message may hold.
    return values + [json.dumps(v)[1:-1] for v in values if not v.isascii()]


def found_in(text: str) -> set[str]:
    hits = {needle for needle in needles() if needle in text}
    for line in text.splitlines():
        line_digits = re.sub(r"\D", "", line)
        hits |= {phone for _, phone, _ in CANARIES if phone in line_digits}
    return hits


class RedisRecorder:
    """Every command any client sends to Redis while it runs (MONITOR), decoded. A lost
    connection is a gap in the record (counted: the test then proves nothing)."""

    def __init__(self, url: str) -> None:
        # No read timeout: the monitor may wait quietly while a worker trains.
        self.client = redis.Redis.from_url(url, socket_timeout=None)
        self.commands: list[str] = []
        self.gaps = 0
        self._stopping = threading.Event()
        self._monitor = self.client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RedisRecorder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.commands.append(self._monitor.next_command()["command"])
            except redis.TimeoutError:
                continue
            except (redis.ConnectionError, ValueError, AttributeError, OSError):
                if self._stopping.is_set():
                    return
                self.gaps += 1
                time.sleep(0.5)
                try:
                    self._monitor = self.client.monitor()
                    self._monitor.__enter__()
                except redis.RedisError:
                    continue

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.5)
        self._stopping.set()
        try:
            self._monitor.connection.disconnect()
        finally:
            self._thread.join(timeout=5)

    def decoded(self) -> Iterator[str]:
        """Each command as text, and inside it every base64 body (Celery's message bodies)."""
        for command in self.commands:
            raw = codecs.escape_decode(command.encode("utf-8", "backslashreplace"))[0]
            text = raw.decode("utf-8", "replace")
            yield text
            for token in re.findall(r"[A-Za-z0-9+/]{24,}={0,2}", text):
                try:
                    yield base64.b64decode(token, validate=True).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    continue


def poll(url: str, path: str, timeout: float, what: str) -> dict[str, Any]:
    body: dict[str, Any] = {}

    def done() -> bool:
        nonlocal body
        body = httpx.get(f"{url}{path}", headers=auth(), timeout=10).json()
        return body.get("state") in ("ready", "failed")

    wait_until(done, timeout, what)
    assert body["state"] == "ready", body
    return body


def test_canaries_leave_no_trace_outside_the_data(
    engine,
    gateway_env: dict[str, str],
    start_api,
    start_worker,
    start_stub,
    use_teacher,
    redis_url: str,
    tmp_path: Path,
    record,
) -> None:
    export = tmp_path / "complaints.jsonl"
    labels = write_export(generate_complaints(90, seed=11), "jsonl", export)
    texts = canary_texts()
    with export.open("a", encoding="utf-8") as out, labels.open("a", encoding="utf-8") as lab:
        for i, (text, (name, phone, email)) in enumerate(zip(texts, CANARIES, strict=True)):
            row = {"工单编号": f"CANARY-{i}", "投诉内容": text, "渠道": "电话"}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            truth = {"text": text, "name": name, "phone": phone, "email": email}
            lab.write(json.dumps(truth | {"address": None, "question": None}) + "\n")

    stub = start_stub(labels)
    env = {
        **use_teacher(stub.base_url),
        "TIQU_API_KEYS": API_KEY,
        "TIQU_BASE_MODEL": str(engine.base_model),
        "TIQU_MODEL_CACHE": str(engine.model_cache),
        "TIQU_TRAIN_WORK_DIR": str(tmp_path / "work"),
        "TIQU_TRAIN_EPOCHS": "1",
        "TIQU_TRAIN_BATCH_SIZE": "8",
        "TIQU_TRAIN_MAX_LENGTH": "384",
        "TIQU_EVAL_MAX_NEW_TOKENS": "24",
    }
    error_bodies: list[str] = []
    metrics_pages: list[str] = []
    worker_ports = {name: free_port() for name in ("ingest", "distill", "train")}
    with RedisRecorder(redis_url) as recorder:
        for name, port in worker_ports.items():
            start_worker(name, **env, TIQU_WORKER_METRICS_PORT=str(port))
        apis = {name: start_api(name, **env) for name in ("ingest", "distill", "train")}

        def upload(url: str, path: str, name: str, data: bytes) -> httpx.Response:
            files = {"file": (name, data)}
            return httpx.post(f"{url}{path}", files=files, headers=auth(), timeout=60)

        accepted = upload(apis["ingest"].url, "/v1/datasets", export.name, export.read_bytes())
        assert accepted.status_code == 202, accepted.text
        dataset_id = accepted.json()["dataset_id"]
        # Malformed uploads whose content is a canary complaint: no header row, a broken CSV
        # line, a JSONL line that is not an object.
        headerless = f"CANARY-9,{texts[0]}\nCANARY-8,{texts[1]}\n".encode()
        broken = f"工单编号,投诉内容\nC1,{texts[2]},x\n".encode()
        for name, data in [
            ("a.csv", headerless),
            ("b.csv", broken),
            ("c.jsonl", json.dumps([texts[4]], ensure_ascii=False).encode()),
        ]:
            refused = upload(apis["ingest"].url, "/v1/datasets", name, data)
            assert 400 <= refused.status_code < 500, refused.text
            error_bodies.append(refused.text)
        poll(apis["ingest"].url, f"/v1/datasets/{dataset_id}", 120, "dataset")

        run = httpx.post(
            f"{apis['distill'].url}/v1/distill-runs",
            json={"dataset_id": dataset_id},
            headers=auth(),
            timeout=30,
        )
        assert run.status_code == 202, run.text
        run_id = run.json()["run_id"]
        distilled = poll(apis["distill"].url, f"/v1/distill-runs/{run_id}", 120, "distill")
        assert distilled["manifest"]["counts"]["accepted"] >= 40

        train = httpx.post(
            f"{apis['train'].url}/v1/train-runs",
            json={"run_id": run_id},
            headers=auth(),
            timeout=60,
        )
        assert train.status_code == 202, train.text
        trained = poll(
            apis["train"].url, f"/v1/train-runs/{train.json()['train_run_id']}", 400, "train"
        )
        assert trained["result"]["promoted"] is True, trained["result"]

        gateway = start_api("serve", **gateway_env, TIQU_SERVE_MAX_TEXT_CHARS="300")
        wait_until(
            lambda: httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 200,
            120,
            "gateway ready",
            gateway,
        )
        for text in texts:
            answer = httpx.post(
                f"{gateway.url}/v1/extract", json={"text": text}, headers=auth(), timeout=60
            )
            assert answer.status_code == 200, answer.text
        # The console's playground, signed in as a person is: answers and refusals.
        with httpx.Client(base_url=gateway.url, timeout=60) as console:
            signed_in = console.post("/console/login", data={"key": API_KEY, "next": ""})
            assert signed_in.status_code == 303, signed_in.text
            for text, adapter in [(texts[0], ""), (texts[1], "nobody"), (texts[2] * 5, "")]:
                shown = console.post("/console/playground", data={"text": text, "adapter": adapter})
                assert shown.status_code in (200, 404, 413), shown.text
        batch = httpx.post(
            f"{gateway.url}/v1/extract/batch", json={"texts": texts}, headers=auth(), timeout=120
        )
        assert batch.status_code == 200
        for body, headers in [
            ({"text": texts[0] * 5}, auth()),  # above the text limit: 413
            ({"text": texts[1], "adapter": "nobody"}, auth()),  # unknown adapter: 404
            ({"text": [texts[2]]}, auth()),  # wrong type: 422
            ({"texts": [texts[3], 5]}, auth()),  # wrong type in a batch: 422
            ({"text": texts[4]}, {"Authorization": "Bearer wrong"}),  # 401
        ]:
            refused = httpx.post(
                f"{gateway.url}/v1/extract", json=body, headers=headers, timeout=30
            )
            assert 400 <= refused.status_code < 500, refused.text
            error_bodies.append(refused.text)
        refused = upload(gateway.url, "/v1/batches", "a.csv", headerless)
        assert 400 <= refused.status_code < 500, refused.text
        error_bodies.append(refused.text)
        refused = httpx.post(
            f"{apis['distill'].url}/v1/distill-runs",
            content=json.dumps({"dataset_id": dataset_id, "note": texts[0]}).encode(),
            headers={**auth(), "content-type": "application/json"},
        )
        assert refused.status_code == 422
        error_bodies.append(refused.text)

        for server in [*apis.values(), gateway]:
            metrics_pages.append(httpx.get(f"{server.url}/metrics", timeout=10).text)
        for port in worker_ports.values():
            metrics_pages.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)

    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    logs["engine.log"] = (engine.process.log_path).read_text(errors="replace")
    assert {"api-serve-3.log", "worker-train-2.log"} <= set(logs)
    leaks: dict[str, set[str]] = {}
    for name, text in logs.items():
        if hits := found_in(text):
            leaks[f"log {name}"] = hits
    redis_texts = list(recorder.decoded())
    assert recorder.gaps == 0, "the Redis record has gaps (was Redis restarted meanwhile?)"
    assert any("distill_run" in t or "distill-" in t for t in redis_texts)
    for text in redis_texts:
        if hits := found_in(text):
            leaks.setdefault("redis", set()).update(hits)
    for page in metrics_pages:
        if hits := found_in(page):
            leaks.setdefault("metrics", set()).update(hits)
    for body in error_bodies:
        if hits := found_in(body):
            leaks.setdefault("error responses", set()).update(hits)
    assert leaks == {}, leaks
    log_bytes = sum(len(t.encode()) for t in logs.values())
    record(
        11,
        f"{len(CANARIES)} complaints with unique canary names (4 Chinese, 1 Latin), phones and "
        "e-mails, among 90 generated ones, through ingest → distill (stub teacher) → train → "
        f"gateway on vLLM via the APIs, workers and the console's playground; {len(error_bodies)} "
        "refused requests built "
        "from the canary texts (headerless/broken uploads, oversize, wrong types, bad adapter)",
        f"0 of {len(needles())} canary strings (and their \\u-escaped forms, phones also without "
        f"separators) in {len(logs)} process logs ({log_bytes / 1024:.0f} KiB), "
        f"{len(recorder.commands)} Redis commands (Celery messages base64-decoded), "
        f"{len(metrics_pages)} metrics pages and {len(error_bodies)} error responses",
    )
