"""The Celery configuration and the Redis event channel, on a real Redis."""

from __future__ import annotations

import threading
import time

from shared.queue import (
    QUEUES,
    WORKER_SOFT_SHUTDOWN_S,
    create_celery_app,
    publish_event,
    subscribe_events,
)


def test_tasks_survive_a_lost_worker() -> None:
    conf = create_celery_app().conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert (
        {q.name for q in conf.task_queues} == set(QUEUES) == {"ingest", "distill", "train", "batch"}
    )
    assert conf.task_routes["distill.*"] == {"queue": "distill"}
    # A stopped worker gives its task a few seconds, then hands it back (tests/reliability).
    assert conf.worker_soft_shutdown_timeout == WORKER_SOFT_SHUTDOWN_S > 0


def test_published_events_reach_subscribers(redis_url: str) -> None:
    received: list[dict] = []

    def listen() -> None:
        for event in subscribe_events(timeout=5):
            received.append(event)
            return

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.5)  # let the subscription register before publishing
    publish_event("dataset.ready", {"dataset_id": "ds-0123456789abcdef", "counts": {"rows": 3}})
    listener.join(timeout=10)
    assert received and received[0]["type"] == "dataset.ready"
    assert received[0]["data"] == {"dataset_id": "ds-0123456789abcdef", "counts": {"rows": 3}}
    assert "at" in received[0]
