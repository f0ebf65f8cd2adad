"""The Celery app: one place for every setting that keeps money safe.

- JSON only: pickle would let whoever can write to the broker run code on the workers;
  and read with a depth limit, a poison message becoming a dead letter (worker/messages.py).
- Late acks with reject-on-worker-lost: a task whose worker dies is redelivered, and every
  task is idempotent in the database, so running it twice is harmless.
- Prefetch of one: closing and invoicing tasks are long; a worker must not sit on messages
  another idle worker could run.
- Hard time limits just under the Redis visibility timeout (see `Settings`), so a message
  is redelivered only when its worker really died, and then within ~16 minutes.
- Task and sent events on, so Flower sees every task from the moment it is sent.
- One queue per concern; explicit task names, routed by name.
- Beat runs in UTC; what is due is decided from the database, not from the schedule.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.entity import Queue

from worker.beat import beat_config
from worker.config import TASK_TIME_LIMIT, Settings, settings
from worker.messages import register_json

QUEUES = ("intake", "closing", "invoicing", "charges")

TASK_MODULES = [
    "tasks.health",
    "tasks.intake",
    "tasks.intake_batch",
    "tasks.closing",
    "tasks.invoicing",
    "tasks.notifications",
    "tasks.charges",
    "tasks.charges_batch",
    "tasks.customer_close",
    "tasks.customer_update",
    "tasks.customer_suspension",
    "tasks.collections",
]

TASK_ROUTES = {
    "billing.customers.*": {"queue": "intake"},
    "billing.ping": {"queue": "intake"},
    "billing.periods.*": {"queue": "closing"},
    "billing.invoices.*": {"queue": "invoicing"},
    "billing.notifications.*": {"queue": "invoicing"},
    "billing.charges.*": {"queue": "charges"},
    "billing.payments.*": {"queue": "charges"},
    # Periodic bookkeeping decided from the database, like the close.
    "billing.collections.*": {"queue": "closing"},
}


def celery_config(conf: Settings) -> dict[str, Any]:
    return {
        "broker_url": conf.broker_url,
        "result_backend": conf.result_backend,
        "broker_transport_options": conf.broker_transport_options(),
        "result_backend_transport_options": conf.result_backend_transport_options(),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": TASK_TIME_LIMIT,
        "task_soft_time_limit": TASK_TIME_LIMIT - 60,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_extended": True,
        "result_expires": 24 * 3600,
        "enable_utc": True,
        "timezone": "UTC",
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": "intake",
        "task_routes": TASK_ROUTES,
        "beat_schedule": beat_schedule(conf),
        # Which scheduler beat uses and its lock (worker/beat.py).
        **beat_config(conf),
        "imports": TASK_MODULES,
        # Every task message is checked before Celery runs it; a poison one becomes a dead
        # letter instead of stopping the worker (worker/messages.py).
        "worker_consumer": "worker.messages:GuardedConsumer",
    }


def beat_schedule(conf: Settings) -> dict[str, Any]:
    """Beat only wakes the closer, the reconciler and collections; each decides from the
    database."""
    return {
        "close-due-periods": {
            "task": "billing.periods.close_due",
            "schedule": float(conf.close_interval),
            "options": {"queue": "closing", "expires": float(conf.close_interval)},
        },
        "reconcile": {
            "task": "billing.periods.reconcile",
            "schedule": float(conf.reconcile_interval),
            "options": {"queue": "closing", "expires": float(conf.reconcile_interval)},
        },
        "collections": {
            "task": "billing.collections.run",
            "schedule": float(conf.collections_interval),
            "options": {"queue": "closing", "expires": float(conf.collections_interval)},
        },
    }


# The JSON decoder with a depth limit, for every message this process reads.
register_json()


def create_app(conf: Settings | None = None) -> Celery:
    """The app for `conf`; without one, the process's settings are read when the app's
    configuration is first needed, not at import, so that importing the task modules (as
    `billing --help` does) never fails on a bad setting."""
    celery = Celery("billing")
    if conf is not None:
        celery.conf.update(celery_config(conf))
    else:
        celery.add_defaults(lambda: celery_config(settings()))
    return celery


app = create_app()


@worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    # A pooled connection inherited from the parent process must never be shared.
    from worker.db import reset_engine

    reset_engine()
