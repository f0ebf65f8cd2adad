"""Fee lines of an invoice: the recurring fees of the customer's subscriptions.

`bill_fees(session, period, invoice_id)` runs inside invoice generation, in the invoice's
transaction, once per invoice created. It reads in three statements what the rules need
(the period that follows the closed one, the subscription terms overlapping either period
with their fee in the customer's currency, the fees already recorded for both periods),
asks `models.fees.fee_lines` which lines to bill, and writes them with one
`INSERT … ON CONFLICT DO NOTHING RETURNING` into `subscription_fees`, the record unique per
(term, period start, kind): a line a concurrent generator recorded first is its, not ours.
The invoice lines follow in one insert. Nothing here renders or sends anything.

The period that follows the closed one is the closed period starting at its end if the
closer got there, else the customer's open period if it starts there; a customer closed at
that boundary has none, so no advance fee is billed past the close.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from models import (
    ClosedPeriod,
    Customer,
    CustomerStatus,
    InvoiceLine,
    Plan,
    PlanFee,
    Subscription,
    SubscriptionFee,
)
from models.fees import (
    Billed,
    BilledPeriod,
    BillingMode,
    Days,
    FeeKind,
    FeeLine,
    describe,
    fee_lines,
    whole_period,
)
from models.fees import Subscription as Term
from models.invoicing_rules import local_date
from worker.db import dialect_insert


@dataclass(frozen=True)
class ClosedPeriodFees:
    """What fee billing needs about one closed period (read with the invoice's period)."""

    closed_period_id: int
    customer_id: int
    currency: str
    anchor: dt.date  # the customer's period anchor (creation date)
    billing_period: str
    timezone: str
    period_start: dt.datetime
    period_end: dt.datetime
    start_date: dt.date
    end_date: dt.date


@dataclass(frozen=True)
class BilledFeeLine:
    """A fee line written to an invoice."""

    fee_id: int
    description: str
    amount: Decimal


def _billed_period(
    rule: str, anchor: dt.date, key: dt.datetime, start: dt.date, end: dt.date
) -> BilledPeriod:
    days = Days(start, max(end, start + dt.timedelta(days=1)))
    return BilledPeriod(key=key, days=days, whole=whole_period(rule, anchor, days))


def _following(session: Session, period: ClosedPeriodFees) -> BilledPeriod | None:
    """The period that starts where `period` ends, closed or still open; None if none will."""
    closed = session.execute(
        select(ClosedPeriod.start_date, ClosedPeriod.end_date, ClosedPeriod.billing_period).where(
            ClosedPeriod.customer_id == period.customer_id,
            ClosedPeriod.period_start == period.period_end,
        )
    ).one_or_none()
    if closed is not None:
        return _billed_period(
            closed.billing_period,
            period.anchor,
            period.period_end,
            closed.start_date,
            closed.end_date,
        )
    current = session.execute(
        select(
            Customer.billing_period,
            Customer.billing_timezone,
            Customer.current_period_start,
            Customer.current_period_end,
        ).where(
            Customer.id == period.customer_id,
            Customer.status == CustomerStatus.ACTIVE.value,
            Customer.current_period_start == period.period_end,
        )
    ).one_or_none()
    if current is None:
        return None
    return _billed_period(
        current.billing_period,
        period.anchor,
        period.period_end,
        local_date(current.current_period_start, current.billing_timezone),
        local_date(current.current_period_end, current.billing_timezone),
    )


def _terms(session: Session, period: ClosedPeriodFees, first: dt.date, end: dt.date) -> list[Any]:
    """Subscription terms whose days meet `[first, end)`, with their fee in the currency.

    A plan without a fee in the customer's currency (intake refuses such subscriptions) is
    left out rather than billed at an invented price.
    """
    return list(
        session.execute(
            select(
                Subscription.id,
                Subscription.quantity,
                Subscription.starts_on,
                Subscription.ends_on,
                Subscription.starts_at,
                Plan.name,
                Plan.billing_mode,
                PlanFee.amount,
            )
            .join(Plan, Plan.id == Subscription.plan_id)
            .join(PlanFee, and_(PlanFee.plan_id == Plan.id, PlanFee.currency == period.currency))
            .where(
                Subscription.customer_id == period.customer_id,
                Subscription.starts_on < end,
                or_(Subscription.ends_on.is_(None), Subscription.ends_on > first),
            )
            .order_by(Plan.name, Subscription.starts_on, Subscription.id)
        )
    )


def bill_fees(session: Session, period: ClosedPeriodFees, invoice_id: int) -> list[BilledFeeLine]:
    """Record and attach the fee lines of `period`'s invoice; see the module docstring."""
    closed = _billed_period(
        period.billing_period,
        period.anchor,
        period.period_start,
        period.start_date,
        period.end_date,
    )
    following = _following(session, period)
    horizon = (following or closed).days.end
    assert horizon is not None
    rows = _terms(session, period, closed.days.start, horizon)
    if not rows:
        return []
    terms = [
        Term(
            id=row.id,
            plan=row.name,
            mode=BillingMode(row.billing_mode),
            unit_fee=row.amount,
            quantity=row.quantity,
            days=Days(row.starts_on, row.ends_on),
            started=row.starts_at,
        )
        for row in rows
    ]
    keys = [period.period_start] + ([period.period_end] if following is not None else [])
    recorded = session.execute(
        select(
            SubscriptionFee.subscription_id,
            SubscriptionFee.period_start,
            SubscriptionFee.kind,
            SubscriptionFee.amount,
            SubscriptionFee.first_day,
            SubscriptionFee.last_day,
        ).where(
            SubscriptionFee.customer_id == period.customer_id,
            SubscriptionFee.period_start.in_(keys),
        )
    ).all()
    advance = {
        (r.subscription_id, r.period_start): Billed(
            r.amount, Days(r.first_day, r.last_day + dt.timedelta(days=1))
        )
        for r in recorded
        if r.kind == FeeKind.ADVANCE
    }
    already = [(r.subscription_id, r.period_start, FeeKind(r.kind)) for r in recorded]
    lines = fee_lines(closed, following, terms, advance, already, period.currency)
    return _record(session, period, invoice_id, lines)


def _record(
    session: Session, period: ClosedPeriodFees, invoice_id: int, lines: list[FeeLine]
) -> list[BilledFeeLine]:
    if not lines:
        return []
    insert = dialect_insert(session)
    recorded = session.execute(
        insert(SubscriptionFee)
        .on_conflict_do_nothing(index_elements=["subscription_id", "period_start", "kind"])
        .returning(
            SubscriptionFee.id,
            SubscriptionFee.subscription_id,
            SubscriptionFee.period_start,
            SubscriptionFee.kind,
        ),
        [
            {
                "subscription_id": line.subscription_id,
                "customer_id": period.customer_id,
                "invoice_id": invoice_id,
                "kind": line.kind.value,
                "period_start": line.period_key,
                "first_day": line.first_day,
                "last_day": line.last_day,
                "days": line.days,
                "period_days": line.period_days,
                "quantity": line.quantity,
                "amount": line.amount,
            }
            for line in lines
        ],
    ).all()
    ids = {(r.subscription_id, r.period_start, r.kind): r.id for r in recorded}
    billed = []
    for line in lines:
        fee_id = ids.get((line.subscription_id, line.period_key, line.kind.value))
        if fee_id is not None:  # else a concurrent generator billed it on its invoice
            billed.append(BilledFeeLine(fee_id, describe(line), line.amount))
    if billed:
        session.execute(
            insert(InvoiceLine),
            [
                {
                    "invoice_id": invoice_id,
                    "fee_id": line.fee_id,
                    "description": line.description,
                    "amount": line.amount,
                    "occurred_at": None,
                }
                for line in billed
            ],
        )
    return billed
