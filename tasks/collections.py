"""The collection run: each class's collection ladder, applied to every open invoice.

`run_collections(session, now=…)` decides everything from the database, so a run after an
outage catches up and two runs at once are harmless:

1. Credit that is still unapplied while invoices are open (payments recorded before
   collections existed, say) is applied first, so nobody is reminded of what they paid.
2. For every issued invoice with something left due, of a class whose policy does
   something, the steps of its ladder reached by `now` and not yet taken
   (`models.collections_rules.steps_due`) are taken in order. A step is taken once per
   invoice: `INSERT … ON CONFLICT (invoice, step) DO NOTHING` and only the runner whose
   insert went in writes the step's notification and acts. Customers are locked with
   `FOR UPDATE SKIP LOCKED`: a customer another runner (or a payment) holds is skipped and
   done by that runner, or by the next run.
3. Customers suspended for `overdue` with nothing overdue any more are resumed (payments
   already resume them as they are applied; this heals any other path).

Steps: a reminder and the overdue notice write an e-mail to the outbox for each address of
the class's notification list; `suspend` blocks the customer for reason `overdue` (apart
from any credit-limit block) and `terminate` closes the customer at once with its final
invoice (`tasks.customer_close`) and sets its status to `terminated`, each with its
e-mail. A reminder no longer worth sending (the invoice is already overdue) is recorded
without an e-mail.

Commits once per batch of customers (`batch_size`), so a long catch-up keeps its progress.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, select, union, update
from sqlalchemy.orm import Session

from models import (
    BlockReason,
    ClosedPeriod,
    CollectionStep,
    CreditNote,
    Customer,
    CustomerBlock,
    CustomerClass,
    CustomerStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    Reseller,
)
from models.collections_rules import CollectionPolicy, DueStep, StepKind, steps_due
from models.invoicing_rules import format_long_date, format_money
from tasks.base import BillingTask, database_clock
from tasks.blocks import block
from tasks.closing import parse_as_of
from tasks.customer_close import CloseStatus, close_customer
from tasks.customer_history import Change, record_changes
from tasks.notifications import queue_mailing_after_commit
from tasks.settlement import (
    apply_credit,
    notify,
    open_invoices,
    resume_if_clear,
    try_lock_customer,
)
from worker.celery_app import app
from worker.db import dialect_insert, unit_of_work


class RunStatus(StrEnum):
    DONE = "done"


@dataclass
class CollectionsSummary:
    """What one run did."""

    as_of: dt.datetime
    credit_applied: Decimal = Decimal(0)
    steps: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped_reminders: int = 0
    notifications: int = 0
    suspended: int = 0
    terminated: int = 0
    resumed: int = 0
    customers_busy: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "status": RunStatus.DONE.value,
            "errors": [],
            "as_of": self.as_of.isoformat().replace("+00:00", "Z"),
            "credit_applied": str(self.credit_applied),
            "steps": dict(sorted(self.steps.items())),
            "skipped_reminders": self.skipped_reminders,
            "notifications": self.notifications,
            "suspended": self.suspended,
            "terminated": self.terminated,
            "resumed": self.resumed,
            "customers_busy": self.customers_busy,
        }


def _heal_credit(session: Session, summary: CollectionsSummary, now: dt.datetime) -> None:
    # Driven by the (small, partially indexed) rows of unapplied credit, not by customers.
    holders = union(
        select(Payment.customer_id.label("id")).where(Payment.unapplied > 0),
        select(CreditNote.customer_id.label("id")).where(CreditNote.unapplied > 0),
    ).subquery()
    open_invoice = exists().where(
        Invoice.customer_id == holders.c.id,
        Invoice.status == InvoiceStatus.ISSUED,
        Invoice.settled_at.is_(None),
    )
    with_credit = session.scalars(
        select(holders.c.id).where(open_invoice).order_by(holders.c.id)
    ).all()
    for customer_id in with_credit:
        customer = try_lock_customer(session, customer_id)
        if customer is None:
            summary.customers_busy += 1
            continue
        summary.credit_applied += apply_credit(session, customer, now=now)


def _candidates(session: Session) -> dict[int, list[Any]]:
    """Open issued invoices of classes with a policy, by customer (id order)."""
    rows = session.execute(
        select(
            Invoice.id,
            Invoice.customer_id,
            Invoice.number,
            Invoice.currency,
            Invoice.due_date,
            Invoice.issued_at,
            Invoice.total,
            ClosedPeriod.billing_timezone,
            CustomerClass.reminder_days,
            CustomerClass.overdue_notice,
            CustomerClass.suspend_after_days,
            CustomerClass.terminate_after_days,
        )
        .join(ClosedPeriod, ClosedPeriod.id == Invoice.closed_period_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .join(CustomerClass, CustomerClass.id == Customer.customer_class_id)
        .where(
            Invoice.status == InvoiceStatus.ISSUED,
            Invoice.settled_at.is_(None),  # the index of open invoices
        )
        .order_by(Invoice.customer_id, Invoice.due_date, Invoice.number)
    ).all()
    by_customer: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        if not _policy(row).does_nothing:
            by_customer[row.customer_id].append(row)
    return dict(sorted(by_customer.items()))


def _policy(row: Any) -> CollectionPolicy:
    return CollectionPolicy(
        reminder_days=tuple(row.reminder_days or ()),
        overdue_notice=bool(row.overdue_notice),
        suspend_after_days=row.suspend_after_days,
        terminate_after_days=row.terminate_after_days,
    )


def _done_steps(session: Session, invoice_ids: list[int]) -> dict[int, set[str]]:
    done: dict[int, set[str]] = defaultdict(set)
    for invoice_id, step in session.execute(
        select(CollectionStep.invoice_id, CollectionStep.step).where(
            CollectionStep.invoice_id.in_(invoice_ids)
        )
    ):
        done[invoice_id].add(step)
    return done


def _claim_step(
    session: Session, customer_id: int, invoice_id: int, due: DueStep, sent: bool, now: dt.datetime
) -> bool:
    """Record the step; True only for the one runner whose row went in."""
    inserted = session.execute(
        dialect_insert(session)(CollectionStep)
        .values(
            invoice_id=invoice_id,
            customer_id=customer_id,
            step=due.step.name,
            due_at=due.step.due_at,
            done_at=now,
            sent=sent,
        )
        .on_conflict_do_nothing(index_elements=["invoice_id", "step"])
        .returning(CollectionStep.id)
    ).scalar_one_or_none()
    return inserted is not None


def _message(kind: StepKind, row: Any, customer: Customer, left: Decimal) -> tuple[str, str]:
    """A step's e-mail subject and text (plain English, like the invoice e-mail's)."""
    amount = format_money(left, row.currency)
    due_text = format_long_date(row.due_date)
    who = customer.name
    match kind:
        case StepKind.REMINDER:
            return (
                f"Reminder: invoice {row.number} is due {due_text}",
                f"Invoice {row.number} for {who}: {amount} is due on {due_text}.",
            )
        case StepKind.OVERDUE_NOTICE:
            return (
                f"Invoice {row.number} is overdue",
                f"Invoice {row.number} for {who} was due on {due_text}; {amount} is overdue.",
            )
        case StepKind.SUSPEND:
            return (
                f"Service suspended: invoice {row.number} is overdue",
                f"The service of {who} is suspended: invoice {row.number} ({amount}) was due "
                f"on {due_text}. Paying what is overdue resumes it.",
            )
        case StepKind.TERMINATE:
            return (
                f"Service terminated: invoice {row.number} is overdue",
                f"The service of {who} is terminated: invoice {row.number} ({amount}) was due "
                f"on {due_text}.",
            )
    raise ValueError(f"no message for step {kind}")


def _take(
    session: Session,
    customer: Customer,
    row: Any,
    due: DueStep,
    left: Decimal,
    summary: CollectionsSummary,
    now: dt.datetime,
) -> None:
    kind = due.step.kind
    if kind is StepKind.REMINDER and not due.send:
        if _claim_step(session, customer.id, row.id, due, False, now):
            summary.skipped_reminders += 1
        return
    acts = True
    if kind is StepKind.SUSPEND:
        acts = not session.scalar(
            select(
                exists().where(
                    CustomerBlock.customer_id == customer.id,
                    CustomerBlock.reason == BlockReason.OVERDUE,
                )
            )
        )
    elif kind is StepKind.TERMINATE:
        acts = customer.status != CustomerStatus.TERMINATED
    if not _claim_step(session, customer.id, row.id, due, acts, now):
        return
    summary.steps[kind.value] += 1
    if not acts:
        return
    if kind is StepKind.SUSPEND:
        note = f"invoice {row.number} overdue since {due.step.due_at.isoformat()}"
        block(session, customer, BlockReason.OVERDUE, at=now, note=note)
        summary.suspended += 1
    elif kind is StepKind.TERMINATE:
        _terminate(session, customer, row.number, now)
        summary.terminated += 1
    subject, body = _message(kind, row, customer, left)
    summary.notifications += notify(
        session, row.id, due.step.name, subject=subject, body=body, now=now
    )


def _terminate(session: Session, customer: Customer, number: int, now: dt.datetime) -> None:
    """Close the customer now with its final invoice (the fees engineer's customer close:
    usage and fees up to now), then mark it terminated, with both in its history."""
    if customer.status == CustomerStatus.ACTIVE:
        reseller = session.scalar(select(Reseller.name).where(Reseller.id == customer.reseller_id))
        closed = close_customer(
            session, reseller=reseller, name=customer.name, at=now, now=now, clock_skew=_NO_SKEW
        )
        if closed.status is CloseStatus.REFUSED:  # cannot happen for an active customer now
            raise RuntimeError(f"closing {customer.name!r} to terminate it: {closed.as_json()}")
    before = customer.status
    session.execute(
        update(Customer).where(Customer.id == customer.id).values(status=CustomerStatus.TERMINATED)
    )
    customer.status = CustomerStatus.TERMINATED
    change = Change("status", before, CustomerStatus.TERMINATED.value, now)
    record_changes(session, customer.id, [change], now=now, request_id=f"collections:{number}")


_NO_SKEW = dt.timedelta(0)


def _resume_cleared(session: Session, summary: CollectionsSummary, now: dt.datetime) -> None:
    suspended = session.scalars(
        select(CustomerBlock.customer_id)
        .where(CustomerBlock.reason == BlockReason.OVERDUE)
        .order_by(CustomerBlock.customer_id)
    ).all()
    for customer_id in suspended:
        customer = try_lock_customer(session, customer_id)
        if customer is None:
            summary.customers_busy += 1
            continue
        if resume_if_clear(session, customer, now=now):
            summary.resumed += 1


def run_collections(
    session: Session, *, now: dt.datetime, batch_size: int = 500
) -> CollectionsSummary:
    """Take every collection step due by `now`; commits after each batch of customers."""
    summary = CollectionsSummary(as_of=now)
    _heal_credit(session, summary, now)
    session.commit()
    candidates = _candidates(session)
    customer_ids = list(candidates)
    for start in range(0, len(customer_ids), batch_size):
        batch = customer_ids[start : start + batch_size]
        done = _done_steps(session, [row.id for cid in batch for row in candidates[cid]])
        # Decided without a lock first: most customers have nothing due at a given run.
        due: dict[int, list[tuple[Any, list[DueStep]]]] = {}
        for customer_id in batch:
            for row in candidates[customer_id]:
                steps = steps_due(
                    _policy(row),
                    due_date=row.due_date,
                    tz=row.billing_timezone,
                    issued_at=row.issued_at,
                    at=now,
                    done=sorted(done.get(row.id, ())),
                )
                if steps:
                    due.setdefault(customer_id, []).append((row, steps))
        for customer_id, invoices in due.items():
            customer = try_lock_customer(session, customer_id)
            if customer is None:
                summary.customers_busy += 1
                continue
            # Re-read under the lock: a payment may have paid some of them meanwhile.
            left = {inv.invoice_id: inv.due for inv, _tz in open_invoices(session, customer_id)}
            for row, steps in invoices:
                if row.id in left:
                    for step in steps:
                        _take(session, customer, row, step, left[row.id], summary, now)
        session.commit()
    _resume_cleared(session, summary, now)
    return summary


@app.task(name="billing.collections.run", base=BillingTask, bind=True)
def run_collections_task(self: BillingTask, as_of: str | None = None) -> dict[str, Any]:
    """Take every collection step due by `as_of` (ISO-8601; default: now, by the database's
    clock, like the close) and report what was done."""
    given = parse_as_of(as_of) if as_of else None
    with unit_of_work() as session:
        summary = run_collections(session, now=given or database_clock(session))
        if summary.notifications:
            queue_mailing_after_commit(session)
        return summary.as_json()
