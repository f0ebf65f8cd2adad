"""What every billing task shares, so task bodies stay about the work.

`BillingTask` retries known transient failures (database or broker unreachable, lost
connection, serialization conflict) with exponential backoff and jitter; anything else is
a bug and fails loudly. Expected business outcomes ("rejected", "already closed") are
return values of the services, never exceptions, so they are never retried.

`send_after_commit` queues a follow-up task only once the transaction that justifies it
has committed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery import Task
from celery.canvas import Signature
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from worker.db import after_commit

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    BrokerOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later attempt may not meet."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # PostgreSQL serialization failure / deadlock: the transaction may simply be rerun.
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return code in {"40001", "40P01"}
    return False


class BillingTask(Task):  # type: ignore[misc]
    """Base for every task: transient failures are retried with backoff and jitter."""

    abstract = True
    max_retries = 10
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc) and not self.request.called_directly:
                raise self.retry(exc=exc, countdown=self._backoff()) from exc
            raise

    def _backoff(self) -> float:
        from celery.utils.time import get_exponential_backoff_interval

        return float(
            get_exponential_backoff_interval(
                factor=self.retry_backoff,
                retries=self.request.retries,
                maximum=self.retry_backoff_max,
                full_jitter=self.retry_jitter,
            )
        )


def utcnow() -> dt.datetime:
    """The current instant. Only task adapters read the clock; services are given `now`."""
    return dt.datetime.now(dt.UTC)


def send_after_commit(session: Session, signature: Signature) -> None:
    """Queue `signature` once `session`'s transaction commits; never if it rolls back."""
    after_commit(session, signature.apply_async)
