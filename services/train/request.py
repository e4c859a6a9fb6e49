"""What a training is asked to do, and every check of it that needs no model.

Nothing here imports torch: the API validates requests and derives their ids with this module
alone, and the worker loads the training code only when a task runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.train.data import DistillRun, find_run, load_split, require_examples
from shared import adapters, labelsets
from shared.anchors import TargetForm
from shared.errors import InvalidInputError
from shared.models import check_base_model_reference
from shared.schema import get_schema
from shared.settings import Settings
from shared.store import Store

# Part of every train run id: bump when the same request would now train differently.
PIPELINE_VERSION = "1"
TRAIN_RUN_ID = re.compile(r"^tr-[0-9a-f]{16}$")


class TrainParams(BaseModel):
    """LoRA on every linear layer of the base model, AdamW, linear warm-up then linear decay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(ge=1, le=256)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    learning_rate: float = Field(gt=0, le=1)
    epochs: int = Field(ge=1, le=100)
    batch_size: int = Field(ge=1, le=512)
    max_length: int = Field(ge=16)
    patience: int = Field(ge=0)
    gradient_checkpointing: bool
    seed: int
    target_form: TargetForm = "copy"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_minutes: float | None = Field(None, gt=0)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainParams:
        """Settings' `train_*` values, replaced by every override that is not None."""
        values = {
            "rank": settings.train_rank,
            "alpha": settings.train_alpha,
            "dropout": settings.train_dropout,
            "learning_rate": settings.train_learning_rate,
            "epochs": settings.train_epochs,
            "batch_size": settings.train_batch_size,
            "max_length": settings.train_max_length,
            "patience": settings.train_patience,
            "gradient_checkpointing": settings.train_gradient_checkpointing,
            "seed": settings.train_seed,
            "target_form": settings.train_target_form,
            "max_minutes": settings.train_max_minutes,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_servable(self, max_rank: int) -> None:
        """Refuse, before any work, a rank the serving engine would not load."""
        if self.rank > max_rank:
            raise InvalidInputError(
                f"LoRA rank {self.rank} is above the serving limit of {max_rank} "
                "(TIQU_SERVE_MAX_LORA_RANK)",
                param="rank",
                code="rank_above_limit",
            )


@dataclass(frozen=True)
class TrainRequest:
    """Train adapter `name` on distill run `run_id` with `params`, then maybe promote it.

    `labelsets` are pinned label set versions (`name@vN`) whose rows train beside the run's
    train split: pinned, so that the same request always means the same rows.
    """

    run_id: str
    name: str
    params: TrainParams
    promote: bool = True
    labelsets: tuple[str, ...] = ()

    def train_run_id(self, settings: Settings) -> str:
        """`tr-<hash>`: the same request on the same base model always has the same id."""
        # Copy-form trainings keep the ids they had before the form was a choice.
        unchosen = {"target_form"} if self.params.target_form == "copy" else None
        basis = {
            "run_id": self.run_id,
            "name": self.name,
            "params": self.params.model_dump(exclude=unchosen),
            "base_model": settings.base_model,
            "schema": get_schema().version,
            "pipeline": PIPELINE_VERSION,
        }
        if self.labelsets:
            # Only when used, so that the ids of trainings without label sets stay as they were.
            basis["labelsets"] = list(self.labelsets)
        digest = hashlib.sha256(json.dumps(basis, sort_keys=True).encode("utf-8")).hexdigest()
        return f"tr-{digest[:16]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "params": self.params.model_dump(),
            "promote": self.promote,
            "labelsets": list(self.labelsets),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRequest:
        return cls(
            run_id=data["run_id"],
            name=data["name"],
            params=TrainParams(**data["params"]),
            promote=data["promote"],
            # Requests stored before label sets existed have none.
            labelsets=tuple(data.get("labelsets", ())),
        )


def pin_labelsets(store: Store, references: Iterable[str]) -> tuple[str, ...]:
    """Each label set reference (`name` or `name@vN`) as the version it means now, once each;
    an unknown set or version is not found."""
    return tuple(dict.fromkeys(labelsets.pin(store, reference) for reference in references))


def validate(store: Store, settings: Settings, request: TrainRequest) -> DistillRun:
    """Every check that needs no model, so bad input fails before any work or registration."""
    adapters.check_name(request.name)
    request.params.check_servable(settings.serve_max_lora_rank)
    check_base_model_reference(settings)
    run = find_run(store, request.run_id)
    for split in ("train", "test"):
        require_examples(load_split(store, run, split), run.run_id, split)
    for reference in request.labelsets:
        if labelsets.pin(store, reference) != reference:
            raise InvalidInputError(
                f"label set {reference!r} must name its version (name@vN)", param="labels"
            )
    return run
