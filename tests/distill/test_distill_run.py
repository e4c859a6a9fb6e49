"""Distill runs against the real teacher stub over HTTP: faults, cache, votes, augmentation."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from services.distill.run import DistillOptions, DistillResult, run_distill
from services.distill.stub import CONTENT_FAULTS, StubServer
from services.distill.teacher import TeacherFatalError
from shared.errors import NotFoundError
from shared.prompts import student_target
from shared.schema import get_schema
from shared.store import Store
from tests.support import ROOT, free_port

if TYPE_CHECKING:
    from tests.distill.conftest import Dataset

TIQU = str(Path(sys.executable).with_name("tiqu"))
ReadRunFile = Callable[[str, str, str], list[dict[str, Any]]]


def distill(dataset: Dataset, **options: Any) -> DistillResult:
    return run_distill(
        dataset.dataset_id, DistillOptions.from_settings(**options), Store.from_settings()
    )


def output_ids(read: ReadRunFile, dataset: Dataset, run_id: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    for name in ("train", "val", "test", "rejected"):
        ids.update(r["id"] for r in read(dataset.dataset_id, run_id, f"{name}.jsonl"))
    return ids


def assert_truthful(records: list[dict[str, Any]], stub: StubServer) -> None:
    """Accepted labels are exactly what the ground truth says, whatever the faults were."""
    names = get_schema().field_names
    for record in records:
        truth = stub.state.index.find(record["messages"][1]["content"])
        assert truth is not None
        assert record["label"] == {name: truth.get(name) for name in names}


def test_every_stub_fault_is_survived_and_accounted_for(
    dataset: Dataset, start_stub, use_teacher, read_run_file: ReadRunFile
) -> None:
    stub = start_stub(
        dataset.labels,
        rate_429=0.05,
        retry_after_s=0.05,
        rate_500=0.25,
        rate_timeout=0.03,
        timeout_sleep_s=3,
        rate_malformed=0.05,
        rate_think=0.2,
        rate_fence=0.2,
        rate_hallucinate=0.1,
        rate_wrong_types=0.1,
        rate_truncated=0.1,
        fail_first=1,
    )
    # Failed rows are what this run is about: it must finish with all of them accounted for.
    use_teacher(
        stub.base_url,
        teacher_max_attempts=2,
        teacher_timeout_s=0.5,
        distill_max_error_ratio=1,
    )
    result = distill(dataset)
    counts = result.manifest["counts"]

    assert counts["rows"] == dataset.rows
    assert counts["accepted"] + counts["rejected"] == dataset.rows
    by_reason = counts["rejected_by_reason"]
    for reason in ("teacher_error", "parse_error", "schema", "ungrounded"):
        assert by_reason[reason] > 0, by_reason
    assert sum(by_reason.values()) == counts["rejected"]
    assert set(counts["ungrounded_by_field"]) <= {"name", "phone", "email"}
    assert sum(counts["teacher_errors_by_kind"].values()) == by_reason["teacher_error"]
    assert set(stub.state.content_faults) == set(CONTENT_FAULTS)

    ids = output_ids(read_run_file, dataset, result.run_id)
    assert len(ids) == dataset.rows and set(ids.values()) == {1}
    rejected = read_run_file(dataset.dataset_id, result.run_id, "rejected.jsonl")
    assert Counter(r["reason"] for r in rejected) == {k: v for k, v in by_reason.items() if v}
    for record in rejected:
        (answer,) = record["answers"]
        assert ("error_kind" in answer) == (record["reason"] == "teacher_error")
        assert record["text"]
    train = read_run_file(dataset.dataset_id, result.run_id, "train.jsonl")
    assert_truthful(train, stub)


def test_outputs_are_chat_records_and_a_rerun_asks_nothing(
    dataset: Dataset, start_stub, use_teacher, read_run_file: ReadRunFile
) -> None:
    stub = start_stub(dataset.labels)
    use_teacher(stub.base_url)
    first = distill(dataset)
    asked = stub.state.chat_requests
    assert asked == dataset.rows
    manifest = first.manifest
    assert (
        manifest["splits"]["train"] + manifest["splits"]["val"] + manifest["splits"]["test"]
        == (manifest["counts"]["accepted"])
    )
    schema = get_schema()
    for name in ("train", "val", "test"):
        for record in read_run_file(dataset.dataset_id, first.run_id, f"{name}.jsonl"):
            roles = [m["role"] for m in record["messages"]]
            assert roles == ["system", "user", "assistant"]
            assert record["messages"][-1]["content"] == student_target(record["label"], schema)
            assert record["prompt_version"] == manifest["prompt_version"]
            assert record["augmented"] is False

    again = distill(dataset)
    assert again.reused and again.run_id == first.run_id
    exported = distill(dataset, export="alpaca")
    assert exported.run_id != first.run_id
    assert stub.state.chat_requests == asked
    assert exported.manifest["teacher"]["cached_answers"] == dataset.rows
    assert exported.manifest["splits"] == manifest["splits"]
    alpaca = read_run_file(dataset.dataset_id, exported.run_id, "train.alpaca.jsonl")
    assert len(alpaca) == manifest["splits"]["train"]
    assert set(alpaca[0]) == {"instruction", "input", "output"}


def test_self_consistency_votes_and_rejects_low_agreement(
    dataset: Dataset, start_stub, use_teacher, read_run_file: ReadRunFile
) -> None:
    stub = start_stub(dataset.labels, rate_hallucinate=0.3)
    use_teacher(stub.base_url)
    result = distill(dataset, samples=3, limit=60)
    manifest = result.manifest
    assert stub.state.chat_requests == 3 * 60
    assert manifest["agreement"]["samples"] == 3
    assert manifest["agreement"]["unanimous_rows"] < 60
    rejected = manifest["counts"]["rejected_by_reason"]
    assert rejected["low_agreement"] > 0
    assert set(k for k, v in rejected.items() if v) <= {"low_agreement", "ungrounded"}
    accepted = [
        record
        for name in ("train", "val", "test")
        for record in read_run_file(dataset.dataset_id, result.run_id, f"{name}.jsonl")
    ]
    assert any(min(r["agreement"].values()) < 1 for r in accepted)
    assert all(min(r["agreement"].values()) >= 0.6 for r in accepted)
    assert_truthful(accepted, stub)


def test_augmentation_adds_verified_rows_marked_augmented(
    dataset: Dataset, start_stub, use_teacher, read_run_file: ReadRunFile
) -> None:
    stub = start_stub(dataset.labels)
    use_teacher(stub.base_url)
    result = distill(dataset, augment=8, limit=30)
    manifest = result.manifest
    assert manifest["augment"]["requested"] == 8
    assert manifest["augment"]["kept"] == manifest["counts"]["augmented_rows"] == 8
    assert manifest["counts"]["rows"] == 38
    train = read_run_file(dataset.dataset_id, result.run_id, "train.jsonl")
    augmented = [r for r in train if r["augmented"]]
    assert len(augmented) == manifest["splits"]["augmented_in_train"] > 0
    assert all(r["id"].startswith("aug-") for r in augmented)
    assert_truthful(augmented, stub)
    for name in ("val", "test"):
        assert not any(
            r["augmented"]
            for r in read_run_file(dataset.dataset_id, result.run_id, f"{name}.jsonl")
        )


def test_cli_distills_with_a_report_and_shows_the_run(
    dataset: Dataset, start_stub, use_teacher, service_env: dict[str, str]
) -> None:
    stub = start_stub(dataset.labels)
    env = {**service_env, **use_teacher(stub.base_url)}

    def tiqu(*argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [TIQU, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        # Rich wraps lines at the terminal width; compare words.
        done.stdout, done.stderr = " ".join(done.stdout.split()), " ".join(done.stderr.split())
        return done

    done = tiqu("distill", dataset.dataset_id, "--limit", "20", "--export", "alpaca")
    assert done.returncode == 0, done.stderr
    assert "accepted" in done.stdout and "split: train" in done.stdout
    run_id = next(word for word in done.stdout.split() if word.startswith("dr-"))
    again = tiqu("distill", dataset.dataset_id, "--limit", "20", "--export", "alpaca")
    assert "already distilled" in again.stdout
    assert stub.state.chat_requests == 20
    shown = tiqu("distill-runs", "show", run_id)
    assert shown.returncode == 0 and run_id in shown.stdout
    listed = tiqu("distill-runs", "list", dataset.dataset_id)
    assert run_id in listed.stdout
    missing = tiqu("distill-runs", "show", f"dr-{'0' * 16}-{'0' * 12}")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_unknown_dataset_is_not_found(use_teacher) -> None:
    use_teacher("http://127.0.0.1:9/v1")
    with pytest.raises(NotFoundError):
        run_distill("ds-0123456789abcdef", DistillOptions.from_settings(), Store.from_settings())


@pytest.mark.parametrize("problem", ["url", "key"])
def test_wrong_url_or_key_is_one_clear_error(
    problem: str, dataset: Dataset, start_stub, use_teacher, service_env: dict[str, str]
) -> None:
    stub = start_stub(dataset.labels)
    if problem == "url":
        env = use_teacher(f"http://127.0.0.1:{free_port()}/v1")
    else:
        env = use_teacher(stub.base_url, teacher_api_key="not-the-key")
    with pytest.raises(TeacherFatalError):
        distill(dataset)

    cli = subprocess.run(
        [TIQU, "distill", dataset.dataset_id],
        cwd=ROOT,
        env={**service_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2
    assert "Traceback" not in cli.stderr
    errors = [line for line in cli.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert ("TIQU_TEACHER_BASE_URL" if problem == "url" else "TIQU_TEACHER_API_KEY") in errors[0]
    assert stub.state.chat_requests == 0
