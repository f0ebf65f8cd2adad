"""BackgroundSender: follow-ups handed to one thread after each commit, errors surfaced."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.canvas import Signature
from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy import text
from sqlalchemy.orm import Session

import tasks.base
from tasks.base import BackgroundSender
from worker.db import make_engine, run_after_commit_callbacks

app = Celery("sender-tests", set_as_current=False)


@pytest.fixture
def session(tmp_path) -> Iterator[Session]:
    """A SQLite session that runs its after-commit callbacks, as `unit_of_work`'s does."""
    engine = make_engine(f"sqlite:///{tmp_path / 'sender.sqlite3'}")
    with Session(engine) as s:
        run_after_commit_callbacks(s)
        yield s
    engine.dispose()


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, list[str]]]:
    """(sending thread's name, task names) for every group the thread published."""
    groups: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        tasks.base,
        "publish",
        lambda sigs, _parent: groups.append(
            (threading.current_thread().name, [s.task for s in sigs])
        ),
    )
    return groups


def _sig(name: str) -> Signature:
    return app.signature(name)


def test_messages_go_out_from_the_sending_thread_after_each_commit_in_order(
    session, published
) -> None:
    """Each batch's messages are published by the sender thread, only once its transaction
    committed, batch after batch in commit order."""
    with BackgroundSender() as sender:
        session.execute(text("SELECT 1"))
        sender.send_after_commit(session, [_sig("a1"), _sig("a2")])
        sender.wait()
        assert published == []  # not committed yet: nothing handed over
        session.commit()
        session.execute(text("SELECT 1"))
        sender.send_after_commit(session, [_sig("b1")])
        sender.wait()
        session.commit()

    assert published == [("billing-sender", ["a1", "a2"]), ("billing-sender", ["b1"])]


def test_a_rolled_back_transaction_sends_nothing(session, published) -> None:
    """Messages registered in a transaction that rolls back are never handed over."""
    with BackgroundSender() as sender:
        session.execute(text("SELECT 1"))
        sender.send_after_commit(session, [_sig("lost")])
        session.rollback()
        session.execute(text("SELECT 1"))
        session.commit()

    assert published == []


def test_a_send_failure_is_raised_before_the_next_commit_and_on_leaving(
    session, monkeypatch
) -> None:
    """A broker error in the thread is raised by `wait()` (the job calls it before its next
    commit), so the job fails with a transient error its task retries."""

    def broker_down(_sigs: list[Signature], _parent: object) -> None:
        raise BrokerOperationalError("broker unreachable")

    monkeypatch.setattr(tasks.base, "publish", broker_down)

    def job(*, wait: bool) -> None:
        with BackgroundSender() as sender:
            session.execute(text("SELECT 1"))
            sender.send_after_commit(session, [_sig("a")])
            session.commit()
            if wait:
                sender.wait()

    with pytest.raises(BrokerOperationalError):
        job(wait=True)
    with pytest.raises(BrokerOperationalError):
        job(wait=False)


def test_the_jobs_own_error_wins_and_committed_messages_still_go_out(session, published) -> None:
    """When the job fails after a commit, leaving still sends that commit's messages and
    the job's own error propagates."""

    def job() -> None:
        with BackgroundSender() as sender:
            session.execute(text("SELECT 1"))
            sender.send_after_commit(session, [_sig("committed")])
            session.commit()
            raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        job()

    assert published == [("billing-sender", ["committed"])]
