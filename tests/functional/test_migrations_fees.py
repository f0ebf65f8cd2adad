"""The fees revision upgrades a populated database, and the migrated schema is the models'."""

from __future__ import annotations

import warnings

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import models
from tests.functional.test_migrations import _populate_0001, database  # noqa: F401
from worker.db import make_engine
from worker.migrate import upgrade

pytestmark = pytest.mark.functional


def test_the_fees_revision_keeps_every_customer_and_matches_the_models(database) -> None:  # noqa: F811
    """Customers stored before it keep their rows (nothing waiting, not closed) and the
    schema at head is exactly what the models declare, on PostgreSQL and SQLite."""
    upgrade(database, "0001")
    engine = make_engine(database)
    try:
        _populate_0001(engine)
        upgrade(database)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, pending_billing_period, pending_from, closed_at FROM customers "
                    "ORDER BY id"
                )
            ).all()
            assert [tuple(r) for r in rows] == [(i, None, None, None) for i in (1, 2, 3)]
            with warnings.catch_warnings():
                # SQLite cannot reflect the expression index on lower(name); nothing to compare.
                warnings.simplefilter("ignore")
                diff = compare_metadata(
                    MigrationContext.configure(conn, opts={"compare_type": True}),
                    models.Base.metadata,
                )
        assert diff == []
    finally:
        engine.dispose()
