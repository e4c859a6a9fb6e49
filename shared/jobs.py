"""The state of long-running jobs (ingest, distill, train, batch), kept in the object store.

Job state lives beside the job's output rather than only in Redis, so a lost queue message or a
flushed Redis never makes a finished job look unknown, and the API can answer from any replica.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field

from shared.errors import UnavailableError
from shared.queue import app, redis_client
from shared.store import Store

if TYPE_CHECKING:
    from celery import Task

log = logging.getLogger(__name__)


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


def enqueue(
    store: Store, status_key: str, task: Task, *, kwargs: dict[str, Any], task_id: str
) -> None:
    """Mark a job queued and send its task; if the queue cannot take it, undo the mark and raise
    UnavailableError, so the job is never left `queued` with no task behind it."""
    save_status(store, status_key, JobStatus(state=JobState.QUEUED))
    try:
        task.apply_async(kwargs=kwargs, task_id=task_id)
    except Exception as exc:
        log.exception("cannot enqueue task", extra={"task_id": task_id})
        store.delete(status_key)
        raise UnavailableError("the task queue is unreachable; try again later") from exc


def settle_failure(task: Task, store: Store, status_key: str, exc: Exception) -> JobState:
    """Record what an exception that a job's task did not handle means, for the task to raise it
    next (Celery then logs it, and retries it if it is one of the task's `autoretry_for`):
    `queued` while Celery will retry the task, else `failed` with a generic message and code (an
    exception's text may quote a complaint). No job is left `running` with nobody running it, and
    a resubmission queues a failed one again. Returns the state recorded."""
    error_class = type(exc).__name__
    if isinstance(exc, task.autoretry_for) and task.request.retries < task.max_retries:
        log.warning("job task will be retried", extra={"error_class": error_class})
        status = JobStatus(state=JobState.QUEUED)
    elif isinstance(exc, task.autoretry_for):
        log.error("job task retries exhausted", extra={"error_class": error_class})
        status = JobStatus(
            state=JobState.FAILED,
            error=f"the store or the queue kept failing ({error_class}) after "
            f"{task.request.retries} retries; see the worker log",
            error_code="retries_exhausted",
        )
    else:
        log.error("job task failed", extra={"error_class": error_class})
        status = JobStatus(
            state=JobState.FAILED,
            error=f"internal error ({error_class}); see the worker log",
            error_code="internal",
        )
    try:
        save_status(store, status_key, status)
    except Exception:
        # The store itself is away: the job stays `running` without a lease, which a
        # resubmission queues again.
        log.exception("cannot record the job's failure", extra={"status_key": status_key})
    return status.state


def save_status(store: Store, key: str, status: JobStatus) -> None:
    store.write_json(key, status.model_dump(mode="json"))


def load_status(store: Store, key: str) -> JobStatus | None:
    return JobStatus.model_validate(store.read_json(key)) if store.exists(key) else None


LEASE_TTL_S = 10
LEASE_POLL_S = 0.5
# Extend or delete the lease only while it is still ours (a lease that expired may be re-taken).
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


# A message is briefly in none of the places `message_lost` looks: between a worker popping it
# from its queue's list and recording it as unacknowledged, and between an API writing a job's
# status and sending it. A message not found is looked for once more after this pause.
LOST_RECHECK_S = 1.0
# Whether anything in Redis stands behind a job: its lease, or its task's message waiting in the
# queue's lists or delivered to a worker and not acknowledged yet. One script, so that all are
# seen at one instant and no message is copied out of Redis. KEYS: the lease, the hash of
# unacknowledged messages, the queue's lists; ARGV[1]: the task id, quoted as in a message's JSON.
_TASK_IN_REDIS = """
if redis.call('exists', KEYS[1]) == 1 then return 1 end
for _, message in ipairs(redis.call('hvals', KEYS[2])) do
  if string.find(message, ARGV[1], 1, true) then return 1 end
end
for i = 3, #KEYS do
  local size = redis.call('llen', KEYS[i])
  for first = 0, size - 1, 1000 do
    for _, message in ipairs(redis.call('lrange', KEYS[i], first, first + 999)) do
      if string.find(message, ARGV[1], 1, true) then return 1 end
    end
  end
end
return 0
"""


def needs_worker(kind: str, job_id: str, state: JobState | None) -> bool:
    """Whether nobody is (or will be) working on a job, so submitting it must queue it: never
    queued, failed, marked running by a worker that died (its lease lapsed), or marked queued
    with its message lost (a flushed or purged Redis). May pause LOST_RECHECK_S: call it from a
    thread, not an event loop."""
    if state is None or state == JobState.FAILED:
        return True
    if state == JobState.RUNNING:
        return not job_lease_held(kind, job_id)
    return state == JobState.QUEUED and message_lost(kind, job_id)


def message_lost(kind: str, job_id: str) -> bool:
    """Whether Redis holds nothing of a queued job: no message of its task (`<kind>-<job id>`)
    in its queue, none delivered to a worker and unacknowledged, and no lease."""
    unacked_key, queue_keys = _broker_keys(kind)
    keys = [lease_key(kind, job_id), unacked_key, *queue_keys]
    needle = f'"{kind}-{job_id}"'
    try:
        for look in range(2):
            if look:
                time.sleep(LOST_RECHECK_S)
            if redis_client().eval(_TASK_IN_REDIS, len(keys), *keys, needle):
                return False
    except redis.RedisError as exc:
        raise UnavailableError("the task queue is unreachable; try again later") from exc
    log.warning("queued job without a message", extra={"kind": kind, "job_id": job_id})
    return True


@cache
def _broker_keys(queue: str) -> tuple[str, tuple[str, ...]]:
    """The Redis keys of the broker's unacknowledged messages and of `queue`'s lists (one per
    priority), as the Celery app's transport names them."""
    try:
        with app.connection_for_read() as connection:
            channel: Any = connection.default_channel
            lists = dict.fromkeys(channel._q_for_pri(queue, p) for p in channel.priority_steps)
            return str(channel.unacked_key), tuple(lists)
    except OperationalError as exc:
        raise UnavailableError("the task queue is unreachable; try again later") from exc


def lease_key(kind: str, job_id: str) -> str:
    return f"tiqu:{kind}:lease:{job_id}"


def job_lease_held(kind: str, job_id: str) -> bool:
    """Whether a live worker is running the `kind` job `job_id` now."""
    return bool(redis_client().exists(lease_key(kind, job_id)))


class JobLease:
    """`with JobLease(kind, job_id) as lease:` holds a job's Redis lease (if free) and renews it.

    A second delivery of the same task (Redis redelivers unacknowledged ones) leaves a job alone
    while its lease lives; when a worker dies the lease lapses within seconds, which is how an
    API knows that a job still marked `running` must be queued again.

    A lease that is taken when the task arrives may be a dead worker's, whose task was given
    back to the queue (a stopped or killed worker): the lease is then waited for until it lapses
    (at most `ttl_s` + 1 s), and given up on at once when its holder renews it, alive.
    """

    def __init__(self, kind: str, job_id: str, ttl_s: int = LEASE_TTL_S) -> None:
        self.key = lease_key(kind, job_id)
        self.ttl_s = ttl_s
        self.token = uuid.uuid4().hex
        self.acquired = False
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, name=f"{kind}-lease", daemon=True)

    def __enter__(self) -> JobLease:
        client = redis_client()
        deadline = time.monotonic() + self.ttl_s + 1
        last_ttl_ms: int | None = None
        while True:
            self.acquired = bool(client.set(self.key, self.token, nx=True, ex=self.ttl_s))
            if self.acquired or time.monotonic() >= deadline:
                break
            ttl_ms = int(client.pttl(self.key))
            if last_ttl_ms is not None and ttl_ms > last_ttl_ms + 100:
                break  # renewed since the last look: its holder is alive
            last_ttl_ms = ttl_ms
            time.sleep(LEASE_POLL_S)
        if self.acquired:
            self._heartbeat.start()
        return self

    def _renew(self) -> None:
        client = redis_client()
        while not self._stop.wait(self.ttl_s / 3):
            try:
                client.eval(_EXTEND, 1, self.key, self.token, self.ttl_s)
            except Exception:
                # A missed renewal is retried at the next beat; only a dead worker lets it lapse.
                log.warning("lease renewal failed", extra={"lease": self.key})

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.acquired:
            return
        self._stop.set()
        self._heartbeat.join()
        redis_client().eval(_RELEASE, 1, self.key, self.token)
