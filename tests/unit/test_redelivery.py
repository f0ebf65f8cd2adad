"""How long a message taken but never finished stays away: tied to the task time limit."""

from __future__ import annotations

from worker.celery_app import celery_config
from worker.config import load_settings


def test_an_unfinished_message_comes_back_just_after_the_hard_time_limit(monkeypatch) -> None:
    """Redis hands an unacknowledged message out again after a visibility timeout above
    the hard limit (no running task is given to a second worker) by at most two minutes
    (a lost one is back within the documented ~16 minutes, not an hour)."""
    monkeypatch.setenv("BILLING_BROKER_URL", "redis://127.0.0.1:6379/0")
    config = celery_config(load_settings())

    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert config["task_time_limit"] < visibility <= config["task_time_limit"] + 120
    assert visibility <= 16 * 60
    sweep = config["broker_transport_options"]["unacked_restore_interval"]
    assert sweep * config["broker_transport_options"]["unacked_restore_throttle"] <= 10
    # A retry waits at most this long in the worker, unacknowledged: it must come back
    # to that worker, not be handed to another one meanwhile.
    from tasks.base import BillingTask

    assert BillingTask.retry_backoff_max < visibility
