"""Request and response models of the distill API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.jobs import JobState


class DistillRunCreate(BaseModel):
    """What to distill: a dataset, and the options of `tiqu distill`."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=64, description="A dataset made by ingest (`ds-…`).")
    samples: int = Field(
        1, ge=1, le=16, description="Teacher samples per row; above 1, fields are voted on."
    )
    augment: int = Field(0, ge=0, le=100_000, description="New complaints the teacher writes.")
    limit: int | None = Field(None, ge=1, description="Label only the first N rows.")
    export: Literal["alpaca"] | None = Field(
        None, description="Also write {train,val,test}.alpaca.jsonl."
    )


class DistillRunPublic(BaseModel):
    """A distill run as the API shows it: its state, its progress and, once ready, its report."""

    run_id: str = Field(max_length=64)
    dataset_id: str = Field(max_length=64)
    state: JobState
    progress: dict[str, Any] = Field(
        default_factory=dict, description="Rows done, accepted, rejected, tokens and cost so far."
    )
    error: str | None = Field(None, max_length=4000)
    error_code: str | None = Field(None, max_length=64)
    manifest: dict[str, Any] | None = Field(
        None, description="The run's manifest (counts, agreement, splits, teacher usage, files)."
    )
