"""Training requests with label sets: pinned versions, ids, stored form, refusals (no model)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.train.api import build_app
from services.train.request import TrainParams, TrainRequest, pin_labelsets, validate
from shared import labelsets
from shared.errors import InvalidInputError, NotFoundError
from shared.labelsets import Source
from shared.settings import get_settings
from shared.store import Store
from tests.train.conftest import DATASET_ID


def request(run_id: str, *sets: str) -> TrainRequest:
    params = TrainParams.from_settings(get_settings())
    return TrainRequest(run_id, "extractor", params, labelsets=sets)


def hand_label(store: Store, record: dict[str, Any], row: int) -> labelsets.Saved:
    text = record["messages"][1]["content"]
    source = Source(DATASET_ID, "dr-other", f"row-{row}")
    return labelsets.accept(store, "corrections", text, record["label"], source)


def test_label_sets_are_pinned_and_part_of_the_training_id(
    distill_run: str, records: list[dict[str, Any]]
) -> None:
    store = Store.from_settings()
    hand_label(store, records[78], 1)
    assert pin_labelsets(store, ["corrections", "corrections@v1"]) == ("corrections@v1",)
    hand_label(store, records[79], 2)
    assert pin_labelsets(store, ["corrections"]) == ("corrections@v2",)

    settings = get_settings()
    plain, first, second = (
        request(distill_run, *sets) for sets in ((), ("corrections@v1",), ("corrections@v2",))
    )
    ids = {r.train_run_id(settings) for r in (plain, first, second)}
    assert len(ids) == 3
    stored = second.to_dict()
    assert stored["labelsets"] == ["corrections@v2"]
    assert TrainRequest.from_dict(stored) == second
    # A request stored before label sets existed reads back with none, under its old id.
    del stored["labelsets"]
    assert TrainRequest.from_dict(stored).train_run_id(settings) == plain.train_run_id(settings)
    assert validate(store, settings, second).run_id == distill_run


def test_unknown_or_unpinned_label_sets_are_refused(
    distill_run: str, records: list[dict[str, Any]]
) -> None:
    store = Store.from_settings()
    with pytest.raises(NotFoundError, match="label set nope not found"):
        pin_labelsets(store, ["nope"])
    hand_label(store, records[78], 1)
    with pytest.raises(InvalidInputError, match="must name its version"):
        validate(store, get_settings(), request(distill_run, "corrections"))


def test_the_api_refuses_an_unknown_label_set_before_queueing(
    distill_run: str, isolated_settings: Any
) -> None:
    api = TestClient(build_app())
    response = api.post("/v1/train-runs", json={"run_id": distill_run, "labels": ["nope"]})
    assert response.status_code == 404
    assert "label set nope not found" in response.json()["error"]["message"]
    assert not (isolated_settings / "train-runs").exists()


def test_the_target_form_is_a_hyperparameter_of_the_training(distill_run: str) -> None:
    settings = get_settings()
    copy = request(distill_run)
    anchors = TrainRequest(
        distill_run, "extractor", TrainParams.from_settings(settings, target_form="anchors")
    )
    assert copy.params.target_form == "copy"
    # Another form trains another adapter: never answered with the copy one as "already there".
    assert anchors.train_run_id(settings) != copy.train_run_id(settings)
    assert TrainRequest.from_dict(anchors.to_dict()) == anchors
    # A request stored before the form was a choice reads back as a copy, under its old id.
    stored = copy.to_dict()
    del stored["params"]["target_form"]
    assert TrainRequest.from_dict(stored).train_run_id(settings) == copy.train_run_id(settings)
    with TestClient(build_app()) as client:
        refused = client.post(
            "/v1/train-runs", json={"run_id": distill_run, "target_form": "summary"}
        )
    assert refused.status_code == 422
    assert "target_form" in refused.text
