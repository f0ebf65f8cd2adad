"""The test harness itself: a real worker consumes from the real Redis under this run's prefix."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.functional


def test_a_task_travels_through_redis_and_a_real_worker(worker, redis_client) -> None:
    """A task sent to the broker is run by the worker process and its result comes back."""
    from tasks.health import ping

    result = ping.delay({"n": 1}).get(timeout=30)

    assert result == {"status": "pong", "payload": {"n": 1}}


def test_the_result_keys_carry_this_runs_prefix(worker, redis_client) -> None:
    """The run's keys live under its prefix, so parallel runs cannot share queues or results."""
    from tasks.health import ping
    from tests.conftest import REDIS_PREFIX

    task_id = ping.delay(None).id
    ping.AsyncResult(task_id).get(timeout=30)

    assert redis_client.exists(f"{REDIS_PREFIX}celery-task-meta-{task_id}")
    assert not redis_client.exists(f"celery-task-meta-{task_id}")
