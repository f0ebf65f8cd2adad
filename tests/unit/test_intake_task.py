"""The intake task adapter: transient failures are retried, rejections are results."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest
from celery.exceptions import Retry
from sqlalchemy.exc import OperationalError

import tasks.intake
from tasks.intake import create_customer_task


@pytest.fixture
def delivered(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run the task as a worker would for a delivered message, with retry() recorded."""
    retries: list[dict[str, Any]] = []

    def record_retry(*args: Any, **kwargs: Any) -> None:
        retries.append(kwargs)
        raise Retry("retry recorded", when=kwargs.get("countdown"))

    monkeypatch.setattr(create_customer_task, "retry", record_retry)
    create_customer_task.push_request(id="task-1", retries=2, called_directly=False)
    yield retries
    create_customer_task.pop_request()


def test_a_database_outage_is_retried_with_backoff(delivered, monkeypatch) -> None:
    """An OperationalError (database unreachable) makes the task retry, not fail."""

    @contextmanager
    def unreachable():  # type: ignore[no-untyped-def]
        raise OperationalError("connect", {}, ConnectionRefusedError("connection refused"))
        yield  # pragma: no cover

    monkeypatch.setattr(tasks.intake, "unit_of_work", unreachable)

    with pytest.raises(Retry):
        create_customer_task({"name": "Globex"})

    assert len(delivered) == 1
    assert isinstance(delivered[0]["exc"], OperationalError)
    assert 0 <= delivered[0]["countdown"] <= 2 * 2**2


def test_a_bug_is_not_retried(delivered, monkeypatch) -> None:
    """An unexpected error fails the task loudly instead of retrying forever."""

    @contextmanager
    def broken():  # type: ignore[no-untyped-def]
        raise KeyError("bug")
        yield  # pragma: no cover

    monkeypatch.setattr(tasks.intake, "unit_of_work", broken)

    with pytest.raises(KeyError):
        create_customer_task({"name": "Globex"})

    assert delivered == []


def test_the_task_passes_its_id_as_the_delivery_key(delivered, monkeypatch) -> None:
    """A redelivered message (same task id) is recognised as the same request."""
    seen: dict[str, Any] = {}

    @contextmanager
    def session_scope():  # type: ignore[no-untyped-def]
        yield "session"

    def service(session: Any, payload: Any, *, now: Any, delivery_key: str | None) -> dict:
        seen.update(session=session, payload=payload, delivery_key=delivery_key, now=now)
        return {"status": "rejected", "errors": []}

    monkeypatch.setattr(tasks.intake, "unit_of_work", session_scope)
    monkeypatch.setattr(tasks.intake, "create_customer", service)

    assert create_customer_task({"name": "Globex"}) == {"status": "rejected", "errors": []}
    assert seen["delivery_key"] == "task:task-1"
    assert seen["now"].tzinfo is not None
    assert delivered == []
