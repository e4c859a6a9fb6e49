"""Scenario 9: schemathesis against each running API, from the schema the API itself serves.

Every check schemathesis has, auth included (`ignored_auth`: the schema declares the bearer key,
so requests without it must be refused), up to 200 generated cases per operation in the
coverage, fuzzing and stateful phases, on the real processes: ingest, distill and train with
Redis and the store, the gateway with the tiny model on vLLM."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.engine_fixtures import API_KEY, auth, ready
from tests.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
EXAMPLES = 200
CONFIG = """
# Schema-valid input may still be refused for what a schema cannot say: an unknown id (404), a
# text above TIQU_SERVE_MAX_TEXT_CHARS (413), load or a missing engine (429, 503).
[checks.positive_data_acceptance]
expected-statuses = ["2xx", 404, 409, 413, 429, 503]

# A batch job's `store_key` may only name an earlier batch upload (403). Before the entry below:
# the first entry that applies decides, and an entry applies when any of its filters matches.
[[operations]]
include-path-regex = "^/v1/batches$"
checks.positive_data_acceptance.expected-statuses = ["2xx", 403, 404, 409, 413, 422, 429, 503]

# An uploaded file is read and checked whole: random bytes are not an export (422).
[[operations]]
include-path-regex = "^/v1/(datasets|batches)$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", 404, 409, 413, 422, 429, 503]
"""


def run_schemathesis(service: str, url: str, tmp_path: Path, config_extra: str = "") -> dict:
    tmp_path.mkdir()
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_extra + CONFIG, encoding="utf-8")
    junit = tmp_path / f"{service}.xml"
    started = time.monotonic()
    finished = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES),
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--seed",
            "9",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
            str(junit),
            "--workers",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, f"{service}:\n{output[-12000:]}"
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    operations = re.search(r"Tested: (\d+)", output)
    assert cases and operations, output[-3000:]
    return {
        "cases": int(cases.group(1)),
        "passed": int(cases.group(2)),
        "operations": int(operations.group(1)),
        "seconds": time.monotonic() - started,
    }


def test_every_api_holds_to_its_own_schema(
    all_apis, gateway_env, register, loras, tmp_path: Path, record
) -> None:
    register("extractor", loras.nulls)
    apis = all_apis(
        serve_env={
            **gateway_env,
            "TIQU_SERVE_MAX_TEXT_CHARS": "300",
            "TIQU_SERVE_MAX_NEW_TOKENS": "24",
            "TIQU_SERVE_MAX_INFLIGHT": "8",
        }
    )
    wait_until(lambda: ready(apis["serve"].url), 90, "gateway ready", apis["serve"])
    # A dataset that exists, so that reading one reaches past 404.
    upload = httpx.post(
        f"{apis['ingest'].url}/v1/datasets",
        files={"file": ("a.csv", "text\n我的快递丢了，请尽快处理。\n".encode())},
        headers=auth(),
        timeout=30,
    )
    assert upload.status_code == 202, upload.text
    dataset_id = upload.json()["dataset_id"]
    results = {
        service: run_schemathesis(
            service,
            apis[service].url,
            tmp_path / service,
            # Reading that dataset answers 200; other ids are fuzzed in test_hostile_input.
            f'[parameters]\n"path.dataset_id" = "{dataset_id}"\n' if service == "ingest" else "",
        )
        for service in ("ingest", "distill", "train", "serve")
    }
    for result in results.values():
        assert result["passed"] == result["cases"]
    for server in apis.values():
        assert "unhandled error" not in server.log()
    total = sum(r["cases"] for r in results.values())
    record(
        9,
        f"schemathesis {version('schemathesis')} run against the 4 running APIs' /openapi.json: "
        "all checks (server errors, status codes, content types, headers, response schemas, "
        "negative and positive data, unsupported methods, Allow, ignored auth, stateful links), "
        f"up to {EXAMPLES} cases per operation, seed 9",
        f"{total} cases on "
        + ", ".join(
            f"{name} {r['operations']} operations/{r['cases']} cases/{r['seconds']:.0f} s"
            for name, r in results.items()
        )
        + "; 0 failures: no 5xx, no schema violation, no request without a key accepted",
    )
