"""The reliability suite's results table: each scenario test (wherever it lives) records what it
did and what it measured with the `record` fixture, and the session writes the rows to
docs/reliability.md (generated, never edited by hand)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import ROOT

# Another file only for the test of this report itself.
REPORT = Path(os.environ.get("TIQU_RELIABILITY_REPORT", ROOT / "docs" / "reliability.md"))

SCENARIOS = {
    1: "Worker SIGKILL mid-task (ingest, distill, batch)",
    2: "Worker SIGTERM (warm shutdown) mid-task",
    3: "Redis kill -9 with AOF while jobs are queued",
    4: "Teacher faults",
    5: "vLLM killed under load",
    6: "Overload at 4x capacity",
    7: "Client disconnects",
    8: "Oversize and malformed input",
    9: "schemathesis against every OpenAPI schema",
    10: "Authentication",
    11: "PII canaries",
    12: "Prompt injection",
    13: "Adapter publish integrity",
    14: "Idempotency",
    15: "Training interrupted",
    16: "Closed by default, scoped keys",
    17: "Hostile files parsed in the worker",
    18: "No job state that can stick",
    19: "Only promoted adapters served, whole-adapter integrity",
    20: "Special tokens typed into a complaint",
    21: "Inside the cluster: engine key, Redis password, network policy",
    22: "Report rows that can fail",
}


@dataclass
class Result:
    scenario: int
    done: str
    measured: str
    test: str
    passed: bool = False


_results: list[Result] = []
# Every test that asked for `record` in this session, with its outcome: a test that failed (or
# was skipped) before recording anything must not leave its last run's "yes" standing.
_outcomes: dict[str, str] = {}


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[Callable[[int, str, str], None]]:
    """`record(scenario, what was done, what was measured)`; the row says if the test passed."""
    test = request.node.name
    mine: list[Result] = []

    def add(scenario: int, done: str, measured: str) -> None:
        result = Result(scenario, done, measured, test)
        _results.append(result)
        mine.append(result)

    _outcomes[test] = "failed"
    yield add
    outcome = getattr(request.node, "rep_call", None)
    if outcome is not None:
        _outcomes[test] = outcome.outcome
    for result in mine:
        result.passed = bool(outcome and outcome.passed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = (yield).get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Row:
    scenario: int
    done: str
    measured: str
    verdict: str
    test: str | None

    def line(self) -> str:
        marker = f" <!-- {self.test} -->" if self.test else ""
        return (
            f"| {self.scenario} | {SCENARIOS[self.scenario]} | {self.done} | {self.measured} | "
            f"{self.verdict}{marker} |"
        )


_TEST_MARKER = re.compile(r"\s*<!-- (\S+) -->$")


def _previous_rows() -> list[Row]:
    if not REPORT.is_file():
        return []
    found = []
    for line in REPORT.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit() and int(cells[0]) in SCENARIOS:
            marker = _TEST_MARKER.search(cells[4])
            verdict = _TEST_MARKER.sub("", cells[4])
            test = marker.group(1) if marker else None
            found.append(Row(int(cells[0]), cells[2], cells[3], verdict, test))
    return found


def _shape(done: str) -> str:
    """What was done, without the numbers measured on the way (the same test's row either way)."""
    return re.sub(r"\d+(?:\.\d+)?", "#", done)


def merged_rows(previous: list[Row], results: list[Result], outcomes: dict[str, str]) -> list[Row]:
    """This session's rows, plus the last run's rows of the tests this session did not run; a
    test that ran without recording keeps its old row text, marked as not measured."""
    rows = {
        (r.scenario, _shape(r.done)): Row(
            r.scenario, r.done, r.measured, "yes" if r.passed else "**no**", r.test
        )
        for r in results
    }
    recorded = {r.test for r in results}
    for row in previous:
        if row.test in recorded:
            continue  # replaced by what the test measured now
        if row.test in outcomes:
            row = Row(
                row.scenario,
                row.done,
                f"not measured: the test {outcomes[row.test]} before recording "
                f"(the last measurement was: {row.measured})",
                "skipped" if outcomes[row.test] == "skipped" else "**no**",
                row.test,
            )
        rows.setdefault((row.scenario, _shape(row.done)), row)
    return [row for _, row in sorted(rows.items())]


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _outcomes:
        return
    lines = [
        "# Reliability and security suite: results",
        "",
        "Generated by the test suite (`make test`, tests/reliability_report.py); do not edit.",
        "Each row is one automated scenario against the real processes (Celery workers,",
        "redis-server, vLLM, the gateway); the measured outcome is what the test saw in its",
        "last run.",
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.",
        "",
        "| # | scenario | what was done | measured outcome | pass |",
        "|---|---|---|---|---|",
    ]
    rows = merged_rows(_previous_rows(), _results, _outcomes)
    lines += [row.line() for row in rows]
    missing = sorted(set(SCENARIOS) - {row.scenario for row in rows})
    if missing:
        lines += [
            "",
            "Not run in this session: " + ", ".join(f"{n}. {SCENARIOS[n]}" for n in missing),
        ]
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
