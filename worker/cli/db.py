"""`billing db …`: the schema."""

from __future__ import annotations

import click

from worker.config import redacted_url, settings
from worker.migrate import upgrade


@click.group("db")
def db() -> None:
    """Database schema migrations (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade_command(revision: str) -> None:
    """Migrate the configured database to REVISION (safe to run again)."""
    conf = settings()
    conf.ensure_data_dir()
    upgrade(conf.database_url, revision)
    click.echo(f"database at revision {revision}: {redacted_url(conf.database_url)}")


COMMANDS = [db]
