"""`billing customers update | suspend | resume | close | history`: life after intake.

Each command runs its service in this process, in one transaction (the same services as
the tasks `billing.customers.update`, `.suspend`, `.resume` and `.close`), and prints what changed
or every reason it refused; exit status 1 on a refusal. Invoice generation a close needs is
queued to the workers after the commit.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click

from tasks.closing import parse_as_of
from tasks.customer_close import close_customer
from tasks.customer_history import history
from tasks.customer_suspension import resume_customer, suspend_customer
from tasks.customer_update import update_customer
from tasks.queries import ResellerRef, customer_by_name, resolve_reseller
from tasks.subscriptions import current_subscriptions
from worker.cli.customers import customers
from worker.config import settings
from worker.db import unit_of_work

_NONE = {"none", "null", ""}


def _refused(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        click.echo(f"{result['status']}:", err=True)
        for error in result.get("errors", []):
            where = error["field"] or "(request)"
            click.echo(f"  {where}: {error['message']} [{error['code']}]", err=True)
    sys.exit(1)


def _value(raw: str) -> Any:
    """A custom field value as given on the command line: JSON if it reads as JSON, else text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _subscription(raw: str) -> dict[str, Any]:
    plan, sep, quantity = raw.rpartition("=")
    if not sep or not plan.strip():
        raise click.BadParameter(
            f"{raw!r} is not PLAN=QUANTITY (such as 'PBX seat=25'; 0 ends it)",
            param_hint="--subscription",
        )
    try:
        return {"plan": plan.strip(), "quantity": int(quantity)}
    except ValueError:
        raise click.BadParameter(
            f"{quantity!r} is not a whole number in {raw!r}", param_hint="--subscription"
        ) from None


@customers.command("update")
@click.argument("name")
@click.option("--reseller", help="The customer's reseller (needed when there are several).")
@click.option("--class", "customer_class", help="Move the customer to this customer class.")
@click.option(
    "--credit-limit", metavar="AMOUNT|none", help="New credit limit (postpaid); none removes it."
)
@click.option(
    "--set",
    "set_fields",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Set a custom data field (VALUE read as JSON when it is JSON). Repeatable.",
)
@click.option("--unset", "unset_fields", multiple=True, metavar="FIELD", help="Remove a field.")
@click.option("--billing-period", help="New billing period rule, from the next boundary on.")
@click.option("--billing-timezone", help="New billing timezone, from the next boundary on.")
@click.option(
    "--subscription",
    "subscriptions",
    multiple=True,
    metavar="PLAN=QUANTITY",
    help="Set a plan's quantity from now on (0 ends it). Repeatable.",
)
@click.option("--request-id", help="Recorded with every change in the history.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def update_command(
    name: str,
    reseller: str | None,
    customer_class: str | None,
    credit_limit: str | None,
    set_fields: tuple[str, ...],
    unset_fields: tuple[str, ...],
    billing_period: str | None,
    billing_timezone: str | None,
    subscriptions: tuple[str, ...],
    request_id: str | None,
    as_json: bool,
) -> None:
    """Change the customer NAME: class, credit limit, custom data, subscriptions (at once),
    billing period rule and timezone (from the end of the current period)."""
    payload: dict[str, Any] = {"name": name}
    if reseller is not None:
        payload["reseller"] = reseller
    if customer_class is not None:
        payload["customer_class"] = customer_class
    if credit_limit is not None:
        payload["credit_limit"] = None if credit_limit.strip().lower() in _NONE else credit_limit
    custom: dict[str, Any] = {}
    for item in set_fields:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="--set")
        custom[field.strip()] = _value(value)
    for field in unset_fields:
        custom[field.strip()] = None
    if custom:
        payload["custom_data"] = custom
    if billing_period is not None:
        payload["billing_period"] = billing_period
    if billing_timezone is not None:
        payload["billing_timezone"] = billing_timezone
    if subscriptions:
        payload["subscriptions"] = [_subscription(s) for s in subscriptions]
    if request_id is not None:
        payload["request_id"] = request_id
    now = dt.datetime.now(dt.UTC)
    with unit_of_work() as session:
        result = update_customer(session, payload, now=now, request_id=None).as_json()
    if result["status"] == "rejected":
        _refused(result, as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    if not result["changes"]:
        click.echo(f"{result['name']}: nothing to change")
    for change in result["changes"]:
        click.echo(
            f"{result['name']}: {change['field']} {json.dumps(change['old'])} -> "
            f"{json.dumps(change['new'])} (from {change['effective_at']})"
        )


@customers.command("close")
@click.argument("name")
@click.option("--reseller", help="The customer's reseller (needed when there are several).")
@click.option(
    "--at",
    "at",
    metavar="ISO-8601",
    help="Close at this instant (with an offset or Z; not in the future). Default: now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def close_command(name: str, reseller: str | None, at: str | None, as_json: bool) -> None:
    """Close the customer NAME: cut its current period at --at and invoice it (the final
    invoice); no period follows and later charges are refused. Running it again changes
    nothing."""
    now = dt.datetime.now(dt.UTC)
    try:
        cut = parse_as_of(at) if at is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    with unit_of_work() as session:
        result = close_customer(
            session,
            reseller=reseller,
            name=name,
            at=cut,
            now=now,
            clock_skew=dt.timedelta(seconds=settings().clock_skew_seconds),
        ).as_json()
    if result["status"] == "refused":
        _refused(result, as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    if result["status"] == "already_closed":
        click.echo(f"{result['name']} was already closed at {result['closed_at']}")
        return
    periods = len(result["closed_period_ids"])
    click.echo(
        f"{result['name']} closed at {result['closed_at']}; {periods} period(s) closed, "
        "the last one is the final invoice (queued)"
    )


@customers.command("suspend")
@click.argument("name")
@click.option("--reseller", help="The customer's reseller (needed when there are several).")
@click.option("--note", default="", help="Why (kept with the block and in the history).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def suspend_command(name: str, reseller: str | None, note: str, as_json: bool) -> None:
    """Suspend the customer NAME: block it for the operator reason (charges refused; it is
    still billed). Resume lifts only this reason."""
    now = dt.datetime.now(dt.UTC)
    with unit_of_work() as session:
        result = suspend_customer(
            session, reseller=reseller, name=name, note=note, now=now
        ).as_json()
    _report_suspension(result, as_json)


@customers.command("resume")
@click.argument("name")
@click.option("--reseller", help="The customer's reseller (needed when there are several).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def resume_command(name: str, reseller: str | None, as_json: bool) -> None:
    """Resume the customer NAME: lift the operator block (other block reasons stay)."""
    now = dt.datetime.now(dt.UTC)
    with unit_of_work() as session:
        result = resume_customer(session, reseller=reseller, name=name, now=now).as_json()
    _report_suspension(result, as_json)


def _report_suspension(result: dict[str, Any], as_json: bool) -> None:
    if result["status"] == "refused":
        _refused(result, as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    still = ", ".join(result["block_reasons"]) or "none"
    click.echo(
        f"{result['name']}: {result['status'].replace('_', ' ')}; "
        f"{'blocked' if result['blocked'] else 'not blocked'} (block reasons: {still})"
    )


@customers.command("history")
@click.argument("name")
@click.option("--reseller", help="The customer's reseller (needed when there are several).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_command(name: str, reseller: str | None, as_json: bool) -> None:
    """Show the customer NAME's subscriptions and every change made to it, oldest first."""
    with unit_of_work() as session:
        found = resolve_reseller(session, reseller, option="--reseller")
        if not isinstance(found, ResellerRef):
            click.echo(found.message, err=True)
            sys.exit(1)
        customer = customer_by_name(session, found.id, name)
        if customer is None:
            click.echo(f"no customer named {name!r}", err=True)
            sys.exit(1)
        out: dict[str, Any] = {
            "name": customer.name,
            "status": customer.status,
            "closed_at": customer.closed_at.isoformat() if customer.closed_at else None,
            "pending_change": None
            if customer.pending_from is None
            else {
                "billing_period": customer.pending_billing_period,
                "billing_timezone": customer.pending_billing_timezone,
                "from": customer.pending_from.isoformat(),
            },
            "subscriptions": current_subscriptions(session, customer.id),
            "changes": history(session, customer.id),
        }
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    click.echo(f"{out['name']} ({out['status']})")
    if out["pending_change"]:
        click.echo(f"  waiting change: {json.dumps(out['pending_change'])}")
    for sub in out["subscriptions"]:
        click.echo(f"  subscription: {sub['plan']} x {sub['quantity']} since {sub['since']}")
    for change in out["changes"]:
        click.echo(
            f"  {change['changed_at']}  {change['field']}: {json.dumps(change['old'])} -> "
            f"{json.dumps(change['new'])} (from {change['effective_at']}"
            + (f", request {change['request_id']})" if change["request_id"] else ")")
        )


COMMANDS: list[click.Command] = []  # the commands join the `customers` group above
