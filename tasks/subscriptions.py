"""Subscription terms: starting, changing and ending a customer's subscriptions to plans.

A customer has at most one open term per plan (a partial unique index). Setting a plan's
quantity ends the open term at that instant and starts a new one (linked by
`replaces_id`), so a change in the middle of a period prorates both sides; quantity 0 ends
the subscription. Terms store their instants and the local dates proration counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Plan, PlanFee, Subscription
from models.invoicing_rules import local_date
from models.names import name_key
from models.subscription_requests import PlanRef


@dataclass(frozen=True)
class PlanQuantity:
    """A requested quantity of a plan (validated: the plan is the customer's to take)."""

    plan_id: int
    plan: str
    quantity: int  # 0 ends the subscription


def current_subscriptions(session: Session, customer_id: int) -> list[dict[str, Any]]:
    """The customer's open terms as JSON: `[{"plan", "quantity", "since"}]`, by plan name."""
    rows = session.execute(
        select(Plan.name, Subscription.quantity, Subscription.starts_at)
        .join(Plan, Plan.id == Subscription.plan_id)
        .where(Subscription.customer_id == customer_id, Subscription.ends_at.is_(None))
        .order_by(Plan.name)
    ).all()
    return [
        {
            "plan": row.name,
            "quantity": row.quantity,
            "since": row.starts_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        for row in rows
    ]


def set_quantities(
    session: Session,
    customer_id: int,
    timezone: str,
    requested: Iterable[PlanQuantity],
    *,
    at: dt.datetime,
) -> bool:
    """Give each requested plan of the customer its quantity from `at` on (local dates in
    the customer's billing `timezone`); whether anything changed."""
    wanted = {item.plan_id: item for item in requested}
    if not wanted:
        return False
    open_terms = {
        term.plan_id: term
        for term in session.scalars(
            select(Subscription)
            .where(
                Subscription.customer_id == customer_id,
                Subscription.plan_id.in_(wanted),
                Subscription.ends_at.is_(None),
            )
            .with_for_update()
        )
    }
    day = local_date(at, timezone)
    changed = False
    for plan_id, item in wanted.items():
        term = open_terms.get(plan_id)
        if term is not None and term.quantity == item.quantity:
            continue
        if term is None and item.quantity == 0:
            continue
        replaces = None
        if term is not None:
            term.ends_at = max(term.starts_at, at)
            term.ends_on = max(term.starts_on, day)
            replaces = term.id
            # The partial unique index allows one open term per plan: close this one first.
            session.flush()
        if item.quantity > 0:
            session.add(
                Subscription(
                    customer_id=customer_id,
                    plan_id=plan_id,
                    quantity=item.quantity,
                    starts_at=at,
                    starts_on=day,
                    replaces_id=replaces,
                )
            )
        changed = True
    session.flush()
    return changed


def plans_named(session: Session, reseller_id: int, names: Iterable[str]) -> dict[str, PlanRef]:
    """The reseller's plans with these names, by name key, with the currencies they offer."""
    keys = {name_key(name) for name in names}
    if not keys:
        return {}
    rows = session.execute(
        select(Plan.id, Plan.name, Plan.name_key, Plan.business_model_id, PlanFee.currency)
        .outerjoin(PlanFee, PlanFee.plan_id == Plan.id)
        .where(Plan.reseller_id == reseller_id, Plan.name_key.in_(keys))
    ).all()
    found: dict[str, tuple[int, str, int, set[str]]] = {}
    for row in rows:
        entry = found.setdefault(row.name_key, (row.id, row.name, row.business_model_id, set()))
        if row.currency is not None:
            entry[3].add(row.currency)
    return {
        key: PlanRef(plan_id, name, model_id, frozenset(currencies))
        for key, (plan_id, name, model_id, currencies) in found.items()
    }
