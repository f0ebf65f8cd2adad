"""Fee lines of an invoice: the recurring fees of the customer's subscriptions.

`bill_fees(session, period, invoice_id)` runs inside invoice generation, in the invoice's
transaction, once per invoice created; `bill_fees_batch` does a batch of them, looking up
at once which of the batch's customers have any subscription at all. One statement reads
the customer's subscription terms not ended before the period, with their fee in the
customer's currency; a customer without any costs nothing more. With in-advance terms,
two more read the period that follows the closed one and the fees already recorded for
both periods. The rules (`models.fees.fee_lines`) say which lines to bill; one `INSERT …
ON CONFLICT DO NOTHING RETURNING` writes them into `subscription_fees`, the record unique
per (term, period start, kind): a line a concurrent generator recorded first is its, not
ours. The invoice lines follow in one insert. Nothing here renders or sends anything.

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
from models.base import table_of
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
from worker.db import dialect_insert, ids_in


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
    closed = ClosedPeriod
    row = session.execute(
        select(
            closed.start_date,
            closed.end_date,
            closed.billing_period,
            Customer.status,
            Customer.billing_period,
            Customer.billing_timezone,
            Customer.current_period_start,
            Customer.current_period_end,
        )
        .outerjoin(
            closed,
            and_(closed.customer_id == Customer.id, closed.period_start == period.period_end),
        )
        .where(Customer.id == period.customer_id)
    ).one()
    if row[0] is not None:
        return _billed_period(row[2], period.anchor, period.period_end, row[0], row[1])
    status, rule, tz, start, end = row[3:]
    if status != CustomerStatus.ACTIVE or start != period.period_end:
        return None
    return _billed_period(
        rule, period.anchor, period.period_end, local_date(start, tz), local_date(end, tz)
    )


def _terms(session: Session, period: ClosedPeriodFees) -> list[Any]:
    """Subscription terms not ended before the period, with their fee in the currency.

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
                or_(Subscription.ends_on.is_(None), Subscription.ends_on > period.start_date),
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
    # Most customers have no subscription: one query, and nothing else to do.
    rows = _terms(session, period)
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
    advance_terms = [t for t in terms if t.mode == BillingMode.ADVANCE]
    following = _following(session, period) if advance_terms else None
    # Arrears fees need no look-up: the unique record refuses a second one.
    recorded = _recorded(session, period, following) if advance_terms else []
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


def bill_fees_batch(session: Session, invoices: list[tuple[ClosedPeriodFees, int]]) -> None:
    """`bill_fees` for a batch of (period, invoice id), in the given (period) order. One
    query finds the batch's customers with any subscription; only their periods are billed
    one by one, so a batch of customers without plans costs that one query."""
    if not invoices:
        return
    subscribed = set(
        session.scalars(
            select(Subscription.customer_id)
            .where(ids_in(session, Subscription.customer_id, {p.customer_id for p, _ in invoices}))
            .distinct()
        )
    )
    for period, invoice_id in invoices:
        if period.customer_id in subscribed:
            bill_fees(session, period, invoice_id)


def _recorded(
    session: Session, period: ClosedPeriodFees, following: BilledPeriod | None
) -> list[Any]:
    keys = [period.period_start] + ([period.period_end] if following is not None else [])
    return list(
        session.execute(
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
        )
    )


def _record(
    session: Session, period: ClosedPeriodFees, invoice_id: int, lines: list[FeeLine]
) -> list[BilledFeeLine]:
    if not lines:
        return []
    # Core inserts: the ORM's bulk path costs more than the statement for a few rows.
    insert = dialect_insert(session)
    fees = table_of(SubscriptionFee)
    recorded = session.execute(
        insert(fees)
        .on_conflict_do_nothing(index_elements=["subscription_id", "period_start", "kind"])
        .returning(fees.c.id, fees.c.subscription_id, fees.c.period_start, fees.c.kind),
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
            insert(table_of(InvoiceLine)),
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
