"""Alembic environment: runs against the connection or URL that `worker.migrate` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import models
from worker.db import make_engine

target_metadata = models.Base.metadata


def _run(connection: Connection) -> None:
    # SQLite rebuilds a table (batch mode) by copying it and dropping the original, which
    # foreign key enforcement forbids while other tables refer to it; the pragma only takes
    # effect outside a transaction. Revisions that rebuild tables check every reference
    # themselves (`PRAGMA foreign_key_check`) before their transaction ends.
    sqlite = connection.dialect.name == "sqlite" and not connection.in_transaction()
    if sqlite:
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    try:
        _migrate(connection)
    finally:
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:  # also when a revision refuses to run: no connection is left to the collector
        engine.dispose()
