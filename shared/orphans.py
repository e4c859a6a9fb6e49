"""Tasks of dead workers, given back to their queue within seconds instead of after an hour.

With Redis as the broker an unacknowledged task (`acks_late`) of a worker that was killed
(`kill -9`, OOM, a node lost) stays in Redis's `unacked` hash until the transport's visibility
timeout (one hour) has passed. Every tiqu job holds a lease while it runs (`shared.jobs.JobLease`,
renewed every few seconds), and its task id is `<queue>-<job id>`, so a task is an orphan exactly
when it has been unacknowledged for a while and its job's lease has lapsed: no live worker runs it.

Each worker sweeps for orphans when it starts and then every few seconds, and moves those seen
orphaned by two sweeps in a row back to the front of their queue. A task delivered twice is
harmless: tasks are idempotent, and the lease keeps a second copy from running a job that a live
worker is running.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from celery import Celery

from shared.jobs import LEASE_TTL_S, lease_key
from shared.queue import QUEUES, redis_client

log = logging.getLogger(__name__)

# Unacknowledged for longer than this without a lease: no live worker holds the task. A live
# worker takes its job's lease as the task starts, or within LEASE_TTL_S + 1 s when it waits for
# the lease of a dead worker to lapse.
MIN_AGE_S = 2 * LEASE_TTL_S
SWEEP_EVERY_S = LEASE_TTL_S / 2


def lease_of(task_id: str) -> str | None:
    """The lease key of the job a task runs (task ids are `<queue>-<job id>`), else None."""
    kind, _, job_id = task_id.partition("-")
    return lease_key(kind, job_id) if kind in QUEUES and job_id else None


def requeue_orphans(
    app: Celery, suspects: set[bytes] | None = None, *, min_age_s: float = MIN_AGE_S
) -> list[str]:
    """Put the tasks of dead workers back in their queues; returns their task ids.

    A task is only requeued when it was seen orphaned by the previous sweep too (`suspects`,
    updated in place; None: at once): a live worker releases its job's lease a moment before it
    acknowledges the task, and a single look could fall in between.
    """
    restored: list[str] = []
    seen: set[bytes] = set()
    leases = redis_client()
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        client = channel.client
        now = time.time()
        for tag, delivered_at in client.zrange(channel.unacked_index_key, 0, -1, withscores=True):
            if now - delivered_at < min_age_s:
                continue
            raw = client.hget(channel.unacked_key, tag)
            if raw is None:
                continue  # acknowledged meanwhile
            payload = json.loads(raw)[0]
            headers = payload.get("headers") or {}
            # A task waiting for its countdown (a retry) is held unacknowledged on purpose.
            if headers.get("eta"):
                continue
            task_id = str(headers.get("id") or "")
            lease = lease_of(task_id)
            if lease is None or leases.exists(lease):
                continue
            if suspects is not None and tag not in suspects:
                seen.add(tag)
                continue
            channel.qos.restore_by_tag(tag, client=client)
            restored.append(task_id)
    if suspects is not None:
        suspects.clear()
        suspects.update(seen)
    if restored:
        log.warning("orphaned tasks requeued", extra={"tasks": restored})
    return restored


def start_sweeper(app: Celery, every_s: float = SWEEP_EVERY_S) -> threading.Thread:
    """Sweep now and then every `every_s` seconds, in a daemon thread of the worker."""

    def sweep() -> None:
        suspects: set[bytes] = set()
        while True:
            try:
                requeue_orphans(app, suspects)
            except Exception as exc:
                # Redis away for a moment: the next sweep tries again.
                log.warning("orphan sweep failed", extra={"error_class": type(exc).__name__})
            time.sleep(every_s)

    thread = threading.Thread(target=sweep, name="orphan-sweeper", daemon=True)
    thread.start()
    log.info("orphan sweeper started", extra={"every_s": every_s, "min_age_s": MIN_AGE_S})
    return thread
