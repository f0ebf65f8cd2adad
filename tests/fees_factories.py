"""Plans and subscriptions for tests, written through the services' own code where it exists."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Customer, Plan, PlanFee
from models.names import name_key
from tasks.subscriptions import PlanQuantity, set_quantities
from tests.factories import get_or_create_catalog


def make_plan(session: Session, name: str, mode: str, fees: dict[str, str] | None = None) -> Plan:
    """A plan of the test catalog's reseller and business model (found again by name)."""
    reseller, business_model, _ = get_or_create_catalog(session)
    plan = session.scalar(
        select(Plan).where(Plan.reseller_id == reseller.id, Plan.name_key == name_key(name))
    )
    if plan is not None:
        return plan
    plan = Plan(
        reseller_id=reseller.id,
        business_model_id=business_model.id,
        name=name,
        name_key=name_key(name),
        billing_mode=mode,
        description="",
    )
    session.add(plan)
    session.flush()
    for currency, amount in (fees or {"USD": "30.00"}).items():
        session.add(PlanFee(plan_id=plan.id, currency=currency, amount=Decimal(amount)))
    session.flush()
    return plan


def subscribe(
    session: Session, customer: Customer, plan: Plan, quantity: int, at: dt.datetime
) -> None:
    """Set `customer`'s quantity of `plan` from `at` on (0 ends it)."""
    set_quantities(
        session,
        customer.id,
        customer.billing_timezone,
        [PlanQuantity(plan.id, plan.name, quantity)],
        at=at,
    )
