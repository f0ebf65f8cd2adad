"""Rows for tests, built through the ORM with the real period engine.

`make_customer` stores a customer exactly as intake would (first period from the engine);
tests that exercise intake itself go through the intake service or task instead.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import BusinessModel, Customer, CustomerClass, Reseller
from models.names import name_key

_names = itertools.count(1)

# Passed as a value to `intake_payload`, removes the key instead of setting it.
DROP = object()


def intake_payload(**changes: Any) -> dict[str, Any]:
    """A valid intake job for the example catalog (examples/catalog.yaml), with `changes`
    applied; a value of DROP removes that key."""
    payload: dict[str, Any] = {
        "reseller": "acme",
        "name": "Globex Corp",
        "business_model": "Hosted IP PBX",
        "customer_class": "Business",
        "billing_period": "monthly_anniversary",
        "billing_timezone": "America/New_York",
        "balance_control": "postpaid",
        "currency": "USD",
        "credit_limit": "500.00",
        "custom_data": {"tax_code": "X1"},
    }
    for key, value in changes.items():
        if value is DROP:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def get_or_create_catalog(
    session: Session,
    *,
    reseller: str = "acme",
    business_model: str = "Hosted IP PBX",
    customer_class: str = "Business",
    **class_fields: Any,
) -> tuple[Reseller, BusinessModel, CustomerClass]:
    """The reseller and its own business model and class of these names (made if missing)."""
    r = session.scalar(select(Reseller).where(Reseller.name_key == name_key(reseller)))
    if r is None:
        r = Reseller(name=reseller, name_key=name_key(reseller), display_name=reseller.title())
        session.add(r)
        session.flush()
    bm = session.scalar(
        select(BusinessModel).where(
            BusinessModel.reseller_id == r.id, BusinessModel.name_key == name_key(business_model)
        )
    )
    if bm is None:
        bm = BusinessModel(
            reseller_id=r.id,
            name=business_model,
            name_key=name_key(business_model),
            service_type="voice",
            description="",
        )
        session.add(bm)
    cc = session.scalar(
        select(CustomerClass).where(
            CustomerClass.reseller_id == r.id, CustomerClass.name_key == name_key(customer_class)
        )
    )
    if cc is None:
        cc = CustomerClass(
            reseller_id=r.id, name=customer_class, name_key=name_key(customer_class), **class_fields
        )
        session.add(cc)
    session.flush()
    return r, bm, cc


def make_customer(
    session: Session,
    *,
    name: str | None = None,
    billing_period: str = "monthly",
    billing_timezone: str = "UTC",
    created_at: dt.datetime | None = None,
    balance_control: str = "postpaid",
    currency: str = "USD",
    credit_limit: Decimal | None = Decimal("500.00"),
    balance: Decimal = Decimal(0),
    reseller: str = "acme",
    **fields: Any,
) -> Customer:
    """A customer whose current period is the engine's first period for `created_at`."""
    import pendulum

    from models.periods import first_period

    owner, business_model, customer_class = get_or_create_catalog(session, reseller=reseller)
    created_at = created_at or dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
    local_date = pendulum.instance(created_at).in_timezone(billing_timezone).date()
    period = first_period(billing_period, local_date, billing_timezone)
    name = name or f"Customer {next(_names)}"
    customer = Customer(
        reseller_id=owner.id,
        name=name,
        name_key=name_key(name),
        business_model_id=business_model.id,
        customer_class_id=customer_class.id,
        billing_period=billing_period,
        billing_timezone=billing_timezone,
        balance_control=balance_control,
        currency=currency,
        credit_limit=credit_limit if balance_control == "postpaid" else None,
        balance=balance,
        created_at=created_at,
        created_local_date=local_date,
        current_period_start=period.start,
        current_period_end=period.end,
        **fields,
    )
    session.add(customer)
    session.flush()
    return customer
