"""Database engine, the one session scope every job uses, and after-commit follow-ups.

Service functions take a `Session` and never open their own; the task adapter (or the CLI)
opens exactly one scope per job:

    with unit_of_work() as session:
        result = service(session, ...)

Follow-up Celery messages are registered with `after_commit(session, fn)` and sent only
once the transaction that justifies them has committed; a rolled-back transaction sends
nothing. A long job may commit in steps (`session.commit()` after each batch, so a crash
loses at most one batch): the follow-ups registered before each commit are sent (or
handed to a sending thread, `tasks.base.BackgroundSender`) right after it. A send that
fails after the commit is healed by the reconcile step, because the database, not the
message, is the source of truth.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Engine, any_, create_engine, event, literal, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from worker.config import settings

_AFTER_COMMIT = "billing.after_commit"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings this project relies on for `url`'s database."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot take a write lock up
    # front; SQLAlchemy's documented recipe hands the transaction to us so that every unit
    # of work starts with BEGIN IMMEDIATE: concurrent worker processes then queue on the
    # lock (busy timeout) instead of failing with "database is locked" mid-transaction.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@cache
def engine() -> Engine:
    """The process's engine, created at first use (after a worker process has forked)."""
    return make_engine(settings().database_url)


@cache
def session_factory() -> sessionmaker[Session]:
    return sessionmaker(engine(), expire_on_commit=False)


def after_commit(session: Session, callback: Callable[[], object]) -> None:
    """Run `callback` once the session's current transaction has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def _run_after_commit(session: Session) -> None:
    callbacks: list[Callable[[], object]] = session.info.pop(_AFTER_COMMIT, [])
    for callback in callbacks:
        callback()


def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def run_after_commit_callbacks(session: Session) -> None:
    """Make `session` run its `after_commit` callbacks (`unit_of_work` sessions already do)."""
    event.listen(session, "after_commit", _run_after_commit)
    event.listen(session, "after_rollback", _drop_after_commit)


@contextmanager
def unit_of_work(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """One session; commit on success, rolled back on error. After every commit (the final
    one, or one the job makes between batches) the callbacks registered before it run."""
    with (factory or session_factory())() as session:
        run_after_commit_callbacks(session)
        yield session
        session.commit()


def database_now(session: Session) -> dt.datetime:
    """The database server's clock, as an aware UTC instant (microseconds on PostgreSQL,
    milliseconds on SQLite). Closing goes by this one clock, whatever the workers' say."""
    if session.get_bind().dialect.name == "postgresql":
        instant: dt.datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return instant.astimezone(dt.UTC)
    raw = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)


def dialect_insert(session: Session) -> Any:
    """The session's dialect's `insert`: it has ON CONFLICT on PostgreSQL and SQLite alike,
    which every idempotent write uses (a conflict means "already done")."""
    return sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert


def ids_in(session: Session, column: Any, ids: Iterable[int]) -> Any:
    """`column IN ids` for a batch of ids: one array parameter on PostgreSQL
    (`= ANY(:ids)`, the same statement text whatever the batch's size, parsed once and
    planned as an index probe per id), an IN list elsewhere."""
    values = sorted(set(ids))
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(values, postgresql.ARRAY(BigInteger)))
    return column.in_(values)


def plan_each_batch(session: Session) -> None:
    """Have PostgreSQL plan this transaction's statements for their own parameters (a batch
    of ids, the tables' size now). The driver prepares a statement it has run five times,
    and a generic plan cached while the tables were small (or for an array of unknown
    length) scans them whole once they have grown: seconds a batch."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def reset_engine() -> None:
    """Forget the engine (after fork, or when tests change the settings)."""
    if engine.cache_info().currsize:
        engine().dispose(close=False)
    engine.cache_clear()
    session_factory.cache_clear()
