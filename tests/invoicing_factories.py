"""Rows the charge and invoice tests need: customers with explicit periods, closed periods.

Independent of the period engine: a test states its period boundaries as literal instants,
so what is checked is the invoicing, not the period arithmetic.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from models import BlockReason, ClosedPeriod, Customer, LedgerEntry
from tests.factories import get_or_create_catalog

_names = itertools.count(1)


def local_midnight(day: dt.date, tz: str) -> dt.datetime:
    """`day` 00:00 in `tz`, as an aware UTC instant (the test zones have no midnight DST)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)


def billing_customer(
    session: Session,
    *,
    name: str | None = None,
    balance_control: str = "postpaid",
    currency: str = "USD",
    credit_limit: Decimal | None = None,
    funds: Decimal = Decimal(0),
    billing_timezone: str = "UTC",
    created: dt.date = dt.date(2026, 3, 19),
    period_end: dt.date = dt.date(2026, 4, 19),
    reseller: str = "acme",
    customer_class: str = "Business",
    class_fields: dict[str, Any] | None = None,
    customer_fields: dict[str, Any] | None = None,
) -> Customer:
    """A customer whose open period is [created, period_end); prepaid `funds` go through an
    opening ledger entry, as intake writes them."""
    r, bm, cc = get_or_create_catalog(
        session, reseller=reseller, customer_class=customer_class, **(class_fields or {})
    )
    customer = Customer(
        reseller_id=r.id,
        name=name or f"Billing customer {next(_names)}",
        business_model_id=bm.id,
        customer_class_id=cc.id,
        billing_period="monthly_anniversary",
        billing_timezone=billing_timezone,
        balance_control=balance_control,
        currency=currency,
        credit_limit=credit_limit if balance_control == "postpaid" else None,
        balance=funds,
        created_at=local_midnight(created, billing_timezone),
        created_local_date=created,
        current_period_start=local_midnight(created, billing_timezone),
        current_period_end=local_midnight(period_end, billing_timezone),
        **(customer_fields or {}),
    )
    session.add(customer)
    session.flush()
    if balance_control == "prepaid" and funds <= 0:
        # Imported here: tests/unit/conftest.py imports this module before the test
        # settings exist, and importing `worker` reads them.
        from tasks.blocks import block

        block(session, customer, BlockReason.NO_FUNDS, at=customer.created_at)
    if funds:
        session.add(
            LedgerEntry(
                customer_id=customer.id,
                entry_type="opening",
                amount=funds,
                balance_after=funds,
                created_at=customer.created_at,
            )
        )
        session.flush()
    return customer


def close_period(
    session: Session, customer: Customer, start: dt.date, end: dt.date
) -> ClosedPeriod:
    """A closed period [start, end) (local dates in the customer's billing timezone)."""
    tz = customer.billing_timezone
    period = ClosedPeriod(
        customer_id=customer.id,
        period_start=local_midnight(start, tz),
        period_end=local_midnight(end, tz),
        start_date=start,
        end_date=end,
        billing_period=customer.billing_period,
        billing_timezone=tz,
        closed_at=local_midnight(end, tz),
    )
    session.add(period)
    session.flush()
    return period


def close_engine_period(session: Session, customer: Customer, period: Any) -> ClosedPeriod:
    """A closed period from the period engine's `Period` (aware start/end in the zone)."""
    row = ClosedPeriod(
        customer_id=customer.id,
        period_start=period.start.astimezone(dt.UTC),
        period_end=period.end.astimezone(dt.UTC),
        start_date=period.start.date(),
        end_date=period.end.date(),
        billing_period=customer.billing_period,
        billing_timezone=customer.billing_timezone,
        closed_at=period.end.astimezone(dt.UTC),
    )
    session.add(row)
    session.flush()
    return row


def charge_payload(
    customer: Customer | str,
    amount: str,
    occurred_at: dt.datetime,
    key: str | None = None,
    *,
    currency: str | None = None,
    description: str = "Calls",
) -> dict[str, Any]:
    name = customer if isinstance(customer, str) else customer.name
    return {
        "customer": name,
        "amount": amount,
        "currency": currency or ("USD" if isinstance(customer, str) else customer.currency),
        "occurred_at": occurred_at.isoformat(),
        "description": description,
        "idempotency_key": key or f"{name}-{occurred_at.isoformat()}-{amount}",
    }


def payment_payload(
    customer: Customer, amount: str, received_at: dt.datetime, key: str
) -> dict[str, Any]:
    return {
        "customer": customer.name,
        "amount": amount,
        "currency": customer.currency,
        "received_at": received_at.isoformat(),
        "idempotency_key": key,
    }


def embedded_engine(folder: Any) -> Any:
    """An engine on a fresh SQLite file (the embedded default), with the whole schema."""
    import models
    from worker.db import make_engine

    engine = make_engine(f"sqlite:///{folder}/billing.sqlite3")
    models.Base.metadata.create_all(engine)
    return engine
