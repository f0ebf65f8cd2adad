"""`billing db …`: the schema."""

from __future__ import annotations

import click

from worker.config import settings
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
    click.echo(f"database at revision {revision}: {_redacted(conf.database_url)}")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


COMMANDS = [db]
