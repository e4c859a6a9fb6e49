"""Request and response models of the train API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.jobs import JobState


class TrainRunCreate(BaseModel):
    """Train an adapter on a distill run; unset hyperparameters come from the settings."""

    run_id: str = Field(max_length=128, description="The distill run to train on.")
    name: str | None = Field(
        None, max_length=63, description="Adapter name in the registry (default: settings)."
    )
    rank: int | None = Field(None, ge=1, le=256)
    alpha: int | None = Field(None, ge=1)
    dropout: float | None = Field(None, ge=0, lt=1)
    learning_rate: float | None = Field(None, gt=0, le=1)
    epochs: int | None = Field(None, ge=1, le=100)
    batch_size: int | None = Field(None, ge=1, le=512)
    max_length: int | None = Field(None, ge=16)
    patience: int | None = Field(None, ge=0)
    gradient_checkpointing: bool | None = None
    seed: int | None = None
    target_form: Literal["copy", "anchors"] | None = Field(
        None,
        description="`anchors`: free-text fields learnt as their first and last characters "
        "(default: TIQU_TRAIN_TARGET_FORM).",
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Time budget for the training steps (default: TIQU_TRAIN_MAX_MINUTES): the "
        "run is cut to the steps that fit, timed on its first steps.",
    )
    promote: bool = Field(
        True, description="Promote the new version when it is at least as good on every field."
    )
    labels: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Label sets to train on beside the run's train split, `NAME` (its latest "
        "version) or `NAME@vN`; rows whose text is in the run's val or test split are left out.",
    )

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude={"run_id", "name", "promote", "labels"}, exclude_none=True)


class TrainRunPublic(BaseModel):
    """A training as the API shows it: its state, progress and, once ready, its adapter."""

    train_run_id: str = Field(max_length=64)
    state: JobState
    updated_at: datetime | None = None
    request: dict[str, Any] | None = Field(
        None, description="Distill run, adapter name, hyperparameters, promotion choice."
    )
    progress: dict[str, Any] = Field(
        default_factory=dict, description="Stage, step, loss, tokens/s and ETA while running."
    )
    error: str | None = Field(None, max_length=4000)
    error_code: str | None = Field(None, max_length=64)
    result: dict[str, Any] | None = Field(
        None, description="Adapter name and version, test metrics, promotion decision."
    )
