"""The state of long-running jobs (ingest, distill, train, batch), kept in the object store.

Job state lives beside the job's output rather than only in Redis, so a lost queue message or a
flushed Redis never makes a finished job look unknown, and the API can answer from any replica.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from shared.store import Store


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


class JobStatus(BaseModel):
    state: JobState
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    error: str | None = Field(None, max_length=4000)
    error_code: str | None = Field(None, max_length=64)
    progress: dict[str, Any] = Field(default_factory=dict)


def save_status(store: Store, key: str, status: JobStatus) -> None:
    store.write_json(key, status.model_dump(mode="json"))


def load_status(store: Store, key: str) -> JobStatus | None:
    return JobStatus.model_validate(store.read_json(key)) if store.exists(key) else None
