"""The lookups every service and command shares, all within one reseller (the tenant).

- `resolve_reseller(session, name)`: the reseller a request or a command means. A name is
  matched by its key (`models.names.name_key`, so `ACME` finds `acme`); no name is allowed
  only when exactly one reseller exists.
- `customer_by_name(session, reseller_id, name)`: the one "customer by name" lookup, by
  name key within the reseller.
- `customer_by_id(session, reseller_id, customer_id)`: a customer id, only if the customer
  belongs to the reseller (another reseller's id is "no such customer", never a hint).

`for_update=True` locks the row `FOR NO KEY UPDATE` (money writers: rows that only refer
to the customer, such as invoices, are not blocked by it). Messages never name, count or
hint at another reseller's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from models.catalog import Reseller
from models.customer import Customer
from models.names import name_key
from models.validation import Problem

RESELLER_REQUIRED: Final = "reseller_required"


@dataclass(frozen=True)
class ResellerRef:
    id: int
    name: str


def resolve_reseller(
    session: Session, name: str | None, *, option: str = "reseller"
) -> ResellerRef | Problem:
    """The reseller called `name` (any case), or the only one if `name` is None.

    `option` is how the caller's user gives it (`reseller` in a payload, `--reseller` on the
    command line); it names the problem's field.
    """
    if name is not None:
        row = session.execute(
            select(Reseller.id, Reseller.name).where(Reseller.name_key == name_key(name))
        ).one_or_none()
        if row is None:
            return Problem(option, "not_found", f"there is no reseller named {name!r}")
        return ResellerRef(row.id, row.name)
    rows = session.execute(select(Reseller.id, Reseller.name).limit(2)).all()
    if len(rows) == 1:
        return ResellerRef(rows[0].id, rows[0].name)
    if not rows:
        return Problem(option, "not_found", "there is no reseller yet; load a catalog first")
    return Problem(
        option,
        RESELLER_REQUIRED,
        f"{option} is required: there is more than one reseller, so say which one",
    )


def _customer(reseller_id: int) -> Select[Customer]:
    return select(Customer).where(Customer.reseller_id == reseller_id)


def customer_by_name(
    session: Session, reseller_id: int, name: str, *, for_update: bool = False
) -> Customer | None:
    """The reseller's customer whose name has `name`'s key (ignoring case and form)."""
    query = _customer(reseller_id).where(Customer.name_key == name_key(name))
    if for_update:
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def customer_by_id(
    session: Session, reseller_id: int, customer_id: int, *, for_update: bool = False
) -> Customer | None:
    """The customer `customer_id` if it belongs to the reseller, else None."""
    query = _customer(reseller_id).where(Customer.id == customer_id)
    if for_update:
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()
