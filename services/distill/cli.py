"""CLI of the distill service: `tiqu distill DATASET_ID` and `tiqu distill-runs show|list`."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from services.distill.run import (
    DistillOptions,
    RunProgress,
    dataset_of,
    load_run_manifest,
    run_distill,
)
from services.distill.tasks import status_key
from services.distill.verify import RejectReason
from shared.console import StageProgress, console, fail, friendly_errors
from shared.jobs import load_status
from shared.logging import configure_logging
from shared.store import Layout, Store

runs_app = typer.Typer(help="Inspect distill runs.", no_args_is_help=True)


class ExportFormat(StrEnum):
    alpaca = "alpaca"


class DistillProgress:
    """One bar per stage with rows/s, accepted/rejected, tokens and cost, fed by `RunProgress`."""

    def __init__(self) -> None:
        # The report table (or the error) replaces the bars when the run ends.
        self.display = StageProgress(
            transient=True, fields=("rate", "outcomes", "teacher"), label_width=9
        )
        self.stage_started: dict[str, float] = {}

    def __enter__(self) -> DistillProgress:
        self.display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)

    def __call__(self, p: RunProgress) -> None:
        if p.stage == "done":
            return
        started = self.stage_started.setdefault(p.stage, p.elapsed_s)
        seconds = p.elapsed_s - started
        unit = "batches" if p.stage == "augment" else "rows"
        fields: dict[str, str] = {
            "rate": f"{p.done / seconds:,.1f} {unit}/s" if seconds > 0 and p.done else "",
            "teacher": f"{p.prompt_tokens + p.completion_tokens:,} tok  {p.cost:,.4f}",
        }
        if p.stage == "label":
            fields["outcomes"] = f"[green]{p.accepted:,} ok[/] [yellow]{p.rejected:,} rejected[/]"
        self.display.update(p.stage, p.done, p.total, **fields)


def report_table(manifest: dict[str, Any]) -> Table:
    """Rows by outcome and reason, then the splits."""
    counts = manifest["counts"]
    total = max(counts["rows"], 1)
    table = Table(title=f"distill run {manifest['run_id']}")
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    table.add_row("[green]accepted", f"{counts['accepted']:,}", f"{counts['accepted'] / total:.1%}")
    details = {
        RejectReason.UNGROUNDED.value: counts["ungrounded_by_field"],
        RejectReason.LOW_AGREEMENT.value: counts["low_agreement_by_field"],
        RejectReason.TEACHER_ERROR.value: counts["teacher_errors_by_kind"],
    }
    for reason, number in counts["rejected_by_reason"].items():
        if not number:
            continue
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(details.get(reason, {}).items()))
        label = f"[yellow]rejected: {reason}" + (f" ({detail})" if detail else "")
        table.add_row(label, f"{number:,}", f"{number / total:.1%}")
    table.add_row("[bold]total", f"{counts['rows']:,}", "100%")
    splits = manifest["splits"]
    table.add_section()
    for name in ("train", "val", "test"):
        table.add_row(f"split: {name}", f"{splits[name]:,}", "")
    return table


def print_report(manifest: dict[str, Any], store: Store, *, reused: bool) -> None:
    console.print(report_table(manifest))
    teacher = manifest["teacher"]
    tokens = teacher["prompt_tokens"] + teacher["completion_tokens"]
    console.print(
        f"teacher [bold]{teacher['model']}[/]: {teacher['requests']:,} requests "
        f"({teacher['retries']:,} retries), {teacher['cached_answers']:,} answers from cache, "
        f"{tokens:,} tokens, estimated cost {teacher['estimated_cost']:,.4f}; "
        f"{manifest['rows_per_s'] or 0:,.1f} rows/s",
        highlight=False,
    )
    agreement = manifest["agreement"]
    if agreement["samples"] > 1:
        means = ", ".join(f"{k} {v:.2f}" for k, v in agreement["mean_by_field"].items() if v)
        console.print(f"mean agreement over {agreement['samples']} samples: {means}")
    if manifest["augment"]:
        augment = manifest["augment"]
        console.print(f"augmented: {augment['kept']:,} new complaints of {augment['requested']:,}")
    folder = Layout.distill_run(manifest["dataset_id"], manifest["run_id"], "")
    note = " (already distilled: nothing redone)" if reused else ""
    console.print(
        f"run [bold cyan]{manifest['run_id']}[/] at {store.uri(folder)}{note}", highlight=False
    )


@friendly_errors
def distill_command(
    dataset_id: Annotated[str, typer.Argument(help="A dataset made by `tiqu ingest` (ds-…).")],
    samples: Annotated[
        int,
        typer.Option(min=1, max=16, help="Teacher samples per row; above 1, fields are voted on."),
    ] = 1,
    augment: Annotated[
        int, typer.Option(min=0, help="New complaints the teacher writes in the dataset's style.")
    ] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Label only the first N rows.")] = None,
    export: Annotated[
        ExportFormat | None, typer.Option(help="Also write {train,val,test}.alpaca.jsonl.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Label a dataset with the teacher, verify every label, and write train/val/test files."""
    # The command reports everything itself: per-request warnings would tear the progress bar,
    # and an unusable teacher is explained once, below, not also in a log line.
    configure_logging("distill-cli", level="CRITICAL")
    store = Store.from_settings()
    options = DistillOptions.from_settings(
        samples=samples, augment=augment, limit=limit, export=export.value if export else None
    )
    with DistillProgress() as progress:
        result = run_distill(dataset_id, options, store, progress=progress)
    if as_json:
        console.print_json(json.dumps(result.manifest, ensure_ascii=False))
    else:
        print_report(result.manifest, store, reused=result.reused)


@runs_app.command("show")
@friendly_errors
def show_command(run_id: str) -> None:
    """Print the report of a run, or its state while it is not finished."""
    store = Store.from_settings()
    dataset_id = dataset_of(run_id)
    manifest = load_run_manifest(store, dataset_id, run_id) if dataset_id else None
    if manifest is not None:
        print_report(manifest, store, reused=False)
        return
    status = load_status(store, status_key(dataset_id, run_id)) if dataset_id else None
    if status is None:
        raise fail(f"distill run {run_id} not found in {store.url}")
    done = status.progress.get("done", 0)
    total = status.progress.get("total", 0)
    console.print(f"run {run_id}: [bold]{status.state}[/] ({done:,}/{total:,} rows)")
    if status.error:
        console.print(f"[red]{status.error}[/]", highlight=False)


@runs_app.command("list")
@friendly_errors
def list_command(
    dataset_id: Annotated[str | None, typer.Argument(help="Only this dataset's runs.")] = None,
) -> None:
    """List finished distill runs."""
    store = Store.from_settings()
    table = Table(title=f"distill runs in {store.url}")
    table.add_column("run", no_wrap=True)
    for column in ("created", "samples", "rows", "accepted", "train", "val", "test"):
        table.add_column(column)
    for dataset in [dataset_id] if dataset_id else store.children("datasets"):
        for run_id in store.children(f"{Layout.dataset_dir(dataset)}/distill"):
            manifest = load_run_manifest(store, dataset, run_id)
            if manifest is None:
                continue
            counts, splits = manifest["counts"], manifest["splits"]
            table.add_row(
                run_id,
                manifest["created_at"][:19],
                str(manifest["settings"]["samples"]),
                f"{counts['rows']:,}",
                f"{counts['accepted']:,}",
                *(f"{splits[name]:,}" for name in ("train", "val", "test")),
            )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)
    app.add_typer(runs_app, name="distill-runs")
