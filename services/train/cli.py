"""CLI commands of the train service: `tiqu train`, `tiqu eval` and `tiqu adapters ...`."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from services.train.request import TrainParams, TrainRequest, pin_labelsets, validate
from shared import adapters
from shared.console import StageProgress, console, friendly_errors
from shared.logging import configure_logging
from shared.settings import get_settings
from shared.store import Layout, Store

if TYPE_CHECKING:
    from services.train.trainer import TrainProgress

adapters_app = typer.Typer(
    help="The adapter registry: list, inspect, promote.", no_args_is_help=True
)

_HYPER = "Hyperparameters (default: the TIQU_TRAIN_* settings)"


class TargetFormChoice(StrEnum):
    copy = "copy"
    anchors = "anchors"


def show_step(display: StageProgress) -> Callable[[TrainProgress], None]:
    """Feed optimizer steps to the `train` bar with epoch, loss and tokens/s beside it."""

    def step(progress: TrainProgress) -> None:
        display.update(
            "train",
            progress.step,
            progress.total_steps,
            info=f"epoch {progress.epoch}/{progress.epochs}  loss {progress.loss:.4f}  "
            f"{progress.tokens_per_s:,.0f} tok/s",
        )

    return step


def _fields_table(title: str, adapter: dict[str, Any], base: dict[str, Any] | None) -> Table:
    table = Table(title=title)
    for column in (
        "field",
        "exact (base)",
        "exact",
        "precision",
        "recall",
        "F1",
        "halluc.",
        "omitted",
    ):
        table.add_column(column, justify="left" if column == "field" else "right")
    for field, s in adapter["fields"].items():
        before = base["fields"][field]["exact_match"] if base else None
        table.add_row(
            field,
            _pct(before),
            f"[bold]{_pct(s['exact_match'])}",
            _pct(s["precision"]),
            _pct(s["recall"]),
            _pct(s["f1"]),
            str(s["hallucinations"]),
            str(s["omissions"]),
        )
    for metric, label in (("json_valid", "valid JSON"), ("all_fields_correct", "all correct")):
        table.add_row(
            f"[italic]{label}",
            _pct(base[metric]) if base else "–",
            f"[bold]{_pct(adapter[metric])}",
        )
    return table


def _manifest_table(manifest: dict[str, Any]) -> Table:
    """A version's recorded test scores: exact match of base and adapter, and F1, per field."""
    metrics = manifest["metrics"]
    table = Table(
        title=f"{manifest['name']}:{manifest['version']} on the test split of "
        f"{metrics['run_id']} ({metrics['rows']} rows)"
    )
    for column in ("field", "exact (base)", "exact", "F1"):
        table.add_column(column, justify="left" if column == "field" else "right")
    for field, value in metrics["exact_match"].items():
        table.add_row(
            field,
            _pct(metrics["base_exact_match"].get(field)),
            f"[bold]{_pct(value)}",
            _pct(metrics["f1"][field]),
        )
    table.add_row("[italic]valid JSON", "", f"[bold]{_pct(metrics['json_valid'])}", "")
    table.add_row("[italic]all correct", "", f"[bold]{_pct(metrics['all_fields_correct'])}", "")
    return table


def _report_uri(store: Store, manifest: dict[str, Any]) -> str:
    return store.uri(Layout.adapter(manifest["name"], manifest["version"], adapters.REPORT_FILE))


def _labelsets_note(manifest: dict[str, Any]) -> str:
    """` + corrections@v3 (12 rows)` for each label set the version was trained on as well."""
    return "".join(
        f" + {use['labelset']} ({use['used']} rows)" for use in manifest.get("labelsets", [])
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


@friendly_errors
def train_command(
    run_id: Annotated[str, typer.Argument(help="Distill run to train on.")],
    name: Annotated[
        str | None, typer.Option(help="Adapter name in the registry (default: TIQU_ADAPTER_NAME).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, rich_help_panel=_HYPER)] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--lr", min=0, rich_help_panel=_HYPER)
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Time budget for the training steps: the run is cut to the steps that fit, "
            "timed on its first steps (default: TIQU_TRAIN_MAX_MINUTES, none).",
            rich_help_panel=_HYPER,
            show_default=False,
        ),
    ] = None,
    rank: Annotated[int | None, typer.Option(min=1, rich_help_panel=_HYPER)] = None,
    alpha: Annotated[int | None, typer.Option(min=1, rich_help_panel=_HYPER)] = None,
    dropout: Annotated[float | None, typer.Option(min=0, rich_help_panel=_HYPER)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, rich_help_panel=_HYPER)] = None,
    max_length: Annotated[int | None, typer.Option(min=16, rich_help_panel=_HYPER)] = None,
    patience: Annotated[int | None, typer.Option(min=0, rich_help_panel=_HYPER)] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option(rich_help_panel=_HYPER, show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option(rich_help_panel=_HYPER)] = None,
    target_form: Annotated[
        TargetFormChoice | None,
        typer.Option(
            help="`anchors`: free-text fields learnt as their first and last characters only "
            "(default: TIQU_TRAIN_TARGET_FORM).",
            rich_help_panel=_HYPER,
            show_default=False,
        ),
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Promote the new version if at least as good on every field.")
    ] = True,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            help="Label set to train on beside the run: NAME (its latest version) or NAME@vN "
            "(repeatable).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a LoRA adapter on a distill run (and label sets), evaluate it, register it and maybe
    promote it."""
    configure_logging("train-cli", level="WARNING")
    settings = get_settings()
    store = Store.from_settings()
    params = TrainParams.from_settings(
        settings,
        epochs=epochs,
        learning_rate=learning_rate,
        max_minutes=max_minutes,
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        batch_size=batch_size,
        max_length=max_length,
        patience=patience,
        gradient_checkpointing=gradient_checkpointing,
        seed=seed,
        target_form=target_form.value if target_form else None,
    )
    request = TrainRequest(
        run_id,
        name or settings.adapter_name,
        params,
        promote,
        labelsets=pin_labelsets(store, labels or []),
    )
    validate(store, settings, request)
    from services.train.pipeline import run_training

    with StageProgress(transient=as_json, fields=("info",), label_width=12) as display:
        outcome = run_training(
            store, settings, request, on_stage=display, on_step=show_step(display)
        )
    if as_json:
        console.print_json(json.dumps(outcome.summary(), ensure_ascii=False))
        return
    manifest = outcome.manifest
    console.print(_manifest_table(manifest))
    note = " (already trained: nothing redone)" if outcome.reused else ""
    verdict = "[green]promoted" if outcome.promoted else "[yellow]not promoted"
    console.print(
        f"adapter [bold cyan]{manifest['name']}:{manifest['version']}[/]{note}: {verdict}[/] "
        f"({outcome.promotion})",
        highlight=False,
    )
    console.print(f"report: {_report_uri(store, manifest)}", highlight=False)


@friendly_errors
def eval_command(
    adapter: Annotated[str, typer.Argument(help="NAME (the promoted version) or NAME:VERSION.")],
    run: Annotated[
        str | None,
        typer.Option(help="Distill run whose test split to score (default: the training's)."),
    ] = None,
    gold: Annotated[
        list[Path] | None,
        typer.Option(help="Labelled JSONL to score as well (repeatable).", show_default=False),
    ] = None,
    base: Annotated[bool, typer.Option(help="Score the bare base model too.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print eval.json.")] = False,
) -> None:
    """Score an adapter (and its base model) field by field; writes eval.json, report.md, charts."""
    configure_logging("train-cli", level="WARNING")
    settings = get_settings()
    store = Store.from_settings()
    manifest = adapters.resolve(store, adapter)
    from services.train.pipeline import evaluate_adapter

    with StageProgress(transient=as_json, label_width=12) as display:
        document = evaluate_adapter(
            store,
            settings,
            f"{manifest['name']}:{manifest['version']}",
            run_id=run or manifest["run_id"],
            gold=gold or [],
            include_base=base,
            on_stage=display,
        )
    if as_json:
        console.print_json(json.dumps(document, ensure_ascii=False))
        return
    label = f"{manifest['name']}:{manifest['version']}"
    for name, entry in document["sets"].items():
        console.print(
            _fields_table(
                f"{label} — {name} ({entry['rows']} rows)", entry["adapter"], entry.get("base")
            )
        )
    console.print(f"report: {_report_uri(store, manifest)}", highlight=False)


@adapters_app.command("list")
@friendly_errors
def list_command() -> None:
    """Every registered adapter version with its test scores; ★ marks the promoted ones."""
    store = Store.from_settings()
    table = Table(title=f"adapters in {store.url}")
    table.add_column("adapter", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for column in ("base model", "distill run", "valid JSON", "all correct", "exact match"):
        table.add_column(column, overflow="fold")
    for name in adapters.names(store):
        alias = adapters.read_alias(store, name) or {}
        for version in adapters.versions(store, name):
            manifest = adapters.load_manifest(store, name, version) or {}
            metrics = manifest.get("metrics", {})
            star = " ★" if alias.get("version") == version else ""
            table.add_row(
                f"{name}:{version}{star}",
                manifest.get("created_at", "")[:19],
                manifest.get("base_model", {}).get("model_id", "?"),
                manifest.get("run_id", "?"),
                _pct(metrics.get("json_valid")),
                _pct(metrics.get("all_fields_correct")),
                " ".join(f"{f} {_pct(v)}" for f, v in metrics.get("exact_match", {}).items()),
            )
    console.print(table)


@adapters_app.command("show")
@friendly_errors
def show_command(
    adapter: Annotated[str, typer.Argument(help="NAME (the promoted version) or NAME:VERSION.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Print an adapter version's manifest: base model, data, hyperparameters, scores."""
    store = Store.from_settings()
    manifest = adapters.resolve(store, adapter)
    if as_json:
        console.print_json(json.dumps(manifest, ensure_ascii=False))
        return
    alias = adapters.read_alias(store, manifest["name"]) or {}
    promoted = " ★ promoted" if alias.get("version") == manifest["version"] else ""
    base = manifest["base_model"]
    training = manifest["training"]
    lines = (
        f"[bold cyan]{manifest['name']}:{manifest['version']}[/]{promoted}, "
        f"created {manifest['created_at'][:19]}",
        f"base model {base['model_id']} (weights {base['weights_sha256'][:12]}, "
        f"chat template {base['chat_template_sha256'][:12]})",
        f"trained on {manifest['run_id']} of {manifest['dataset_id']}"
        f"{_labelsets_note(manifest)}: {training['train_examples']} examples, "
        f"{training['steps']} steps, "
        f"{training['tokens_per_s']:.0f} tokens/s on {training['device']}",
        "hyperparameters " + ", ".join(f"{k}={v}" for k, v in manifest["hyperparameters"].items()),
    )
    for line in lines:
        console.print(line, highlight=False)
    console.print(_manifest_table(manifest))
    console.print(f"report: {_report_uri(store, manifest)}", highlight=False)


@adapters_app.command("promote")
@friendly_errors
def promote_command(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    version: Annotated[str, typer.Argument(help="Version to serve, e.g. v3.")],
) -> None:
    """Point NAME at VERSION (serving follows) and announce `adapter.promoted`."""
    configure_logging("train-cli", level="WARNING")
    store = Store.from_settings()
    adapters.parse_ref(f"{name}:{version}")
    alias = adapters.promote(store, name, version, reason="promoted by hand")
    previous = alias["previous_version"] or "nothing"
    console.print(f"[green]{name}[/] now serves [bold]{version}[/] (was {previous})")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("eval")(eval_command)
    app.add_typer(adapters_app, name="adapters")
