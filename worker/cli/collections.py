"""`billing collections run`, corrections (`billing invoices void|reissue|credit`) and
`billing customers statement`: collecting what was invoiced."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
from sqlalchemy.orm import Session

from worker.cli.customers import customers
from worker.cli.invoices import invoices
from worker.db import unit_of_work


def _parse_as_of(value: str | None) -> dt.datetime | None:
    from tasks.closing import parse_as_of

    if value is None:
        return None
    try:
        return parse_as_of(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None


def _now(session: Session, given: dt.datetime | None = None) -> dt.datetime:
    """Now by the database's clock (the one that decides closing), or the --as-of instant
    given, which may not lie ahead of it by more than BILLING_CLOCK_SKEW."""
    from tasks.base import database_clock
    from worker.config import settings

    now = database_clock(session)
    if given is None:
        return now
    if given > now + dt.timedelta(seconds=settings().clock_skew_seconds):
        raise click.BadParameter(
            f"{given.isoformat()} is in the future (now is {now.isoformat()})",
            param_hint="--as-of",
        )
    return given


def _print(result: dict[str, Any], as_json: bool, text: str) -> None:
    """The result as JSON or as `text`; a refusal's errors on stderr and exit status 1."""
    refused = result["status"] == "refused"
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    elif not refused:
        click.echo(text)
    else:
        for error in result["errors"]:
            click.echo(f"{error['field'] or '(request)'}: {error['message']}", err=True)
    if refused:
        raise SystemExit(1)


@click.group("collections")
def collections() -> None:
    """Collections: reminders, overdue notices, suspension and termination by class policy."""


@collections.command("run")
@click.option(
    "--as-of",
    metavar="ISO-8601",
    help="Take the steps due by this instant (with an offset or Z). Default: now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run_command(as_of: str | None, as_json: bool) -> None:
    """Take every collection step that is due, now, in this process.

    The same run the beat schedule starts (billing.collections.run): each step at most once
    per invoice, missed steps in order, safe beside running workers.
    """
    from tasks.collections import run_collections

    given = _parse_as_of(as_of)
    with unit_of_work() as session:
        summary = run_collections(session, now=_now(session, given)).as_json()
    steps = ", ".join(f"{count} {name}" for name, count in summary["steps"].items()) or "none"
    _print(
        summary,
        as_json,
        f"collections as of {summary['as_of']}: steps taken: {steps}; "
        f"{summary['notifications']} notification(s) written; "
        f"{summary['suspended']} suspended, {summary['terminated']} terminated, "
        f"{summary['resumed']} resumed; credit applied {summary['credit_applied']}",
    )


@invoices.command("void")
@click.argument("number", type=int)
@click.option(
    "--reseller", help="The reseller whose invoice NUMBER it is (needed if there are several)."
)
@click.option("--reason", required=True, help="Why it is voided (kept with the invoice).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def void_command(number: int, reseller: str | None, reason: str, as_json: bool) -> None:
    """Void unpaid invoice NUMBER: its charges wait for `billing invoices reissue`."""
    from tasks.corrections import void_invoice

    with unit_of_work() as session:
        result = void_invoice(
            session, reseller=reseller, number=number, reason=reason, now=_now(session)
        ).as_json()
    _print(
        result,
        as_json,
        f"invoice {number} is void; {result.get('charges_released')} charge(s) released; "
        f"`billing invoices reissue {number}` issues its replacement",
    )


@invoices.command("reissue")
@click.argument("number", type=int)
@click.option(
    "--reseller", help="The reseller whose invoice NUMBER it is (needed if there are several)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reissue_command(number: int, reseller: str | None, as_json: bool) -> None:
    """Issue the replacement of void invoice NUMBER, for the same period, with a new number."""
    from tasks.corrections import reissue_invoice

    with unit_of_work() as session:
        result = reissue_invoice(
            session, reseller=reseller, number=number, now=_now(session)
        ).as_json()
    _print(
        result,
        as_json,
        f"invoice {result.get('number')} replaces invoice {number} (total {result.get('total')})",
    )


@invoices.command("credit")
@click.argument("number", type=int)
@click.option(
    "--reseller", help="The reseller whose invoice NUMBER it is (needed if there are several)."
)
@click.option("--amount", required=True, help="The amount credited, e.g. 12.50.")
@click.option("--reason", required=True, help="What the credit is for.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def credit_command(
    number: int, reseller: str | None, amount: str, reason: str, as_json: bool
) -> None:
    """Issue a credit note against invoice NUMBER (its own gapless numbers per reseller)."""
    from tasks.corrections import credit_invoice

    with unit_of_work() as session:
        result = credit_invoice(
            session,
            reseller=reseller,
            number=number,
            amount=amount,
            reason=reason,
            now=_now(session),
        ).as_json()
    _print(
        result,
        as_json,
        f"credit note {result.get('credit_note')}: {result.get('amount')} "
        f"{result.get('currency')} on invoice {number}; "
        f"customer credit left {result.get('customer_credit')}",
    )


@customers.command("statement")
@click.argument("name")
@click.option("--reseller", help="The customer's reseller (needed if there are several).")
@click.option("--as-of", metavar="ISO-8601", help="The statement at this instant. Default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def statement_command(name: str, reseller: str | None, as_of: str | None, as_json: bool) -> None:
    """Invoices, payments and credit notes of NAME with a running balance, and what is
    overdue since when."""
    from models.intake import Problem
    from tasks.queries import customer_by_name, resolve_reseller
    from tasks.statements import customer_statement

    given = _parse_as_of(as_of)
    with unit_of_work() as session:
        at = _now(session, given)
        found = resolve_reseller(session, reseller)
        if isinstance(found, Problem):
            raise click.ClickException(found.message)
        customer = customer_by_name(session, found.id, name.strip())
        if customer is None:
            raise click.ClickException(f"{found.name!r} has no customer named {name!r}")
        statement = customer_statement(session, customer, at=at)
    if as_json:
        click.echo(json.dumps(statement, indent=2, ensure_ascii=False))
        return
    currency = statement["currency"]
    click.echo(f"Statement of {statement['customer']} ({currency}) as of {statement['as_of']}")
    for entry in statement["entries"]:
        what = entry["type"].replace("_", " ")
        ref = entry.get("number") or entry.get("invoice") or entry.get("idempotency_key") or ""
        extra = f"  [{entry['state']}]" if "state" in entry else ""
        click.echo(
            f"  {entry['at']}  {what:<16} {ref!s:<12} {entry['amount']:>14}  "
            f"balance {entry['balance']:>14}{extra}"
        )
    click.echo(f"amount due {statement['amount_due']} {currency}; credit {statement['credit']}")
    for item in statement["overdue"]:
        click.echo(
            f"  overdue: invoice {item['number']}, {item['amount_due']} {currency}, "
            f"since {item['overdue_since']}"
        )
    if statement["blocked"]:
        reasons = ", ".join(f"{r} since {s}" for r, s in statement["block_reasons"].items())
        click.echo(f"blocked: {reasons}")


COMMANDS = [collections]
