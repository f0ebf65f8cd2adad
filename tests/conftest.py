"""Test configuration shared by every suite.

Every run gets its own PostgreSQL database and its own Redis key prefix, so runs on one
machine (several developers, CI) never see each other's rows or queues. The environment is
set before anything imports `worker`, so the app, the worker processes the tests start and
the CLI all read the same settings.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest

RUN_ID = uuid.uuid4().hex[:10]
ADMIN_DATABASE_URL = os.environ.get(
    "BILLING_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BILLING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_DATABASE = f"billing_test_{RUN_ID}"
REDIS_PREFIX = f"billing-test-{RUN_ID}:"


def pytest_configure(config: pytest.Config) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(ADMIN_DATABASE_URL).set(database=TEST_DATABASE)
    os.environ["BILLING_DATABASE_URL"] = url.render_as_string(hide_password=False)
    os.environ["BILLING_BROKER_URL"] = REDIS_URL
    os.environ["BILLING_RESULT_BACKEND"] = REDIS_URL
    os.environ["BILLING_REDIS_KEY_PREFIX"] = REDIS_PREFIX
    os.environ["BILLING_DATA_DIR"] = tempfile.mkdtemp(prefix=f"billing-test-{RUN_ID}-")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated to head; dropped at the end."""
    from tests.support import create_database, drop_database
    from worker.migrate import upgrade

    url = os.environ["BILLING_DATABASE_URL"]
    create_database(ADMIN_DATABASE_URL, TEST_DATABASE)
    try:
        upgrade(url)
        yield url
    finally:
        from worker.db import engine, reset_engine

        # Close this process's pooled connections (reset_engine alone only forgets them,
        # as it must after a fork, which leaves them to the garbage collector).
        if engine.cache_info().currsize:
            engine().dispose()
        reset_engine()
        drop_database(ADMIN_DATABASE_URL, TEST_DATABASE)


@pytest.fixture(scope="session")
def engine(database_url: str):  # type: ignore[no-untyped-def]
    from worker.db import engine as app_engine

    return app_engine()


@pytest.fixture
def db_session(engine):  # type: ignore[no-untyped-def]
    """A session inside a transaction that is rolled back after the test.

    Service code may commit (it only ever releases a savepoint here), so tests of services
    that run in-process leave nothing behind.
    """
    from sqlalchemy.orm import Session

    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


@pytest.fixture
def clean_db(engine):  # type: ignore[no-untyped-def]
    """Empty every table before the test, for tests whose writes really commit."""
    from tests.support import truncate_all

    truncate_all(engine)
    return engine


@pytest.fixture(scope="session")
def redis_client() -> Iterator[object]:
    """The test Redis; every key this run wrote (under its prefix) is deleted at the end."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    for key in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def celery_app(database_url: str, redis_client: object):  # type: ignore[no-untyped-def]
    from worker import app

    return app


@pytest.fixture(scope="session")
def worker(celery_app, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One real Celery worker process (prefork, 2 children) on all queues, for the session."""
    from tests.support import WorkerProcess

    process = WorkerProcess(celery_app, tmp_path_factory.mktemp("worker"), name="main")
    process.start()
    yield process
    process.stop()
