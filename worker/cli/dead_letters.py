"""`billing dead-letters list`: the messages the worker could not run, and why."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy import select

from worker.db import unit_of_work


@click.group("dead-letters")
def dead_letters() -> None:
    """Poison messages the worker set aside (undecodable, too deep, wrong shape)."""


@dead_letters.command("list")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="At most this many."
)
@click.option("--body", "with_body", is_flag=True, help="Also print each message's raw body.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array).")
def list_command(limit: int, with_body: bool, as_json: bool) -> None:
    """List dead letters, the most recent first."""
    from models import DeadLetter
    from models.validation import iso_utc

    with unit_of_work() as session:
        rows: list[dict[str, Any]] = [
            {
                "id": row.id,
                "received_at": iso_utc(row.received_at),
                "queue": row.queue,
                "task": row.task,
                "task_id": row.task_id,
                "code": row.reason_code,
                "reason": row.reason,
                **({"body": row.body} if with_body or as_json else {}),
            }
            for row in session.scalars(
                select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
            )
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dead letters")
    for row in rows:
        click.echo(
            f"{row['id']:>6}  {row['received_at']}  {row['queue'] or '-':<10} "
            f"{row['task'] or '(no task)':<26} {row['code']:<16} {row['reason']}"
        )
        if with_body:
            click.echo(f"        body: {str(row['body'])[:2000]}")


COMMANDS = [dead_letters]
