"""Scenario 22: the results table can only say "yes" for what this session measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

INNER_TESTS = """
pytest_plugins = ["tests.reliability_report"]


def test_breaks_before_measuring(record):
    raise RuntimeError("the engine did not start")


def test_measures(record):
    record(1, "a worker killed", "measured 3 rows")


def test_skips_before_measuring(record):
    import pytest

    pytest.skip("no promtool")
"""


def previous_row(test: str, done: str) -> str:
    return f"| 1 | scenario | {done} | measured in an earlier run | yes <!-- {test} --> |"


def run_session(folder: Path, report: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIQU_RELIABILITY_REPORT": str(report), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_test_that_fails_before_recording_does_not_keep_its_old_yes(
    tmp_path: Path, record
) -> None:
    folder = tmp_path / "inner"
    folder.mkdir()
    (folder / "test_inner.py").write_text(INNER_TESTS, encoding="utf-8")
    report = tmp_path / "reliability.md"
    report.write_text(
        "\n".join(
            [
                previous_row("test_breaks_before_measuring", "an engine started"),
                previous_row("test_measures", "a worker killed"),
                previous_row("test_skips_before_measuring", "promtool checked"),
                previous_row("test_not_run_now", "redis killed"),
            ]
        )
        + "\n",
        encoding="utf-8",
    )

    finished = run_session(folder, report)

    assert "1 failed, 1 passed, 1 skipped" in finished.stdout, finished.stdout + finished.stderr
    rows = {
        line.split("<!-- ")[1].split(" -->")[0]: line
        for line in report.read_text(encoding="utf-8").splitlines()
        if "<!--" in line
    }
    assert set(rows) == {
        "test_breaks_before_measuring",
        "test_measures",
        "test_skips_before_measuring",
        "test_not_run_now",
    }
    broken = rows["test_breaks_before_measuring"]
    assert "| **no** <!--" in broken and "not measured: the test failed" in broken
    assert "| skipped <!--" in rows["test_skips_before_measuring"]
    assert "measured 3 rows | yes <!--" in rows["test_measures"]
    # A test this session did not run keeps its row as it was.
    assert rows["test_not_run_now"].endswith(
        "measured in an earlier run | yes <!-- test_not_run_now --> |"
    )
    record(
        22,
        "a session of 3 tests using `record` over a report whose 4 rows all said yes: one "
        "fails before recording, one records, one skips before recording, one is not run",
        f"failed-before-recording row: {broken.split(' | ')[-1].split(' <!--')[0]}; skipped: "
        f"{rows['test_skips_before_measuring'].split(' | ')[-1].split(' <!--')[0]}; "
        "recorded: yes with the new measurement; not run: its old row kept",
    )
