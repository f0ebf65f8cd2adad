"""`--reseller` for every command that looks a customer (or an invoice) up by name or number.

The reseller is the tenant: a customer name means something only within one reseller.
`--reseller` may be left out only while exactly one reseller exists; the message says so.
"""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from models.customer import Customer
from models.intake import Problem
from tasks.queries import ResellerRef, customer_by_name, resolve_reseller

reseller_option = click.option(
    "--reseller",
    help="The reseller (name, any case); may be left out while only one reseller exists.",
)


def reseller_or_fail(session: Session, name: str | None) -> ResellerRef:
    """The reseller `--reseller` names (or the only one); a clear error otherwise."""
    ref = resolve_reseller(session, name, option="--reseller")
    if isinstance(ref, Problem):
        raise click.ClickException(ref.message)
    return ref


def customer_or_fail(
    session: Session, reseller: str | None, name: str, *, option: str = "customer"
) -> tuple[ResellerRef, Customer]:
    """The reseller and its customer called `name` (ignoring case); a clear error otherwise."""
    ref = reseller_or_fail(session, reseller)
    customer = customer_by_name(session, ref.id, name.strip())
    if customer is None:
        raise click.ClickException(f"reseller {ref.name!r} has no {option} named {name!r}")
    return ref, customer
