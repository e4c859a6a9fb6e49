"""CLI commands of the ingest service: `tiqu ingest FILE` and `tiqu datasets list|show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from services.ingest.pipeline import IngestOptions, ingest_bytes, load_manifest
from shared.console import StageProgress, console, fail, friendly_errors
from shared.logging import configure_logging
from shared.store import Store

datasets_app = typer.Typer(help="Inspect datasets in the store.", no_args_is_help=True)


def report_table(manifest: dict[str, Any]) -> Table:
    counts = manifest["counts"]
    total = max(counts["rows"], 1)
    table = Table(title=f"dataset {manifest['dataset_id']}", show_footer=False)
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    table.add_row("[green]clean", f"{counts['clean']:,}", f"{counts['clean'] / total:.1%}")
    for reason, number in counts["rejected_by_reason"].items():
        if number:
            table.add_row(f"[yellow]rejected: {reason}", f"{number:,}", f"{number / total:.1%}")
    table.add_row("[bold]total", f"{counts['rows']:,}", "100%")
    return table


def print_report(manifest: dict[str, Any], store: Store, *, reused: bool) -> None:
    source = manifest["source"]
    console.print(report_table(manifest))
    console.print(
        f"source [bold]{source['filename']}[/] ({source['format']}"
        f"{', ' + source['encoding'] if source.get('encoding') else ''}), "
        f"text column [bold]{source['text_column']}[/], "
        f"id column [bold]{source.get('id_column') or '(none: row numbers)'}[/]",
        highlight=False,
    )
    note = " (already ingested: nothing redone)" if reused else ""
    console.print(
        f"dataset [bold cyan]{manifest['dataset_id']}[/] at "
        f"{store.uri('datasets/' + manifest['dataset_id'])}{note}",
        highlight=False,
    )


@friendly_errors
def ingest_command(
    file: Annotated[Path, typer.Argument(help="CSV, XLSX, JSONL or Parquet export.")],
    text_column: Annotated[
        str | None, typer.Option(help="Column holding the complaint text (default: detected).")
    ] = None,
    sheet: Annotated[str | None, typer.Option(help="XLSX: only this sheet (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Clean, validate and de-duplicate an export into a versioned dataset."""
    configure_logging("ingest-cli", level="WARNING")
    if not file.is_file():
        raise fail(f"file {file} does not exist")
    store = Store.from_settings()
    options = IngestOptions.from_settings(text_column=text_column, sheet=sheet)
    with StageProgress(transient=as_json) as progress:
        result = ingest_bytes(file.read_bytes(), file.name, options, store, progress=progress)
    if as_json:
        console.print_json(json.dumps(result.manifest, ensure_ascii=False))
    else:
        print_report(result.manifest, store, reused=result.reused)


@datasets_app.command("list")
@friendly_errors
def list_command() -> None:
    """List the datasets in the store."""
    store = Store.from_settings()
    table = Table(title=f"datasets in {store.url}")
    table.add_column("dataset", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("file", overflow="fold")
    for column in ("rows", "clean", "rejected"):
        table.add_column(column, justify="right")
    for dataset_id in store.children("datasets"):
        manifest = load_manifest(store, dataset_id)
        if manifest is None:
            continue
        counts = manifest["counts"]
        table.add_row(
            dataset_id,
            manifest["created_at"][:19],
            manifest["source"]["filename"],
            f"{counts['rows']:,}",
            f"{counts['clean']:,}",
            f"{counts['rejected']:,}",
        )
    console.print(table)


@datasets_app.command("show")
@friendly_errors
def show_command(dataset_id: str) -> None:
    """Print the report of one dataset."""
    store = Store.from_settings()
    manifest = load_manifest(store, dataset_id)
    if manifest is None:
        raise fail(f"dataset {dataset_id} not found in {store.url}")
    print_report(manifest, store, reused=False)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.add_typer(datasets_app, name="datasets")
