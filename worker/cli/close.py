"""`billing close` and `billing periods list`: close billing periods by hand, and see them."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click
from sqlalchemy import select

from models import ClosedPeriod, Customer
from models.closed_period import MAX_INVOICE_ATTEMPTS
from models.validation import check_not_future
from tasks.base import database_clock
from tasks.closing import CloseStatus, CloseSummary, close_due, parse_as_of
from worker.cli._common import LIMIT, iso_utc
from worker.cli._reseller import customer_or_fail, reseller_option, reseller_or_fail
from worker.config import settings
from worker.db import unit_of_work


@click.command("close")
@click.option(
    "--as-of",
    metavar="ISO-8601",
    help="Close what has ended by this instant (with an offset or Z). "
    "Default: now, by the database's clock.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def close_command(as_of: str | None, as_json: bool) -> None:
    """Close every billing period that has ended, now, in this process.

    The same close the beat schedule runs: each customer whose period ended gets a closed
    period (every missed one, in order) and invoice generation is queued. Safe to run
    while workers run: nothing is ever closed twice.
    """
    try:
        given = None if as_of is None else parse_as_of(as_of)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    with unit_of_work() as session:
        clock = database_clock(session)
        future = (
            None
            if given is None
            else check_not_future(
                given, now=clock, skew_seconds=settings().clock_skew_seconds, field="--as-of"
            )
        )
        if future is not None:
            raise click.BadParameter(
                f"{future.message}; periods that have not ended cannot be closed, "
                "nothing was closed",
                param_hint="--as-of",
            )
        now = clock if given is None else given
        summary = close_due(session, now=now, batch_size=settings().close_batch_size)
    if as_json:
        click.echo(json.dumps({"as_of": iso_utc(now), **summary.as_json()}))
        sys.exit(_exit_code(summary))
    click.echo(
        f"closed {summary.closed} period(s) ended by {iso_utc(now)} "
        f"in {summary.batches} batch(es); {summary.invoice_messages} invoice message(s) queued"
    )
    if summary.already_closed:
        click.echo(f"{summary.already_closed} period(s) had already been closed")
    _echo_boundaries(summary.by_boundary)
    if summary.unclosable:
        click.echo(
            f"{len(summary.unclosable)} customer(s) could not be closed: their stored period "
            "is not one the period engine accepts (details in the log above)",
            err=True,
        )
    if summary.send_error:
        click.echo(
            f"{summary.unsent} closed period(s) have no invoice message: the broker refused "
            f"it ({summary.send_error}); they stay closed, and reconcile queues their "
            "invoices at its next run once the broker is back",
            err=True,
        )
    sys.exit(_exit_code(summary))


# A (rule, zone) with more end dates than this (customers far behind, caught up in one
# pass) is printed as one line with its first and last end date.
BOUNDARY_LINES = 10


def _echo_boundaries(by_boundary: dict[tuple[str, str, dt.date], int]) -> None:
    """What was closed, a line per rule, zone and end date."""
    groups: dict[tuple[str, str], list[tuple[dt.date, int]]] = {}
    for (rule, tz, end_date), count in sorted(by_boundary.items()):
        groups.setdefault((rule, tz), []).append((end_date, count))
    for (rule, tz), ends in groups.items():
        if len(ends) > BOUNDARY_LINES:
            count = sum(n for _, n in ends)
            first, last = ends[0][0].isoformat(), ends[-1][0].isoformat()
            click.echo(
                f"  {count:>9}  {rule:<20} {tz:<32} ended {first} to {last} "
                f"({len(ends):,} end dates)"
            )
            continue
        for end_date, count in ends:
            click.echo(f"  {count:>9}  {rule:<20} {tz:<32} ended {end_date.isoformat()}")


def _exit_code(summary: CloseSummary) -> int:
    """0 when everything due was closed and its invoices queued; 1 otherwise."""
    return 0 if summary.status is CloseStatus.DONE else 1


@click.group("periods")
def periods() -> None:
    """Closed billing periods."""


@periods.command("list")
@click.option("--customer", "customer_name", help="Only this customer (name, any case).")
@reseller_option
@click.option("--limit", default=100, show_default=True, type=LIMIT, help="At most this many.")
@click.option(
    "--failed",
    is_flag=True,
    help="Only periods whose invoice generation failed (with the last error).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array).")
def list_command(
    customer_name: str | None, reseller: str | None, limit: int, failed: bool, as_json: bool
) -> None:
    """List closed periods, the most recent first."""
    with unit_of_work() as session:
        query = (
            select(ClosedPeriod, Customer.name)
            .join(Customer, Customer.id == ClosedPeriod.customer_id)
            .order_by(ClosedPeriod.period_end.desc(), ClosedPeriod.id.desc())
            .limit(limit)
        )
        if failed:
            query = query.where(ClosedPeriod.invoice_attempts > 0, ~ClosedPeriod.invoiced)
        if customer_name is not None:
            _, customer = customer_or_fail(session, reseller, customer_name)
            query = query.where(ClosedPeriod.customer_id == customer.id)
        elif reseller is not None:
            query = query.where(Customer.reseller_id == reseller_or_fail(session, reseller).id)
        rows = [_as_json(period, name) for period, name in session.execute(query)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no closed periods")
    for row in rows:
        click.echo(
            f"{row['id']:>8}  {row['customer']:<30} {row['start_date']} .. {row['end_date']} "
            f"(exclusive)  {row['billing_period']:<20} {row['billing_timezone']:<24} "
            f"{'invoiced' if row['invoiced'] else 'not invoiced'}"
        )
        if row["invoice_attempts"] and not row["invoiced"]:
            given_up = (
                f" (reconcile gave up; fix it, then `billing invoices generate {row['id']}`)"
                if row["invoice_attempts"] >= MAX_INVOICE_ATTEMPTS
                else ""
            )
            click.echo(
                f"          invoice failed {row['invoice_attempts']} time(s){given_up}: "
                f"{row['invoice_error']}"
            )


def _as_json(period: ClosedPeriod, customer: str) -> dict[str, Any]:
    return {
        "id": period.id,
        "customer_id": period.customer_id,
        "customer": customer,
        "billing_period": period.billing_period,
        "billing_timezone": period.billing_timezone,
        "period_start": _iso(period.period_start),
        "period_end": _iso(period.period_end),
        "start_date": period.start_date.isoformat(),
        "end_date": period.end_date.isoformat(),
        "closed_at": _iso(period.closed_at),
        "invoice_enqueued_at": _iso(period.invoice_enqueued_at),
        "invoiced": period.invoiced,
        "invoice_attempts": period.invoice_attempts,
        "invoice_error": period.invoice_error,
    }


def _iso(instant: dt.datetime | None) -> str | None:
    return None if instant is None else iso_utc(instant)


COMMANDS = [close_command, periods]
