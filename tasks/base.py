"""What every billing task shares, so task bodies stay about the work.

`BillingTask` retries known transient failures (database or broker unreachable, lost
connection, serialization conflict) with exponential backoff and jitter; anything else is
a bug and fails loudly. Expected business outcomes ("rejected", "already closed") are
return values of the services, never exceptions, so they are never retried.

`send_after_commit` queues a follow-up task only once the transaction that justifies it
has committed. A job that commits in batches and queues many follow-ups per batch uses a
`BackgroundSender`: each batch's messages are handed, after its commit, to one sending
thread while the job goes on with its next batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from celery import Task
from celery.canvas import Signature
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from worker.config import settings
from worker.db import after_commit, database_now

logger = logging.getLogger(__name__)

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


class WorkFailed(Exception):
    """Part of a task's work could not be done, for a reason a retry will not change: raised
    after the good part committed, so the task ends FAILURE (Flower, `/metrics`, alerts)
    while its JSON summary (`summary`, with `status` and `errors`) says what was done."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__(summary)
        self.summary = summary

    def __str__(self) -> str:
        errors = self.summary.get("errors") or []
        shown = "; ".join(str(e.get("message")) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return f"{len(errors)} item(s) failed: {shown}{more}"

    def __repr__(self) -> str:
        # What Flower and the logs show: the sentence, not the whole summary.
        return f"WorkFailed({str(self)!r})"


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


def one_line(exc: BaseException) -> str:
    """An error as one line for a person: its type and first non-blank line, and its
    cause's (a library's wrapper often hides what was really down)."""
    parts = []
    for error in (exc, exc.__cause__):
        if error is not None:
            text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
            parts.append(f"{type(error).__name__}: {text}" if text else type(error).__name__)
    return "; ".join(parts)


def utcnow() -> dt.datetime:
    """The current instant. Only task adapters read the clock; services are given `now`."""
    return dt.datetime.now(dt.UTC)


def database_clock(session: Session) -> dt.datetime:
    """The current instant by the database's clock: the one clock that decides what has
    ended, so a worker whose own clock runs fast never closes a period early. A worker
    clock more than BILLING_CLOCK_SKEW seconds off is logged, for the operator to fix."""
    now = database_now(session)
    drift = (utcnow() - now).total_seconds()
    if abs(drift) > settings().clock_skew_seconds:
        logger.warning(
            "this worker's clock is %+.0f s off the database's (BILLING_CLOCK_SKEW is %s s); "
            "closing goes by the database's clock: fix the machine's time (NTP)",
            drift,
            settings().clock_skew_seconds,
        )
    return now


def send_after_commit(session: Session, signature: Signature) -> None:
    """Queue `signature` once `session`'s transaction commits; never if it rolls back."""
    after_commit(session, signature.apply_async)


@dataclass(frozen=True)
class Parent:
    """The worker task that sends follow-ups, as `send_task` sees it in the task's own
    thread (task and request are thread-local): another thread must be told."""

    id: str
    root_id: str
    children: list[Any] | None  # the task's result trail, if it keeps one

    @classmethod
    def of_current_task(cls, app: Any) -> Parent | None:
        task = app.current_worker_task
        if task is None:
            return None
        request = task.request
        return cls(
            request.id, request.root_id or request.id, request.children if task.trail else None
        )


def publish(signatures: Sequence[Signature], parent: Parent | None = None) -> None:
    """Send `signatures` now, through one producer taken from the app's pool for all of them,
    as children of `parent`."""
    if not signatures:
        return
    options = {} if parent is None else {"parent_id": parent.id, "root_id": parent.root_id}
    with signatures[0].app.producer_or_acquire() as producer:
        for signature in signatures:
            result = signature.apply_async(producer=producer, **options)
            if parent is not None and parent.children is not None:
                parent.children.append(result)


class BackgroundSender:
    """One thread that sends a batched job's follow-up messages while the job goes on.

    `send_after_commit(session, signatures)` hands the messages to the thread once the
    session's transaction commits (never if it rolls back), and the job goes on with its
    next batch while they are sent. `wait()`, which the job calls before its next commit,
    waits until everything handed over is sent and raises what sending raised, so:

    - at most one committed batch's messages are ever unsent (what a synchronous send
      after each commit would leave if the process died), and memory stays one batch;
    - a broker outage still fails the job, at the latest before its next commit, as the
      transient error a retry is for.

    Used as a context manager: leaving it waits for the last batch's messages, and raises a
    send error unless the job is already failing with its own error.
    """

    def __init__(self) -> None:
        self._handed_over: queue.Queue[tuple[list[Signature], Parent | None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="billing-sender", daemon=True)

    def __enter__(self) -> BackgroundSender:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handed_over.put(None)
        self._thread.join()
        if self._error is not None and self._error is not exc:
            if exc is None:
                raise self._error
            logger.error("sending follow-up messages failed as well: %r", self._error)

    def send_after_commit(self, session: Session, signatures: Sequence[Signature]) -> None:
        """Send `signatures` from the thread once `session`'s transaction commits."""
        if signatures:
            parent = Parent.of_current_task(signatures[0].app)
            after_commit(session, partial(self._handed_over.put, (list(signatures), parent)))

    @property
    def error(self) -> BaseException | None:
        """What sending raised, if it failed."""
        return self._error

    def wait(self) -> None:
        """Return once every message handed over is sent; raise if sending one failed."""
        self._handed_over.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            handed_over = self._handed_over.get()
            try:
                if handed_over is None:
                    return
                if self._error is None:  # after a failure, only drain (the job will raise)
                    publish(*handed_over)
            except BaseException as exc:  # handed to the job's thread, which raises it
                self._error = exc
            finally:
                self._handed_over.task_done()
