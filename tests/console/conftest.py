"""Console fixtures: the pages on an app built as the gateway builds it, and a real distill run
with rejected rows, made with the teacher stub."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from services.distill.run import DistillOptions, run_distill
from services.distill.stub import StubServer
from services.serve.console.web import CONSOLE_PATH, mount_console
from shared.api import create_app, parse_api_keys
from shared.store import Layout, Store

# The distill fixtures, shared: a generated dataset, the teacher stub, settings pointing at it.
from tests.distill.conftest import make_dataset, start_stub, use_teacher  # noqa: F401

RejectedRun = tuple[str, str, list[dict[str, Any]]]


def console_app(pages: list[APIRouter], api_keys: str) -> FastAPI:
    """`pages` of the console on an app with the gateway's shell, keys given as TIQU_API_KEYS."""
    app = create_app(
        service="serve",
        title="console under test",
        description="console pages",
        own_auth_prefixes=(CONSOLE_PATH,),
        api_keys=parse_api_keys(api_keys),
    )
    mount_console(app, pages)
    return app


@pytest.fixture
def rejected_run(
    make_dataset: Callable[..., Any],  # noqa: F811
    start_stub: Callable[..., StubServer],  # noqa: F811
    use_teacher: Callable[..., dict[str, str]],  # noqa: F811
) -> RejectedRun:
    """A distill run of 40 generated complaints whose teacher invents values, mistypes them and
    cuts answers short often enough that well over 10 rows (two pages) are rejected; returns
    (dataset id, run id, the rows of its rejected.jsonl)."""
    dataset = make_dataset(40, 7)
    stub = start_stub(
        dataset.labels, rate_hallucinate=0.35, rate_wrong_types=0.2, rate_truncated=0.1
    )
    use_teacher(stub.base_url, distill_max_error_ratio=1)
    result = run_distill(dataset.dataset_id, DistillOptions.from_settings(), Store.from_settings())
    key = Layout.distill_run(dataset.dataset_id, result.run_id, "rejected.jsonl")
    lines = Store.from_settings().read_bytes(key).decode("utf-8").splitlines()
    return dataset.dataset_id, result.run_id, [json.loads(line) for line in lines]
