"""The `tiqu` command: shared commands here, each service adds its own group of commands."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shared.console import console, fail, friendly_errors
from shared.settings import Settings

app = typer.Typer(
    name="tiqu",
    help="tiqu (提取): distil a teacher LLM into a small, private complaint extractor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class WorkerRole(StrEnum):
    ingest = "ingest"
    distill = "distill"
    train = "train"
    batch = "batch"


class ApiRole(StrEnum):
    ingest = "ingest"
    distill = "distill"
    train = "train"
    serve = "serve"


WORKER_MODULES = {
    WorkerRole.ingest: "services.ingest.tasks",
    WorkerRole.distill: "services.distill.tasks",
    WorkerRole.train: "services.train.tasks",
    WorkerRole.batch: "services.serve.tasks",
}
API_MODULES = {
    ApiRole.ingest: "services.ingest.api:app",
    ApiRole.distill: "services.distill.api:app",
    ApiRole.train: "services.train.api:app",
    ApiRole.serve: "services.serve.api:app",
}


@app.command()
@friendly_errors
def sample(
    out: Annotated[Path, typer.Option(help="File to write; the labels go beside it.")],
    rows: Annotated[int, typer.Option(min=1, help="Number of complaints.")] = 1000,
    fmt: Annotated[
        str, typer.Option("--format", help="csv, xlsx, jsonl or parquet (default: from --out).")
    ] = "",
    seed: Annotated[int, typer.Option(help="Same seed, same file.")] = 0,
) -> None:
    """Write a realistic, messy export of Chinese complaints and its ground-truth labels."""
    from shared.samples import generate_complaints, write_export

    chosen = fmt or out.suffix.lstrip(".").lower()
    if chosen not in ("csv", "xlsx", "jsonl", "parquet"):
        raise fail(f"unsupported format {chosen!r}: use csv, xlsx, jsonl or parquet")
    with console.status(f"generating {rows:,} complaints"):
        export = generate_complaints(rows, seed=seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        labels = write_export(export, chosen, out)  # type: ignore[arg-type]
    console.print(f"wrote {rows:,} rows to [bold]{out}[/] and labels to [bold]{labels}[/]")


@app.command()
def config(
    markdown: Annotated[bool, typer.Option(help="Print the README configuration table.")] = False,
) -> None:
    """Show every setting (environment variable, default, meaning)."""
    if markdown:
        typer.echo(settings_markdown())
        return
    current = Settings()
    table = Table(title="tiqu settings")
    for column in ("variable", "value", "meaning"):
        table.add_column(column)
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        table.add_row(f"TIQU_{name.upper()}", str(value), field.description or "")
    console.print(table)


def settings_markdown() -> str:
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else f"`{default}`"
        lines.append(f"| `TIQU_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(lines)


@app.command()
def worker(
    service: Annotated[WorkerRole, typer.Argument(help="Whose queue to consume.")],
    concurrency: Annotated[int, typer.Option(min=1)] = 1,
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Run a Celery worker for one service's queue (metrics on TIQU_WORKER_METRICS_PORT)."""
    env = dict(os.environ)
    port = Settings().worker_metrics_port
    if port and "PROMETHEUS_MULTIPROC_DIR" not in env:
        # Prefork children report metrics through files in one folder per metrics port, wiped
        # at start as prometheus_client requires; it must be set before prometheus_client is
        # imported, hence the fresh process below.
        folder = Path(tempfile.gettempdir()) / f"tiqu-metrics-{service.value}-{port}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    # SIGTERM (docker stop, Kubernetes, honcho) starts Celery's cold shutdown instead of a warm
    # one that would wait for a training of hours: the task gets WORKER_SOFT_SHUTDOWN_S seconds to
    # finish, then goes back to the queue (shared/queue.py). Pool processes ignore SIGTERM, so
    # a signal sent to the whole process group cannot kill the task behind the worker's back.
    env.setdefault("REMAP_SIGTERM", "SIGQUIT")
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        WORKER_MODULES[service],
        "worker",
        "-Q",
        service.value,
        "-n",
        f"{service.value}@%h",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
    ]
    os.execvpe(sys.executable, argv, env)


@app.command()
def api(
    service: Annotated[
        ApiRole, typer.Argument(help="Which service's API to serve (serve: the gateway).")
    ],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve a service's REST API with uvicorn (without TIQU_API_KEYS: on loopback only)."""
    import uvicorn

    from shared.api import check_exposure

    try:
        check_exposure(host)
    except ValueError as exc:
        raise fail(str(exc)) from None
    uvicorn.run(API_MODULES[service], host=host, port=port, log_config=None, access_log=False)


def _register_services() -> None:
    from services.distill.cli import register as register_distill
    from services.distill.stub_cli import register as register_teacher_stub
    from services.ingest.cli import register as register_ingest
    from services.serve.cli import register as register_serve
    from services.train.cli import register as register_train

    register_ingest(app)
    register_distill(app)
    register_teacher_stub(app)
    register_train(app)
    register_serve(app)


_register_services()

if __name__ == "__main__":
    app()
