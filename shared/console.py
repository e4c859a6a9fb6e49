"""Terminal output shared by the CLI commands of every service: one style for errors and tables."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shared.errors import TiquError
from shared.store import StoreError

# Output read later (a log, `make demo | tee`) gets room for the wide tables instead of rich's 80
# columns; a terminal, or COLUMNS, sets its own width.
PIPED_WIDTH = 120


def _console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    # Lines of text are never broken by rich (store paths and ids stay whole to copy or grep);
    # tables are laid out to the width.
    return Console(stderr=stderr, width=PIPED_WIDTH if piped else None, soft_wrap=True)


console = _console()
error_console = _console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error for a person (no traceback) and return the exit to raise."""
    error_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn tiqu's own errors into a one-line message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (TiquError, StoreError) as exc:
            raise fail(getattr(exc, "message", str(exc))) from None

    return wrapper


class StageProgress:
    """A rich progress display with one bar per pipeline stage.

    Call it as `(stage, done, total)`, or use `update` to also fill the extra text columns named
    in `fields` (rates, outcomes, loss…).
    """

    def __init__(
        self, *, transient: bool = False, fields: tuple[str, ...] = (), label_width: int = 16
    ) -> None:
        self.fields = fields
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn(f"[bold]{{task.description:<{label_width}}}"),
            BarColumn(),
            MofNCompleteColumn(),
            *(TextColumn(f"{{task.fields[{name}]}}") for name in fields),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=error_console,
            transient=transient,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StageProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.update(stage, done, total)

    def update(self, stage: str, done: int, total: int, **fields: str) -> None:
        if stage not in self.tasks:
            empty = dict.fromkeys(self.fields, "")
            self.tasks[stage] = self.progress.add_task(stage, total=total or None, **empty)
        self.progress.update(self.tasks[stage], completed=done, total=total or None, **fields)
