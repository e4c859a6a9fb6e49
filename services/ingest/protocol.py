"""Request and response models of the ingest API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.jobs import JobState


class DatasetCounts(BaseModel):
    rows: int
    clean: int
    rejected: int
    rejected_by_reason: dict[str, int]


class DatasetPublic(BaseModel):
    """A dataset as the API shows it: its state and, once ready, its report."""

    dataset_id: str = Field(max_length=64)
    state: JobState
    created_at: datetime | None = None
    filename: str | None = Field(None, max_length=512)
    counts: DatasetCounts | None = None
    error: str | None = Field(None, max_length=4000)
    error_code: str | None = Field(None, max_length=64)
    manifest: dict[str, Any] | None = Field(
        None, description="The full manifest (source, settings, counts, files) once ready."
    )


class DatasetList(BaseModel):
    datasets: list[DatasetPublic]
    total: int
