"""A message a worker took and never finished comes back within the documented bound."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import REDIS_PREFIX
from tests.support import wait_for
from worker.config import REDELIVERY_AFTER

pytestmark = pytest.mark.functional


def test_a_message_abandoned_just_over_the_bound_ago_is_run_again(worker, redis_client) -> None:
    """A ping left unacknowledged by a dead worker REDELIVERY_AFTER + 5 s ago (as kombu
    records it: the `unacked` hash and its time index) is put back on its queue by the
    running worker's sweep and run, within seconds."""
    from tasks.health import ping

    limbo = f"{REDIS_PREFIX}limbo"
    sent = ping.apply_async(args=["abandoned"], queue="limbo")  # a queue nobody consumes
    raw = redis_client.lpop(limbo)
    assert raw is not None
    message = json.loads(raw)
    tag = message["properties"]["delivery_tag"]
    # What a worker that took the message from `intake` and then died leaves behind.
    message["properties"]["delivery_info"] = {"exchange": "intake", "routing_key": "intake"}
    redis_client.hset(f"{REDIS_PREFIX}unacked", tag, json.dumps([message, "intake", "intake"]))
    redis_client.zadd(f"{REDIS_PREFIX}unacked_index", {tag: time.time() - REDELIVERY_AFTER - 5})

    started = time.monotonic()
    assert sent.get(timeout=60) == {"status": "pong", "payload": "abandoned"}
    assert time.monotonic() - started < 30
    # Acknowledged once done (late ack, just after the result is stored).
    wait_for(
        lambda: not redis_client.hexists(f"{REDIS_PREFIX}unacked", tag),
        timeout=10,
        what="the redelivered message acknowledged",
    )
