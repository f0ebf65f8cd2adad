"""The lookups services and commands share (until the tenancy change lands, by plain name).

- `resolve_reseller(session, name)`: the reseller a request or a command means; no name is
  allowed only when exactly one reseller exists.
- `customer_by_name(session, reseller_id, name)`: the one "customer by name" lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from models.catalog import Reseller
from models.customer import Customer
from models.validation import Problem

RESELLER_REQUIRED: Final = "reseller_required"


@dataclass(frozen=True)
class ResellerRef:
    id: int
    name: str


def resolve_reseller(
    session: Session, name: str | None, *, option: str = "reseller"
) -> ResellerRef | Problem:
    """The reseller called `name`, or the only one if `name` is None."""
    if name is not None:
        row = session.execute(
            select(Reseller.id, Reseller.name).where(func.lower(Reseller.name) == name.lower())
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
    """The reseller's customer called `name` (ignoring case)."""
    query = _customer(reseller_id).where(func.lower(Customer.name) == name.lower())
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()
