"""CLI of the offline teacher stand-in: `tiqu teacher-stub --labels FILE [fault options]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.panel import Panel

from shared.console import console, fail
from shared.logging import configure_logging

_FAULTS = "Faults (rates 0..1, deterministic for --seed)"


def teacher_stub_command(
    labels: Annotated[
        list[Path],
        typer.Option(
            "--labels",
            help="Labels file written by `tiqu sample` (`<stem>.labels.jsonl`, or the export "
            "beside it); repeat for several.",
        ),
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8900,
    model: Annotated[str, typer.Option(help="The one model name served.")] = "tiqu-stub",
    api_key: Annotated[
        str, typer.Option(help="Bearer key clients must send (empty: no authentication).")
    ] = "stub-key",
    seed: Annotated[
        int, typer.Option(help="Seed of fault selection.", rich_help_panel=_FAULTS)
    ] = 0,
    latency_ms: Annotated[
        float, typer.Option(min=0, help="Mean answer latency.", rich_help_panel=_FAULTS)
    ] = 0.0,
    latency_jitter_ms: Annotated[
        float,
        typer.Option(min=0, help="Latency varies uniformly by ± this.", rich_help_panel=_FAULTS),
    ] = 0.0,
    rate_429: Annotated[
        float,
        typer.Option(min=0, max=1, help="429 with Retry-After.", rich_help_panel=_FAULTS),
    ] = 0.0,
    retry_after_s: Annotated[
        float, typer.Option(min=0, help="Retry-After of a 429, seconds.", rich_help_panel=_FAULTS)
    ] = 1.0,
    rate_500: Annotated[
        float, typer.Option(min=0, max=1, help="HTTP 500.", rich_help_panel=_FAULTS)
    ] = 0.0,
    rate_timeout: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Sleep --timeout-sleep-s before answering.", rich_help_panel=_FAULTS
        ),
    ] = 0.0,
    timeout_sleep_s: Annotated[
        float,
        typer.Option(
            min=0,
            help="Sleep of a timeout fault (beyond the client timeout).",
            rich_help_panel=_FAULTS,
        ),
    ] = 120.0,
    rate_malformed: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="HTTP 200 with a non-JSON or cut body.", rich_help_panel=_FAULTS
        ),
    ] = 0.0,
    rate_disconnect: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="HTTP 200 cut mid-body: the connection drops.",
            rich_help_panel=_FAULTS,
        ),
    ] = 0.0,
    rate_think: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Answer after a <think>…</think> block.", rich_help_panel=_FAULTS
        ),
    ] = 0.0,
    rate_fence: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Answer in a ```json fence with prose.", rich_help_panel=_FAULTS
        ),
    ] = 0.0,
    rate_hallucinate: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="Invented name/phone/email not in the text.",
            rich_help_panel=_FAULTS,
        ),
    ] = 0.0,
    rate_wrong_types: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Phone as a number, name as a list.", rich_help_panel=_FAULTS
        ),
    ] = 0.0,
    rate_truncated: Annotated[
        float,
        typer.Option(min=0, max=1, help="Answer cut inside the JSON.", rich_help_panel=_FAULTS),
    ] = 0.0,
    fail_first: Annotated[
        int,
        typer.Option(
            min=0,
            help="Every distinct prompt fails its first N attempts with 500.",
            rich_help_panel=_FAULTS,
        ),
    ] = 0,
) -> None:
    """Serve an OFFLINE stand-in for the teacher LLM (OpenAI protocol), answering from labels."""
    import uvicorn

    from services.distill.stub import FAULT_FIELDS, StubConfig, build_stub_app

    configure_logging("teacher-stub")
    try:
        config = StubConfig(
            labels=labels,
            model=model,
            api_key=api_key or None,
            seed=seed,
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            rate_429=rate_429,
            retry_after_s=retry_after_s,
            rate_500=rate_500,
            rate_timeout=rate_timeout,
            timeout_sleep_s=timeout_sleep_s,
            rate_malformed=rate_malformed,
            rate_disconnect=rate_disconnect,
            rate_think=rate_think,
            rate_fence=rate_fence,
            rate_hallucinate=rate_hallucinate,
            rate_wrong_types=rate_wrong_types,
            rate_truncated=rate_truncated,
            fail_first=fail_first,
        )
    except ValidationError as exc:
        raise fail(f"invalid option: {exc.errors()[0]['msg']}") from None
    with console.status("indexing labels"):
        try:
            app = build_stub_app(config)
        except (OSError, ValueError) as exc:
            raise fail(str(exc)) from None
    state = app.state.stub
    faults = ", ".join(
        f"{name}={getattr(config, name):g}"
        for name in FAULT_FIELDS
        if name.startswith("rate_") and getattr(config, name)
    )
    lines = [
        "[bold yellow]OFFLINE STAND-IN for a teacher LLM — this is NOT a real language model.[/]",
        f"It answers from {state.index.rows:,} ground-truth labels in "
        f"{len(config.labels)} file(s); unknown texts get null fields.",
        f"OpenAI-compatible API: [bold]http://{host}:{port}/v1[/]  model [bold]{model}[/]  "
        + (f"key [bold]{api_key}[/]" if api_key else "no authentication"),
        f"latency {latency_ms:g}±{latency_jitter_ms:g} ms; faults: {faults or 'none'}"
        + (f"; first {fail_first} attempt(s) of every prompt fail" if fail_first else ""),
        f"stats: http://{host}:{port}/stats",
    ]
    console.print(Panel("\n".join(lines), title="tiqu teacher-stub", expand=False))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )


def register(app: typer.Typer) -> None:
    """Add `tiqu teacher-stub` to the `tiqu` command."""
    app.command("teacher-stub")(teacher_stub_command)


def main() -> None:
    """Run the command alone (`python -m services.distill.stub_cli`)."""
    standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    standalone.command()(teacher_stub_command)
    standalone()


if __name__ == "__main__":
    main()
