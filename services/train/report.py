"""An evaluation for people: `report.md` and PNG charts beside `eval.json` in the adapter folder."""

from __future__ import annotations

import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt

from shared.adapters import EVAL_FILE, REPORT_FILE

LOSS_CHART = "loss.png"
FIELDS_CHART = "fields.png"


def render_outputs(evaluation: dict[str, Any], training: dict[str, Any] | None) -> dict[str, bytes]:
    """eval.json, report.md and charts, by file name."""
    files = {EVAL_FILE: json.dumps(evaluation, ensure_ascii=False, indent=2).encode("utf-8")}
    if training and training.get("losses"):
        files[LOSS_CHART] = loss_chart(training)
    files[FIELDS_CHART] = fields_chart(evaluation)
    files[REPORT_FILE] = markdown(evaluation, training, charts=set(files)).encode("utf-8")
    return files


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def loss_chart(training: dict[str, Any]) -> bytes:
    """Training loss per step (raw and smoothed) and validation loss per epoch."""
    steps, losses = zip(*training["losses"], strict=True)
    window = max(1, len(losses) // 10)
    smoothed = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="train (per step)")
    axis.plot(steps, smoothed, color="#08519c", linewidth=1.6, label=f"train ({window}-step mean)")
    validated = [e for e in training.get("epochs", []) if e.get("val_loss") is not None]
    if validated:
        axis.plot(
            [e["step"] for e in validated],
            [e["val_loss"] for e in validated],
            "o-",
            color="#e6550d",
            label="validation (per epoch)",
        )
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss per answer token")
    axis.set_yscale("log")
    axis.set_title("LoRA training loss")
    axis.legend()
    return _png(figure)


def fields_chart(evaluation: dict[str, Any]) -> bytes:
    """Exact match and F1 per field, base model against adapter, on the first evaluated set."""
    name, entry = next(iter(evaluation["sets"].items()))
    fields = list(entry["adapter"]["fields"])
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    width = 0.38
    positions = range(len(fields))
    for axis, metric in zip(axes, ("exact_match", "f1"), strict=True):
        for offset, variant, color in (
            (-width / 2, "base", "#bdbdbd"),
            (width / 2, "adapter", "#3182bd"),
        ):
            if variant not in entry:
                continue
            values = [entry[variant]["fields"][f][metric] or 0.0 for f in fields]
            axis.bar([p + offset for p in positions], values, width, label=variant, color=color)
        axis.set_xticks(list(positions), fields)
        axis.set_ylim(0, 1.2)
        axis.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        axis.set_title(metric.replace("_", " "))
        axis.legend(loc="upper center", ncol=2)
    figure.suptitle(f"{name}: {entry['rows']} rows")
    return _png(figure)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(evaluation: dict[str, Any], training: dict[str, Any] | None, charts: set[str]) -> str:
    adapter = evaluation.get("adapter") or {}
    base = evaluation["base_model"]
    title = f"{adapter.get('name', 'adapter')}:{adapter.get('version', '(unregistered)')}"
    lines = [
        f"# Adapter {title}",
        "",
        f"Base model `{base['model_id']}` (weights `{base['weights_sha256'][:12]}`), "
        f"evaluated {evaluation['created_at'][:19]} UTC with greedy decoding, "
        f"at most {evaluation['generation']['max_new_tokens']} new tokens.",
        "",
    ]
    if training:
        lines += _training_section(training, LOSS_CHART in charts)
    for name, entry in evaluation["sets"].items():
        lines += _set_section(name, entry)
    if FIELDS_CHART in charts:
        lines += [f"![exact match and F1 per field]({FIELDS_CHART})", ""]
    return "\n".join(lines)


def _training_section(training: dict[str, Any], chart: bool) -> list[str]:
    stop = (
        "early stop"
        if training.get("stopped_early")
        else "cut to the time budget"
        if training.get("stopped_by_budget")
        else "all epochs"
    )
    lines = [
        "## Training",
        "",
        f"{training['train_examples']} train / {training['val_examples']} validation examples "
        f"({training['too_long']} left out as longer than the maximum length); "
        f"{training['steps']} steps, {stop}, best epoch {training['best_epoch']}; "
        f"{training['tokens_per_s']:.0f} tokens/s on {training['device']}, "
        f"{training['seconds'] / 60:.1f} min.",
        "",
        "| epoch | step | train loss | validation loss |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {e['epoch']} | {e['step']} | {_num(e['train_loss'])} | {_num(e['val_loss'])} |"
        for e in training["epochs"]
    ]
    lines.append("")
    if chart:
        lines += [f"![training and validation loss]({LOSS_CHART})", ""]
    return lines


def _set_section(name: str, entry: dict[str, Any]) -> list[str]:
    variants = [v for v in ("base", "adapter") if v in entry]
    lines = [
        f"## {name}: {entry['source']} ({entry['rows']} rows)",
        "",
        "| | " + " | ".join(variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    for metric, label in (
        ("json_valid", "valid JSON"),
        ("schema_valid", "valid against the schema"),
        ("all_fields_correct", "all fields correct"),
    ):
        lines.append(f"| {label} | " + " | ".join(_pct(entry[v][metric]) for v in variants) + " |")
    lines += [
        "",
        "| field | exact match (base) | exact match | precision | recall | F1 "
        "| hallucinations | omissions | wrong values | character similarity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base_fields = entry["base"]["fields"] if "base" in entry else {}
    for field, s in entry["adapter"]["fields"].items():
        before = _pct(base_fields[field]["exact_match"]) if field in base_fields else "–"
        lines.append(
            f"| {field} | {before} | {_pct(s['exact_match'])} | {_pct(s['precision'])} "
            f"| {_pct(s['recall'])} | {_pct(s['f1'])} | {s['hallucinations']} "
            f"| {s['omissions']} | {s['wrong_values']} | {_num(s['similarity'], 3)} |"
        )
    lines.append("")
    return lines
