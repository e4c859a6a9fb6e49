"""Requests that cannot be understood (scenario 16): a body that is not JSON gets 400, as the
README says, on every JSON operation of the 4 APIs; a distill run id made of dots gets a 4xx from
the train API instead of reaching the store as a path."""

from __future__ import annotations

import httpx
import pytest

from shared.store import Store
from tests.reliability.reliability_support import HEALTH_PATHS, operations

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNPARSEABLE = [b"{not json", b'{"text": "a"', b"\xff\xfe\x00garbage", b'{"text": "a"}}']


def test_a_body_that_is_not_json_gets_400(all_apis, key_headers: dict[str, str], record) -> None:
    statuses: dict[int, int] = {}
    operations_checked = 0
    for name, server in all_apis().items():
        assert server.url is not None
        for operation in operations(name, server.url):
            if operation.path in HEALTH_PATHS or not operation.takes_json:
                continue
            operations_checked += 1
            for body in UNPARSEABLE:
                response = httpx.request(
                    operation.method,
                    f"{server.url}{operation.concrete_path()}",
                    content=body,
                    headers={**key_headers, "content-type": "application/json"},
                    timeout=30,
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                what = (name, operation.path, body)
                assert response.status_code == 400, (what, response.status_code, response.text)
                error = response.json()["error"]
                assert error["type"] == "bad_request", what
    assert operations_checked >= 4
    record(
        16,
        f"{len(UNPARSEABLE)} bodies that do not parse as JSON (broken syntax, cut short, not "
        f"UTF-8, trailing brace) sent to each of the {operations_checked} JSON operations of the "
        "4 APIs",
        "status counts "
        + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
        + ", each `bad_request` in the envelope, as the README says",
    )


def test_a_run_id_of_dots_is_refused_not_a_500(start_api, key_headers, dataset, record) -> None:
    # A dataset in the store: the train API looks for the run in each dataset's folder.
    assert Store.from_settings().children("datasets") == [dataset.dataset_id]
    api = start_api("train")
    answers: dict[str, int] = {}
    for run_id in ("..", ".", "...", "../datasets", "..\\..", "dr-x/../.."):
        response = httpx.post(
            f"{api.url}/v1/train-runs", json={"run_id": run_id}, headers=key_headers, timeout=30
        )
        answers[run_id] = response.status_code
        assert 400 <= response.status_code < 500, (run_id, response.status_code, response.text)
        assert response.json()["error"]["param"] == "run_id", response.text
    assert "unhandled error" not in (api.log())
    record(
        16,
        f"`POST /v1/train-runs` with run ids of dots and paths ({', '.join(answers)})",
        "answered " + ", ".join(f"{k!r}: {v}" for k, v in answers.items()) + "; 0 errors logged",
    )
