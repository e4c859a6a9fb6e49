"""The Celery application every worker runs, and the Redis event channel between services.

A task is acknowledged only after it finished (`acks_late`) and is given back to the queue when
its worker dies (`reject_on_worker_lost`); each worker takes one task at a time, so a killed
worker loses at most the task it was running, which then runs again elsewhere. Tasks must
therefore be idempotent: they write their results under content-derived ids.

Stopping a worker gives its task back too: SIGTERM (`tiqu worker` maps it to Celery's cold
shutdown) leaves the running task `WORKER_SOFT_SHUTDOWN_S` seconds to finish, then stops it and
returns it to its queue, where another worker resumes it. A worker killed outright leaves its
task unacknowledged in Redis; the other workers, or the same one restarted, requeue it within
seconds once its job's lease has lapsed (`shared.orphans`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from celery import Celery, signals
from kombu import Queue
from prometheus_client import multiprocess

from shared.metrics import serve_worker_metrics
from shared.settings import get_settings

QUEUES = ("ingest", "distill", "train", "batch")
EVENT_CHANNEL = "tiqu:events"
# How long a SIGTERMed worker lets its running task finish before handing it back to the queue.
WORKER_SOFT_SHUTDOWN_S = 10.0


def redis_url() -> str:
    """TIQU_REDIS_URL with TIQU_REDIS_PASSWORD in it, when one is set and the URL has none."""
    settings = get_settings()
    password = settings.redis_password.get_secret_value()
    parts = urlsplit(settings.redis_url)
    if not password or parts.password:
        return settings.redis_url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(parts.username or '', safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def create_celery_app() -> Celery:
    url = redis_url()
    celery_app = Celery("tiqu", broker=url, backend=url)
    celery_app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="ingest",
        task_routes={f"{name}.*": {"queue": name} for name in QUEUES},
        task_track_started=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_soft_shutdown_timeout=WORKER_SOFT_SHUTDOWN_S,
    )
    return celery_app


app = create_celery_app()


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(redis_url(), socket_timeout=5)


def publish_event(event_type: str, data: dict[str, Any]) -> None:
    """Announce something that happened (`dataset.ready`, `adapter.promoted`) to subscribers.

    Events carry ids and counts only, never complaint text.
    """
    message = {"type": event_type, "data": data, "at": datetime.now(UTC).isoformat()}
    redis_client().publish(EVENT_CHANNEL, json.dumps(message))


def subscribe_events(timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield events as they are published; stops after `timeout` seconds without one."""
    pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(EVENT_CHANNEL)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            # get_message also returns None for the ignored subscribe confirmation.
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            yield json.loads(message["data"])
            if timeout is not None:
                deadline = time.monotonic() + timeout
    finally:
        pubsub.close()


@signals.worker_init.connect
def _serve_worker_metrics(**_: Any) -> None:
    port = get_settings().worker_metrics_port
    if port:
        serve_worker_metrics(port)


@signals.worker_ready.connect
def _sweep_orphans(sender: Any = None, **_: Any) -> None:
    from shared.orphans import start_sweeper  # shared.orphans imports this module

    start_sweeper(sender.app if sender is not None else app)


@signals.worker_process_shutdown.connect
def _forget_dead_child(pid: int | None = None, **_: Any) -> None:
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
