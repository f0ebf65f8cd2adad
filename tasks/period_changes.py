"""Closing one customer's period where the batch close cannot: at a rule or zone change.

A billing period rule or timezone change waits on the customer (`pending_billing_period`,
`pending_billing_timezone`) for the end of the period it was asked in (`pending_from`). The
batch close (`tasks.closing.close_due`) leaves a customer whose period ends at that boundary
alone; `close_switching_periods` closes those few, one by one, under the same guarantees
(claimed with `SKIP LOCKED`, one closed period per customer and period start, a conflict
means "already closed"): the period closes by the old rule and zone, and the next one runs
by the new ones (`models.period_changes`).

`close_current_period` is the one-customer step, also used by a customer's final close to
catch up on periods the closer has not reached yet.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import ClosedPeriod, Customer, CustomerStatus
from models.closing_rules import advance
from models.invoicing_rules import local_date
from models.period_changes import end_after_switch
from worker.db import dialect_insert


def record_closed_period(
    session: Session,
    customer: Customer,
    *,
    end: dt.datetime,
    end_date: dt.date,
    now: dt.datetime,
) -> int | None:
    """Record `customer`'s current period, ended at `end`, as closed; None if it already was."""
    start = customer.current_period_start
    tz = customer.billing_timezone
    closed_id: int | None = session.execute(
        dialect_insert(session)(ClosedPeriod)
        .values(
            customer_id=customer.id,
            period_start=start,
            period_end=end,
            start_date=local_date(start, tz),
            end_date=end_date,
            billing_period=customer.billing_period,
            billing_timezone=tz,
            closed_at=now,
            invoice_enqueued_at=now,
        )
        .on_conflict_do_nothing(index_elements=["customer_id", "period_start"])
        .returning(ClosedPeriod.id)
    ).scalar_one_or_none()
    return closed_id


def close_current_period(session: Session, customer: Customer, *, now: dt.datetime) -> int | None:
    """Close the (ended) current period of a locked customer and move it to the next one,
    switching rule and zone if a change waits at this boundary; the closed period's id, or
    None if another run had recorded it."""
    start, end = customer.current_period_start, customer.current_period_end
    rule, tz = customer.billing_period, customer.billing_timezone
    anchor = customer.created_local_date
    end_date = local_date(end, tz)
    closed_id = record_closed_period(session, customer, end=end, end_date=end_date, now=now)
    if customer.pending_from is not None and customer.pending_from == end:
        new_rule = customer.pending_billing_period or rule
        new_tz = customer.pending_billing_timezone or tz
        next_end = end_after_switch(new_rule, anchor, new_tz, end, end_date)
        customer.billing_period = new_rule
        customer.billing_timezone = new_tz
        customer.pending_billing_period = None
        customer.pending_billing_timezone = None
        customer.pending_from = None
    else:
        next_end = advance(rule, anchor, tz, start, end).next_end
    customer.current_period_start = end
    customer.current_period_end = next_end
    session.flush()
    return closed_id


def close_switching_periods(
    session: Session, *, now: dt.datetime, limit: int
) -> tuple[int, list[int]]:
    """Close up to `limit` periods that end at a waiting rule or zone change by `now`: how
    many customers moved on, and the ids of the closed periods this call recorded."""
    customers = session.scalars(
        select(Customer)
        .where(
            Customer.status == CustomerStatus.ACTIVE.value,
            Customer.pending_from.is_not(None),
            Customer.current_period_end == Customer.pending_from,
            Customer.current_period_end <= now,
        )
        .order_by(Customer.current_period_end, Customer.id)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True)
    ).all()
    closed = [close_current_period(session, customer, now=now) for customer in customers]
    return len(customers), [closed_id for closed_id in closed if closed_id is not None]
