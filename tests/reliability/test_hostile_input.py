"""Hostile input on every endpoint of every API (scenario 8) and authentication (scenario 10).

The four APIs run as real processes (the gateway with no engine behind it: limits and checks
come before the engine); the endpoints are whatever each service's own /openapi.json lists, so
a route added later is covered without touching this file.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import Router

from shared import api as shared_api
from tests.engine_fixtures import API_KEY
from tests.reliability.reliability_support import (
    HEALTH_PATHS,
    Operation,
    operations,
    send_raw,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GIB = 1024**3
MIB = 1024**2
ENVELOPE_KEYS = {"message", "type", "param", "code"}


@pytest.fixture
def apis(all_apis) -> Iterator[dict[str, tuple[str, int, list[Operation]]]]:
    """Each service: its URL, the API process id, and its operations."""
    started = all_apis()
    yield {
        name: (server.url, server.process.pid, operations(name, server.url))
        for name, server in started.items()
    }


def assert_envelope(response: httpx.Response | object, status: int | None = None) -> None:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS, body


def body_prefix(operation: Operation, boundary: str) -> tuple[dict[str, str], bytes]:
    """Headers and the start of a plausible body: a multipart file part or a JSON string."""
    if operation.takes_file:
        return (
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="huge.csv"\r\nContent-Type: text/csv\r\n\r\ntext\n'
            ).encode(),
        )
    return {"Content-Type": "application/json"}, b'{"text": "'


def test_bodies_above_the_limit_are_refused_early_on_every_endpoint(
    apis, key_headers: dict[str, str], record
) -> None:
    checked = 0
    worst_growth = 0
    worst_seconds = 0.0
    most_sent = 0
    for name, (url, pid, ops) in apis.items():
        for operation in ops:
            headers, prefix = body_prefix(operation, "tiqu-boundary-1f0e")
            headers = {**key_headers, **headers}
            path = operation.concrete_path()
            for chunked in (False, True):
                answer = send_raw(
                    url,
                    operation.method,
                    path,
                    headers=headers,
                    prefix=prefix,
                    total=GIB,
                    chunked=chunked,
                    pid=pid,
                    timeout=90,
                )
                what = (name, operation.method, path, "chunked" if chunked else "declared")
                # Bodies the route reads are refused; a GET never reads its body, so a streamed
                # one is answered as if it were absent, without being held.
                if operation.method == "POST" or not chunked:
                    assert answer.status == 413, (what, answer.status, answer.body[:300])
                    assert answer.json()["error"]["type"] == "payload_too_large", what
                else:
                    # (the gateway has no engine here: not ready)
                    assert answer.status < 500 or path == "/readyz", (what, answer.status)
                assert answer.peak_rss_growth < 50 * MIB, (what, answer.peak_rss_growth)
                assert answer.bytes_sent < 0.25 * GIB, (what, answer.bytes_sent)
                assert answer.seconds < 60, what
                if not chunked:
                    assert answer.bytes_sent < 4 * MIB, (what, answer.bytes_sent)
                checked += 1
                worst_growth = max(worst_growth, answer.peak_rss_growth)
                worst_seconds = max(worst_seconds, answer.seconds)
                most_sent = max(most_sent, answer.bytes_sent)
    assert checked >= 2 * 10
    record(
        8,
        f"1 GiB body (generated on the fly, declared with Content-Length and streamed chunked) "
        f"sent to each of the {checked // 2} operations of the 4 APIs' openapi.json",
        f"every body-reading route 413 with the envelope; peak RSS growth of the API process "
        f"{worst_growth / MIB:.1f} MiB at most; answer within {worst_seconds:.1f} s; at most "
        f"{most_sent / MIB:.0f} MiB sent before the answer (uploads may reach the 200 MiB "
        "upload limit, JSON bodies 1-3 MiB)",
    )


def wrong_values(schema: dict) -> list[object]:
    """Values of the wrong type for a JSON Schema property."""
    kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    candidates: list[object] = [12345, "not-a-number", [], {"a": 1}, True, 1.5, "x" * 5000]
    wrong = []
    for value in candidates:
        kind = {
            int: "integer",
            str: "string",
            list: "array",
            dict: "object",
            bool: "boolean",
            float: "number",
        }[type(value)]
        if kind not in kinds and not (kind == "integer" and "number" in kinds):
            wrong.append(value)
    return wrong


def malformed_json_bodies(operation: Operation, components: dict) -> list[bytes]:
    bodies = [
        b"{not json",
        b"",
        b"[]",
        b'"a string"',
        b"null",
        b"\xff\xfe\x00garbage",
        b'{"unexpected": 1}',
        b"[" * 50_000 + b"]" * 50_000,
        b'{"text": "\\ud800"}',
        b'{"a": 1e999999}',
    ]
    reference = operation.spec["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = components[reference.rsplit("/", 1)[-1]]
    import json

    for prop, spec in schema.get("properties", {}).items():
        for value in wrong_values(spec):
            bodies.append(json.dumps({prop: value}).encode())
    return bodies


def test_malformed_input_gets_4xx_with_the_envelope_never_500(
    apis, key_headers: dict[str, str], record
) -> None:
    answered: dict[int, int] = {}
    for _name, (url, _pid, ops) in apis.items():
        components = httpx.get(f"{url}/openapi.json", timeout=10).json()["components"]["schemas"]
        with httpx.Client(base_url=url, headers=key_headers, timeout=30) as http:
            for operation in ops:
                if operation.path in HEALTH_PATHS:
                    continue
                path = operation.concrete_path()
                requests: list[tuple[str, str, dict]] = []
                if operation.takes_json:
                    for body in malformed_json_bodies(operation, components):
                        requests.append(
                            (
                                operation.method,
                                path,
                                {
                                    "content": body,
                                    "headers": {"content-type": "application/json"},
                                },
                            )
                        )
                    requests.append(
                        (operation.method, path, {"content": b'{"text": "a"}'})  # no type
                    )
                    requests.append(
                        (
                            operation.method,
                            path,
                            {"content": b"text=a", "headers": {"content-type": "text/plain"}},
                        )
                    )
                if operation.takes_file:
                    requests += [
                        (operation.method, path, {"content": b"{}"}),
                        (operation.method, path, {"json": {"file": "x"}}),
                        (
                            operation.method,
                            path,
                            {
                                "content": b"--b\r\nbroken",
                                "headers": {"content-type": "multipart/form-data; boundary=b"},
                            },
                        ),
                        (operation.method, path, {"files": {"file": ("a.csv", b"")}}),
                        (operation.method, path, {"files": {"file": ("a.xlsx", b"PK\x03\x04")}}),
                        (operation.method, path, {"files": {"file": ("a.bin", b"\x00" * 999)}}),
                        (operation.method, path, {"files": {"other": ("a.csv", b"text\nhi")}}),
                        (operation.method, path, {"data": {"text_column": "x" * 300}}),
                    ]
                if "{" in operation.path:
                    prefix = operation.path.split("{")[0]
                    for weird in ("..%2F..%2Fetc%2Fpasswd", "%00", "x" * 5000, "%F0%9F%92%A9"):
                        requests.append((operation.method, prefix + weird, {}))
                if any(p.get("in") == "query" for p in operation.spec.get("parameters", [])):
                    requests.append((operation.method, path + "?limit=-1&offset=abc", {}))
                    requests.append((operation.method, path + "?limit=99999999999999999999", {}))
                for method, target, kwargs in requests:
                    response = http.request(method, target, **kwargs)
                    what = (method, target[:80], str(kwargs)[:120])
                    assert response.status_code < 500, (what, response.status_code, response.text)
                    answered[response.status_code] = answered.get(response.status_code, 0) + 1
                    if response.status_code >= 400:
                        assert_envelope(response)
    total = sum(answered.values())
    assert total > 100
    assert all(400 <= status < 500 for status in answered), answered
    record(
        8,
        f"{total} malformed requests on every operation of the 4 APIs: invalid JSON, non-UTF-8, "
        "50,000-deep nesting, lone surrogates, wrong type per field, wrong content type, broken "
        "multipart, empty and bogus files, path traversal and oversized ids, bad query values",
        "status counts "
        + ", ".join(f"{status}: {count}" for status, count in sorted(answered.items()))
        + "; 0 answers 5xx; every error in the envelope",
    )


def test_every_non_health_route_needs_a_valid_key(apis, record) -> None:
    presented = [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": API_KEY},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer other-key,{API_KEY}"},
        {"X-API-Key": API_KEY},
    ]
    refused = 0
    routes = 0
    for name, (url, _pid, ops) in apis.items():
        for operation in ops:
            path = operation.concrete_path()
            if operation.path in HEALTH_PATHS:
                response = httpx.request(operation.method, f"{url}{path}", timeout=10)
                assert response.status_code != 401, (name, path)
                continue
            routes += 1
            for headers in presented:
                response = httpx.request(operation.method, f"{url}{path}", headers=headers)
                assert response.status_code == 401, (name, operation.method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"]["type"] == "unauthorized"
                refused += 1
            accepted = httpx.request(
                operation.method,
                f"{url}{path}",
                headers={"Authorization": f"bearer {API_KEY}"},
                timeout=30,
            )
            assert accepted.status_code != 401, (name, path)
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
    assert routes >= 9
    record(
        10,
        f"every non-health operation of the 4 APIs' openapi.json ({routes}) called with no key, "
        "a wrong key, the key without Bearer, Basic, a key one character longer or shorter, an "
        "empty key, the whole key list, the key in another header",
        f"{refused}/{refused} answered 401 with the envelope and WWW-Authenticate; the valid key "
        "accepted on each; /healthz, /readyz, /metrics open",
    )


def test_the_engine_admin_routes_are_not_reachable_through_the_gateway(
    apis, key_headers: dict[str, str], record
) -> None:
    url = apis["serve"][0]
    listed = {op.path for op in apis["serve"][2]}
    engine_routes = [
        ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/etc"}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "x"}),
        ("POST", "/v1/completions", {"model": "base", "prompt": "hi"}),
        ("POST", "/v1/chat/completions", {"model": "base", "messages": []}),
        ("GET", "/v1/models", None),
        ("POST", "/tokenize", {"prompt": "hi"}),
        ("GET", "/health", None),
        ("POST", "/reset_prefix_cache", None),
        ("POST", "/sleep", None),
        ("GET", "/version", None),
        ("POST", "/v1/extract/../load_lora_adapter", {"lora_name": "x", "lora_path": "/"}),
    ]
    statuses = []
    for method, path, body in engine_routes:
        assert path not in listed
        for headers in ({}, key_headers):
            response = httpx.request(method, f"{url}{path}", json=body, headers=headers)
            statuses.append(response.status_code)
            expected = (404, 405) if headers else (401,)
            assert response.status_code in expected, (method, path, headers, response.text)
            assert_envelope(response)
    record(
        10,
        f"vLLM's own routes ({len(engine_routes)}: load/unload adapter, completions, chat, "
        "models, tokenize, health, cache reset, sleep, version, a ../ path) called on the gateway",
        f"none proxied: 401 without a key, {sorted(set(statuses) - {401})} with one, all in the "
        "gateway's envelope",
    )


def test_every_configured_key_is_compared_whatever_matches(monkeypatch) -> None:
    """Constant time: hmac.compare_digest on every configured key, for a match at any position
    and for no match, so the answer time does not depend on which key came close."""
    keys = shared_api.parse_api_keys("first-key-aaaa,second-key-bbb,admin:third-key-cccc")
    compared: list[bytes] = []
    real_compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real_compare(a, b)

    monkeypatch.setattr(shared_api.hmac, "compare_digest", counting)
    import asyncio

    async def call(header: bytes | None) -> int:
        statuses: list[int] = []

        async def app(scope, receive, send) -> None:
            statuses.append(200)

        async def send(message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def receive():
            return {"type": "http.request", "body": b""}

        headers = [(b"authorization", header)] if header is not None else []
        scope = {"type": "http", "path": "/v1/x", "headers": headers, "method": "GET"}
        await shared_api.ApiKeyAuth(app, keys, Router())(scope, receive, send)
        return statuses[0]

    for header, status in [
        (b"Bearer first-key-aaaa", 200),
        (b"Bearer second-key-bbb", 200),
        (b"Bearer third-key-cccc", 200),
        (b"Bearer third-key-cccd", 401),
        (b"Bearer ", 401),
        (b"Basic first-key-aaaa", 401),
        (None, 401),
    ]:
        compared.clear()
        assert asyncio.run(call(header)) == status, header
        assert compared == [key.secret for key in keys], header
