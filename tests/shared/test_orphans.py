"""The orphan sweep on a real Redis: a dead worker's unacknowledged task goes back to its queue,
a live one's (its job's lease held), a fresh one's and a retry waiting for its countdown stay."""

from __future__ import annotations

import json
import time

import redis

from shared.jobs import lease_key
from shared.orphans import requeue_orphans
from shared.queue import create_celery_app

DATASET_ID = "ds-0123456789abcdef"


def unacked_task(client: redis.Redis, app, *, age_s: float, eta: str | None = None) -> bytes:
    """A task as a worker leaves it when killed: taken from its queue, never acknowledged."""
    app.send_task(
        "ingest.dataset",
        kwargs={"dataset_id": DATASET_ID},
        task_id=f"ingest-{DATASET_ID}",
        queue="ingest",
        routing_key="ingest",
    )
    payload = json.loads(client.rpop("ingest"))
    if eta is not None:
        payload["headers"]["eta"] = eta
    tag = f"tag-{age_s}-{eta}".encode()
    client.hset("unacked", tag, json.dumps([payload, "ingest", "ingest"]))
    client.zadd("unacked_index", {tag: time.time() - age_s})
    return tag


def test_only_a_dead_workers_task_is_requeued_after_two_sweeps(redis_url: str) -> None:
    app = create_celery_app()
    client = redis.Redis.from_url(redis_url)
    orphan = unacked_task(client, app, age_s=60)
    lease = lease_key("ingest", DATASET_ID)

    client.set(lease, "alive", ex=30)  # a live worker runs the job
    assert requeue_orphans(app) == []
    client.delete(lease)

    suspects: set[bytes] = set()
    assert requeue_orphans(app, suspects) == []  # first sighting: maybe between lease and ack
    assert suspects == {orphan} and client.llen("ingest") == 0
    assert requeue_orphans(app, suspects) == [f"ingest-{DATASET_ID}"]
    assert client.llen("ingest") == 1 and client.hlen("unacked") == 0
    requeued = json.loads(client.rpop("ingest"))
    assert requeued["headers"]["id"] == f"ingest-{DATASET_ID}"

    unacked_task(client, app, age_s=1)  # delivered a moment ago: its lease may still come
    unacked_task(client, app, age_s=60, eta="2099-01-01T00:00:00+00:00")  # a retry's countdown
    for _ in range(3):
        assert requeue_orphans(app, suspects) == []
    assert client.hlen("unacked") == 2 and client.llen("ingest") == 0
