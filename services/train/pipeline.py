"""A training run end to end: distill run and label sets → LoRA training → lint → evaluation →
registry → alias.

The CLI runs it in-process, the `train.run` Celery task in a worker. Its id is derived from what
it trains (`TrainRequest.train_run_id`), so the same request again resumes it from its checkpoint
or, once registered, returns its adapter without training.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from services.train.data import (
    EvalSet,
    Example,
    encode_examples,
    find_run,
    in_target_form,
    load_gold,
    load_labelset,
    load_split,
    with_labelsets,
)
from services.train.evaluate import Evaluator, Generation, StageCallback, no_stage
from services.train.report import render_outputs
from services.train.request import TrainRequest, validate
from services.train.trainer import LoraTrainer, TrainProgress, TrainState
from shared import adapters
from shared.errors import InvalidInputError
from shared.models import ResolvedModel, pick_device, pick_dtype, resolve_base_model
from shared.schema import get_schema
from shared.settings import Settings
from shared.store import Store

log = logging.getLogger(__name__)

# The set whose adapter scores go into the manifest and decide promotion.
PRIMARY_SET = "test"

StepCallback = Callable[[TrainProgress], None]


@dataclass(frozen=True)
class TrainOutcome:
    train_run_id: str
    manifest: dict[str, Any]
    promoted: bool
    promotion: str
    reused: bool

    def summary(self) -> dict[str, Any]:
        """What the job status and the API report: ids, metrics, promotion; never text."""
        return {
            "train_run_id": self.train_run_id,
            "adapter": {"name": self.manifest["name"], "version": self.manifest["version"]},
            "metrics": self.manifest["metrics"],
            "promoted": self.promoted,
            "promotion": self.promotion,
            "reused": self.reused,
        }


def run_training(
    store: Store,
    settings: Settings,
    request: TrainRequest,
    *,
    on_stage: StageCallback = no_stage,
    on_step: StepCallback | None = None,
) -> TrainOutcome:
    """Train, lint, evaluate, register and (maybe) promote; resumable and idempotent."""
    train_run_id = request.train_run_id(settings)
    existing = adapters.find_by_train_run(store, request.name, train_run_id)
    if existing is not None:
        alias = adapters.read_alias(store, request.name) or {}
        promoted = alias.get("version") == existing["version"]
        return TrainOutcome(train_run_id, existing, promoted, "already registered", reused=True)
    run = validate(store, settings, request)
    schema = get_schema()
    splits = {split: load_split(store, run, split) for split in ("train", "val", "test")}
    train_examples, labelset_uses = with_labelsets(
        splits["train"],
        [*splits["val"], *splits["test"]],
        {reference: load_labelset(store, reference) for reference in request.labelsets},
    )

    base = load_base(settings, on_stage)
    resolved, tokenizer = base.resolved, base.tokenizer
    params = request.params
    train, too_long = encode_examples(
        tokenizer,
        in_target_form(train_examples, schema, params.target_form),
        resolved.eos_token,
        params.max_length,
    )
    val, val_too_long = encode_examples(
        tokenizer,
        in_target_form(splits["val"], schema, params.target_form),
        resolved.eos_token,
        params.max_length,
    )
    if not train:
        raise InvalidInputError(
            f"every train example of {run.run_id} is longer than {params.max_length} tokens",
            param="max_length",
        )
    work_dir = Path(settings.train_work_dir) / train_run_id
    trainer = LoraTrainer(
        base.model,
        params,
        pad_id=tokenizer.pad_token_id,
        work_dir=work_dir,
        fingerprint=train_run_id,
        checkpoint_every=settings.train_checkpoint_every,
    )
    log.info("training started", extra={"train_run_id": train_run_id, "examples": len(train)})
    state = trainer.fit(train, val, on_step)
    adapter_dir = trainer.save_adapter(work_dir / "adapter", resolved.model_id)
    adapters.require_lint(
        adapter_dir,
        max_rank=settings.serve_max_lora_rank,
        trained_on_sha256=resolved.weights_sha256,
        base_sha256=resolved.weights_sha256,
    )
    training = _training_summary(state, base, len(train), len(val))
    training["too_long"] = too_long + val_too_long

    evaluator = Evaluator(
        trainer.model,
        tokenizer,
        generation_settings(settings, resolved, tokenizer),
        schema,
        on_stage,
        params.target_form,
    )
    test_set = scored_test_split(run.run_id, splits["test"], settings.eval_max_rows)
    evaluation = {"sets": evaluator.evaluate([test_set], include_base=settings.eval_base_model)}
    version = adapters.claim_version(store, request.name, train_run_id)
    promote, promotion, comparison = _promotion_decision(
        store,
        settings,
        request,
        resolved,
        evaluator,
        test_set,
        run.run_id,
        evaluation["sets"][PRIMARY_SET]["adapter"],
    )
    if comparison is not None:
        evaluation["comparison"] = comparison
    document = evaluation_document(
        evaluation, resolved, evaluator.generation, request.name, version
    )
    manifest = {
        "train_run_id": train_run_id,
        "dataset_id": run.dataset_id,
        "run_id": run.run_id,
        "labelsets": [use.as_dict() for use in labelset_uses],
        "schema_version": schema.version,
        "base_model": _identity(resolved),
        "hyperparameters": params.model_dump(),
        "training": training,
        "metrics": primary_metrics(document, run.run_id),
        "probe": evaluator.probe_values(),
        "lint": "passed",
    }
    on_stage("register", 0, 1)
    registered = adapters.register(
        store,
        request.name,
        version,
        adapter_dir,
        manifest,
        {**render_outputs(document, training), **adapters.schema_file(schema)},
    )
    if promote:
        adapters.promote(store, request.name, version, reason=promotion)
    on_stage("register", 1, 1)
    shutil.rmtree(work_dir, ignore_errors=True)
    log.info(
        "training registered",
        extra={"train_run_id": train_run_id, "version": version, "promoted": promote},
    )
    return TrainOutcome(train_run_id, registered, promote, promotion, reused=False)


def scored_test_split(run_id: str, test: Sequence[Example], max_rows: int | None) -> EvalSet:
    """A run's test split to score; with `max_rows`, a fixed sample of it.

    The sample is drawn from the run id, so every version trained on the run is scored on the
    same rows and promotion compares like with like.
    """
    if max_rows is None or len(test) <= max_rows:
        return EvalSet(PRIMARY_SET, f"test split of {run_id}", test)
    picked = sorted(random.Random(run_id).sample(range(len(test)), max_rows))
    return EvalSet(
        PRIMARY_SET,
        f"{max_rows} of the {len(test)} rows of the test split of {run_id}",
        [test[i] for i in picked],
    )


def evaluate_adapter(
    store: Store,
    settings: Settings,
    reference: str,
    *,
    run_id: str | None,
    gold: Sequence[Path] = (),
    include_base: bool = True,
    on_stage: StageCallback = no_stage,
) -> dict[str, Any]:
    """Score a registered adapter (and the base model) on a run's test split and gold files;
    writes eval.json, report.md and the charts into the adapter's folder.
    """
    manifest = adapters.resolve(store, reference)
    name, version = manifest["name"], manifest["version"]
    schema = get_schema()
    sets = []
    if run_id is not None:
        run = find_run(store, run_id)
        test = load_split(store, run, "test")
        if not test:
            raise InvalidInputError(f"distill run {run_id} has an empty test split", param="run")
        sets.append(scored_test_split(run_id, test, settings.eval_max_rows))
    sets += [EvalSet(f"gold {path.name}", str(path), load_gold(path, schema)) for path in gold]
    if not sets:
        raise InvalidInputError("nothing to evaluate: give a distill run or a gold file")

    base = load_base(settings, on_stage)
    resolved, tokenizer = base.resolved, base.tokenizer
    with tempfile.TemporaryDirectory(prefix="tiqu-eval-") as scratch:
        folder = adapters.download(store, name, version, Path(scratch))
        adapters.require_lint(
            folder,
            max_rank=settings.serve_max_lora_rank,
            trained_on_sha256=manifest["base_model"]["weights_sha256"],
            base_sha256=resolved.weights_sha256,
        )
        model = PeftModel.from_pretrained(base.model, folder)
    evaluator = Evaluator(
        model.eval(),
        tokenizer,
        generation_settings(settings, resolved, tokenizer),
        schema,
        on_stage,
        adapters.target_form(manifest),
    )
    evaluation = {"sets": evaluator.evaluate(sets, include_base=include_base)}
    document = evaluation_document(evaluation, resolved, evaluator.generation, name, version)
    adapters.write_files(store, name, version, render_outputs(document, manifest.get("training")))
    return document


@dataclass(frozen=True)
class LoadedBase:
    resolved: ResolvedModel
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    device: torch.device
    dtype: torch.dtype


def load_base(settings: Settings, on_stage: StageCallback) -> LoadedBase:
    """The base model (converted or downloaded on first use) on the training device."""
    on_stage("base model", 0, 1)
    if settings.train_threads:
        torch.set_num_threads(settings.train_threads)
    resolved = resolve_base_model(settings)
    device = pick_device(settings.train_device)
    dtype = pick_dtype(device)
    base = LoadedBase(
        resolved, resolved.load_tokenizer(), resolved.load_model(device, dtype), device, dtype
    )
    on_stage("base model", 1, 1)
    return base


def generation_settings(
    settings: Settings, resolved: ResolvedModel, tokenizer: PreTrainedTokenizerBase
) -> Generation:
    return Generation(
        batch_size=settings.eval_batch_size,
        max_new_tokens=settings.eval_max_new_tokens,
        eos_token_id=resolved.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def evaluation_document(
    evaluation: dict[str, Any],
    resolved: ResolvedModel,
    generation: Generation,
    name: str,
    version: str,
) -> dict[str, Any]:
    """eval.json: which adapter, on which base, decoded how, and the scores per set."""
    return {
        "adapter": {"name": name, "version": version},
        "base_model": _identity(resolved),
        "created_at": datetime.now(UTC).isoformat(),
        "generation": generation.describe(),
        **evaluation,
    }


def primary_metrics(document: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The manifest's summary: the adapter (and the base model) on the run's test split."""
    entry = document["sets"][PRIMARY_SET]
    adapter = entry["adapter"]
    return {
        "set": PRIMARY_SET,
        "run_id": run_id,
        "rows": entry["rows"],
        "json_valid": adapter["json_valid"],
        "schema_valid": adapter["schema_valid"],
        "all_fields_correct": adapter["all_fields_correct"],
        "exact_match": {f: s["exact_match"] for f, s in adapter["fields"].items()},
        "f1": {f: s["f1"] for f, s in adapter["fields"].items()},
        "base_exact_match": {
            f: s["exact_match"] for f, s in entry.get("base", {}).get("fields", {}).items()
        },
    }


def _identity(resolved: ResolvedModel) -> dict[str, Any]:
    return {k: v for k, v in resolved.describe().items() if k != "path"}


def _training_summary(
    state: TrainState, base: LoadedBase, train_examples: int, val_examples: int
) -> dict[str, Any]:
    return {
        "device": str(base.device),
        "dtype": str(base.dtype).removeprefix("torch."),
        "train_examples": train_examples,
        "val_examples": val_examples,
        "steps": state.step,
        "epochs_run": len(state.epochs),
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss,
        "stopped_early": state.stopped_early,
        "stopped_by_budget": state.stopped_by_budget,
        "resumed_at_step": state.resumed_at_step,
        "tokens": state.train_tokens,
        "tokens_per_s": round(state.tokens_per_s, 1),
        "seconds": round(state.step_seconds, 1),
        "epochs": state.epochs,
        "losses": state.losses,
    }


def _promotion_decision(
    store: Store,
    settings: Settings,
    request: TrainRequest,
    resolved: ResolvedModel,
    evaluator: Evaluator,
    test_set: EvalSet,
    run_id: str,
    scores: dict[str, Any],
) -> tuple[bool, str, dict[str, Any] | None]:
    """Whether the new adapter replaces the promoted one: as good on every field (within the
    margin), both measured on this run's test split whenever the promoted one runs on this base.
    """
    if not request.promote:
        return False, "automatic promotion turned off", None
    alias = adapters.read_alias(store, request.name)
    current = adapters.load_manifest(store, request.name, alias["version"]) if alias else None
    if current is None:
        return True, f"first version of {request.name}", None
    label = f"{request.name}:{current['version']}"
    if current["metrics"]["run_id"] == run_id:
        before = current["metrics"]["exact_match"]
        basis = "recorded scores on the same test split"
    elif current["base_model"]["weights_sha256"] == resolved.weights_sha256:
        with tempfile.TemporaryDirectory(prefix="tiqu-current-") as scratch:
            folder = adapters.download(store, request.name, current["version"], Path(scratch))
            other = evaluator.scores_of_other(folder, test_set, adapters.target_form(current))
        before = {f: s["exact_match"] for f, s in other["fields"].items()}
        basis = "the same test split, re-evaluated"
    else:
        before = current["metrics"]["exact_match"]
        basis = "recorded scores (another base model, other test rows)"
    new = {f: s["exact_match"] for f, s in scores["fields"].items()}
    worse = adapters.regressions(new, before, settings.promotion_margin)
    comparison = {"against": label, "basis": basis, "exact_match": before, "regressed": worse}
    if worse:
        return False, f"worse than {label} on {', '.join(worse)} ({basis})", comparison
    return True, f"at least as good as {label} on every field ({basis})", comparison
