"""Closing a customer: its current period is cut at an instant and closed with a final invoice.

`close_customer(session, reseller, name, at=…, now=…)`, under the customer's row lock, in
the caller's one transaction:

1. periods that ended by `at` and that the closer has not reached yet are closed first, one
   by one, exactly as the closer would (rule or zone changes included);
2. the current period is cut at `at` and recorded as the last closed period (`[start, at)`,
   covering the local day of `at` if `at` is not a day start): its invoice is the final
   one, with the usage up to `at` and the fees prorated to the day `at` falls on (the
   subscriptions end at `at`, and the day a subscription ends is not billed);
3. every open subscription ends at `at`; the customer becomes `closed` (`closed_at = at`),
   so no period follows, the closer leaves it alone, and later charges are refused;
4. the change is recorded in the customer's history; invoice generation is queued after the
   commit.

Exactly once: a crash before the commit leaves nothing (a rerun does it all); after it, a
rerun finds the customer closed and answers `already_closed` (queuing the invoicing of any
of its closed periods still uninvoiced, which changes nothing if it is under way). The
closed periods are unique per (customer, period start) like every close.

Refusals (nothing changed): `unknown_customer`, `in_future` (`at` later than now plus the
allowed clock skew), `before_creation`, `period_already_closed` (`at` falls in a period
already closed and invoiced: a customer cannot be closed in the past of its invoices),
`customer_terminated`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import ClosedPeriod, Customer, CustomerStatus, Plan, Subscription
from models.invoicing_rules import local_date
from models.period_changes import cut_end_date
from models.validation import Problem
from tasks.base import BillingTask, send_after_commit, utcnow
from tasks.closing import parse_as_of
from tasks.customer_history import Change, record_changes
from tasks.period_changes import close_current_period, record_closed_period
from tasks.queries import customer_by_name, resolve_reseller
from worker.celery_app import app
from worker.config import settings
from worker.db import unit_of_work

GENERATE_INVOICES = "billing.invoices.generate"
INVOICING_QUEUE = "invoicing"


class CloseStatus(StrEnum):
    CLOSED = "closed"
    ALREADY_CLOSED = "already_closed"
    REFUSED = "refused"


@dataclass(frozen=True)
class CloseResult:
    status: CloseStatus
    customer_id: int | None = None
    name: str | None = None
    closed_at: dt.datetime | None = None
    closed_period_ids: tuple[int, ...] = ()  # recorded by this call, the final one last
    errors: tuple[Problem, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status.value}
        if self.status == CloseStatus.REFUSED:
            out["errors"] = [p.as_dict() for p in self.errors]
            return out
        out.update(
            customer_id=self.customer_id,
            name=self.name,
            closed_at=_iso(self.closed_at),
            closed_period_ids=list(self.closed_period_ids),
        )
        return out


def _iso(instant: dt.datetime | None) -> str | None:
    return (
        None if instant is None else instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    )


def _refused(field_name: str | None, code: str, message: str) -> CloseResult:
    return CloseResult(CloseStatus.REFUSED, errors=(Problem(field_name, code, message),))


def close_customer(
    session: Session,
    *,
    reseller: str | None,
    name: str,
    at: dt.datetime | None,
    now: dt.datetime,
    clock_skew: dt.timedelta,
    request_id: str | None = None,
) -> CloseResult:
    """Close the customer at `at` (default `now`) with a final invoice; see the module doc."""
    found = resolve_reseller(session, reseller)
    if isinstance(found, Problem):
        return CloseResult(CloseStatus.REFUSED, errors=(found,))
    customer = customer_by_name(session, found.id, name, for_update=True)
    if customer is None:
        return _refused("customer", "unknown_customer", f"there is no customer named {name!r}")
    if customer.status == CustomerStatus.CLOSED:
        _requeue_uninvoiced(session, customer.id)
        return CloseResult(
            CloseStatus.ALREADY_CLOSED, customer.id, customer.name, customer.closed_at
        )
    if customer.status != CustomerStatus.ACTIVE:
        return _refused(
            "customer", "customer_terminated", f"{customer.name!r} is {customer.status}"
        )
    cut = at or now
    if cut > now + clock_skew:
        return _refused(
            "at",
            "in_future",
            f"{_iso(cut)} is in the future (now is {_iso(now)}); "
            "a customer is closed at or before now",
        )
    if cut < customer.created_at:
        return _refused(
            "at",
            "before_creation",
            f"{_iso(cut)} is before the customer was created ({_iso(customer.created_at)})",
        )
    if cut < customer.current_period_start:
        return _refused(
            "at",
            "period_already_closed",
            f"{_iso(cut)} falls in a period already closed; close at or after "
            f"{_iso(customer.current_period_start)}",
        )
    closed: list[int] = []
    while customer.current_period_end <= cut:
        closed_id = close_current_period(session, customer, now=now)
        if closed_id is not None:
            closed.append(closed_id)
    if customer.current_period_start < cut:
        final = record_closed_period(
            session,
            customer,
            end=cut,
            end_date=cut_end_date(cut, customer.billing_timezone),
            now=now,
        )
        if final is not None:
            closed.append(final)
    ended = _end_subscriptions(session, customer, cut)
    changes = [Change("status", customer.status, CustomerStatus.CLOSED.value, cut)]
    if ended:
        changes.append(Change("subscriptions", ended, [], cut))
    if customer.pending_from is not None:
        changes.append(
            Change(
                "pending_change",
                {
                    "billing_period": customer.pending_billing_period,
                    "billing_timezone": customer.pending_billing_timezone,
                    "from": _iso(customer.pending_from),
                },
                None,
                cut,
            )
        )
    customer.status = CustomerStatus.CLOSED.value
    customer.closed_at = cut
    customer.pending_billing_period = None
    customer.pending_billing_timezone = None
    customer.pending_from = None
    session.flush()
    record_changes(session, customer.id, changes, now=now, request_id=request_id)
    if closed:
        _queue_invoices(session, closed)
    return CloseResult(CloseStatus.CLOSED, customer.id, customer.name, cut, tuple(closed))


def _end_subscriptions(
    session: Session, customer: Customer, at: dt.datetime
) -> list[dict[str, Any]]:
    """End every open subscription term at `at`; what they were, for the history."""
    open_terms = session.execute(
        select(Subscription, Plan.name)
        .join(Plan, Plan.id == Subscription.plan_id)
        .where(Subscription.customer_id == customer.id, Subscription.ends_at.is_(None))
        .order_by(Plan.name)
    ).all()
    for term, _plan in open_terms:
        term.ends_at = max(term.starts_at, at)
        term.ends_on = max(term.starts_on, local_date(term.ends_at, customer.billing_timezone))
    return [{"plan": plan, "quantity": term.quantity} for term, plan in open_terms]


def _queue_invoices(session: Session, closed_period_ids: list[int]) -> None:
    send_after_commit(
        session,
        app.signature(GENERATE_INVOICES, args=[sorted(closed_period_ids)], queue=INVOICING_QUEUE),
    )


def _requeue_uninvoiced(session: Session, customer_id: int) -> None:
    ids = list(
        session.scalars(
            select(ClosedPeriod.id).where(
                ClosedPeriod.customer_id == customer_id, ClosedPeriod.invoiced.is_(False)
            )
        )
    )
    if ids:
        _queue_invoices(session, ids)


@app.task(name="billing.customers.close", base=BillingTask, bind=True)
def close_customer_task(
    self: BillingTask, reseller: str | None, name: str, at: str | None = None
) -> dict[str, Any]:
    """Close a customer at `at` (ISO-8601 with an offset; default now) with a final invoice."""
    now = utcnow()
    try:
        cut = parse_as_of(at) if at is not None else None
    except ValueError as exc:
        return _refused("at", "invalid_datetime", str(exc)).as_json()
    with unit_of_work() as session:
        result = close_customer(
            session,
            reseller=reseller,
            name=name,
            at=cut,
            now=now,
            clock_skew=dt.timedelta(seconds=settings().clock_skew_seconds),
            request_id=f"task:{self.request.id}" if self.request.id else None,
        )
    return result.as_json()
