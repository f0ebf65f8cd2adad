"""Settling invoices: payments and credit applied to open invoices, prepaid invoices paid.

Every write here happens under the customer's row lock (`SELECT … FOR UPDATE`; SQLite
serialises whole transactions), taken by the caller (the payment service) or here (the
invoice-issuing hook, in customer id order), so concurrent payments, credit notes and
invoice generation for one customer queue behind each other and an invoice is never paid
beyond its total.

- Postpaid. A payment's amount starts as the customer's credit (`payments.unapplied`) and
  is applied at once to the open invoices, oldest due date first, then lowest number
  (`models.collections_rules.allocate`), one `invoice_applications` row per (payment,
  invoice). What is left stays credit and is applied to the next invoice issued. The
  credit of a credit note (`credit_notes.unapplied`) is applied the same way, after the
  payments' credit. So a customer never holds credit while an invoice of theirs is open.
- Prepaid. The funds pay for each charge when it is recorded, so a prepaid invoice is paid
  when it is issued: one `prepaid_funds` application for its total. Its tax, which no
  charge paid, is taken from the funds at that moment (one `invoice_tax` ledger entry);
  funds that do not cover it go below zero and block the customer for `no_funds` until a
  top-up.
- Resume. Whenever money is applied, a customer suspended for `overdue` whose invoices
  are no longer overdue is unblocked and told so (a `resume` collection step).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.selectable import ScalarSelect

from models import (
    ApplicationSource,
    BlockReason,
    ClosedPeriod,
    CollectionStep,
    CreditNote,
    Customer,
    CustomerBlock,
    CustomerClass,
    Invoice,
    InvoiceApplication,
    InvoiceStatus,
    LedgerEntryType,
    Notification,
    Payment,
    Reseller,
)
from models.collections_rules import OpenInvoice, allocate, overdue_since
from models.invoicing_rules import PREPAID, BalanceChange, is_blocked
from tasks.balances import apply_balance_change
from tasks.blocks import unblock
from worker.db import dialect_insert, ids_in

SUSPEND = "suspend"  # models.collections_rules.StepKind.SUSPEND
RESUME = "resume"


def applied_sum(invoice_id: Any) -> ScalarSelect[Decimal]:
    """A scalar subquery: the sum applied to the invoice `invoice_id` (a column or a value)."""
    return (
        select(func.coalesce(func.sum(InvoiceApplication.amount), 0))
        .where(InvoiceApplication.invoice_id == invoice_id)
        .scalar_subquery()
    )


def lock_customer(session: Session, customer_id: int) -> Customer:
    """The customer row, locked until the transaction ends."""
    customer = try_lock_customer(session, customer_id, skip_locked=False)
    assert customer is not None
    return customer


def try_lock_customer(
    session: Session, customer_id: int, *, skip_locked: bool = True
) -> Customer | None:
    """The customer row locked, or None if another transaction holds it (`skip_locked`).

    `FOR NO KEY UPDATE`: it serialises every writer of the customer's money (they all take
    it) without conflicting with the key-share locks that inserting rows which refer to the
    customer takes (an invoice being generated), which would otherwise deadlock against
    the reseller lock of invoice and credit-note numbering."""
    return session.scalars(
        select(Customer)
        .where(Customer.id == customer_id)
        .with_for_update(skip_locked=skip_locked, key_share=True)
        .execution_options(populate_existing=True)
    ).one_or_none()


def mark_settled(session: Session, invoice_ids: Iterable[int], *, now: dt.datetime) -> None:
    """Mark those of `invoice_ids` that nothing is left due on as settled (`settled_at`),
    in the transaction that applied the money, so they leave the index of open invoices."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return
    session.execute(
        update(Invoice)
        .where(
            ids_in(session, Invoice.id, ids),
            Invoice.status == InvoiceStatus.ISSUED,
            Invoice.settled_at.is_(None),
            Invoice.total <= applied_sum(Invoice.id),
        )
        .values(settled_at=now)
        .execution_options(synchronize_session=False)
    )


def open_invoices(session: Session, customer_id: int) -> list[tuple[OpenInvoice, str]]:
    """The customer's issued invoices with something left due, each with its billing zone."""
    applied = applied_sum(Invoice.id)
    rows = session.execute(
        select(
            Invoice.id,
            Invoice.number,
            Invoice.due_date,
            Invoice.total,
            applied,
            ClosedPeriod.billing_timezone,
        )
        .join(ClosedPeriod, ClosedPeriod.id == Invoice.closed_period_id)
        .where(
            Invoice.customer_id == customer_id,
            Invoice.status == InvoiceStatus.ISSUED,
            Invoice.settled_at.is_(None),
            Invoice.total > applied,
        )
    ).all()
    return [
        (OpenInvoice(r.id, r.number, r.due_date, r.total - r[4]), r.billing_timezone) for r in rows
    ]


def apply_credit(session: Session, customer: Customer, *, now: dt.datetime) -> Decimal:
    """Apply the customer's credit (payments' rest oldest first, then credit notes') to its
    open invoices; returns the amount applied. Caller holds the customer's row lock."""
    if customer.balance_control == PREPAID:
        return Decimal(0)
    invoices = {inv.invoice_id: inv for inv, _tz in open_invoices(session, customer.id)}
    if not invoices:
        return Decimal(0)
    total = Decimal(0)
    touched: list[int] = []
    sources: list[tuple[type[Payment] | type[CreditNote], int, Decimal]] = [
        (Payment, row.id, row.unapplied)
        for row in session.execute(
            select(Payment.id, Payment.unapplied)
            .where(Payment.customer_id == customer.id, Payment.unapplied > 0)
            .order_by(Payment.received_at, Payment.id)
        )
    ] + [
        (CreditNote, row.id, row.unapplied)
        for row in session.execute(
            select(CreditNote.id, CreditNote.unapplied)
            .where(CreditNote.customer_id == customer.id, CreditNote.unapplied > 0)
            .order_by(CreditNote.issued_at, CreditNote.id)
        )
    ]
    for model, source_id, unapplied in sources:
        if not invoices:
            break
        result = allocate(unapplied, invoices.values())
        _write_applications(session, customer.id, model, source_id, result.applied, now)
        session.execute(
            update(model).where(model.id == source_id).values(unapplied=result.leftover)
        )
        for invoice_id, amount in result.applied:
            touched.append(invoice_id)
            left = invoices[invoice_id].due - amount
            total += amount
            if left > 0:
                invoices[invoice_id] = OpenInvoice(
                    invoice_id, invoices[invoice_id].number, invoices[invoice_id].due_date, left
                )
            else:
                del invoices[invoice_id]
    if total:
        mark_settled(session, touched, now=now)
        resume_if_clear(session, customer, now=now)
    return total


def _write_applications(
    session: Session,
    customer_id: int,
    model: type[Payment] | type[CreditNote],
    source_id: int,
    applied: Sequence[tuple[int, Decimal]],
    now: dt.datetime,
) -> None:
    if not applied:
        return
    is_payment = model is Payment
    source = ApplicationSource.PAYMENT if is_payment else ApplicationSource.CREDIT_NOTE
    session.execute(
        dialect_insert(session)(InvoiceApplication),
        [
            {
                "invoice_id": invoice_id,
                "customer_id": customer_id,
                "source": source,
                "payment_id": source_id if is_payment else None,
                "credit_note_id": None if is_payment else source_id,
                "amount": amount,
                "applied_at": now,
            }
            for invoice_id, amount in applied
        ],
    )


def settle_issued(session: Session, invoice_ids: Iterable[int], *, now: dt.datetime) -> None:
    """The invoice-issuing hook, for a whole batch of just-issued invoices: prepaid ones are
    paid from funds, zero totals are settled, postpaid customers with credit get it
    applied. Costs two statements when no customer of the batch is prepaid or holds
    credit, whatever the batch's size."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return
    # Only the batch's prepaid invoices and zero totals can be settled now: the others are
    # not even looked at (a filter on status and settled_at would let PostgreSQL scan the
    # whole index of open invoices when its statistics lag behind a month-end).
    settling = session.execute(
        select(
            Invoice.id,
            Invoice.customer_id,
            Invoice.total,
            Invoice.tax,
            Invoice.currency,
            Customer.balance_control,
        )
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            ids_in(session, Invoice.id, ids),
            or_(Customer.balance_control == PREPAID, Invoice.total <= 0),
        )
    ).all()
    prepaid = [row for row in settling if row.balance_control == PREPAID and row.total > 0]
    if prepaid:
        session.execute(
            dialect_insert(session)(InvoiceApplication),
            [
                {
                    "invoice_id": row.id,
                    "customer_id": row.customer_id,
                    "source": ApplicationSource.PREPAID_FUNDS,
                    "payment_id": None,
                    "credit_note_id": None,
                    "amount": row.total,
                    "applied_at": now,
                }
                for row in prepaid
            ],
        )
        for row in sorted(prepaid, key=lambda r: r.customer_id):
            if row.tax > 0:
                _take_prepaid_tax(session, row.customer_id, row.tax, now=now)
    # prepaid ones, and zero totals (paid when issued)
    mark_settled(session, [row.id for row in settling], now=now)
    has_credit = or_(
        exists().where(Payment.customer_id == Invoice.customer_id, Payment.unapplied > 0),
        exists().where(CreditNote.customer_id == Invoice.customer_id, CreditNote.unapplied > 0),
    )
    with_credit = session.scalars(
        select(Invoice.customer_id).where(ids_in(session, Invoice.id, ids), has_credit).distinct()
    ).all()
    for customer_id in sorted(with_credit):
        apply_credit(session, lock_customer(session, customer_id), now=now)


def _take_prepaid_tax(
    session: Session, customer_id: int, tax: Decimal, *, now: dt.datetime
) -> None:
    """Take a prepaid invoice's tax from the funds (no charge paid it), as one ledger entry."""
    customer = lock_customer(session, customer_id)
    after = customer.balance - tax
    change = BalanceChange(-tax, after, is_blocked(customer.balance_control, after, None))
    apply_balance_change(session, customer, change, entry_type=LedgerEntryType.INVOICE_TAX, now=now)


def overdue_invoice_ids(session: Session, customer_id: int, *, at: dt.datetime) -> list[int]:
    """The customer's invoices overdue at `at` (something due, past the due day's end)."""
    return [
        invoice.invoice_id
        for invoice, tz in open_invoices(session, customer_id)
        if at >= overdue_since(invoice.due_date, tz)
    ]


def resume_if_clear(session: Session, customer: Customer, *, now: dt.datetime) -> bool:
    """Lift an `overdue` suspension once no invoice of the customer is overdue; record a
    `resume` step on each invoice that suspended it and notify the class's list once.
    Caller holds the customer's row lock."""
    suspended = session.scalar(
        select(
            exists().where(
                CustomerBlock.customer_id == customer.id,
                CustomerBlock.reason == BlockReason.OVERDUE,
            )
        )
    )
    if not suspended or overdue_invoice_ids(session, customer.id, at=now):
        return False
    unblock(session, customer, BlockReason.OVERDUE, at=now)
    done = aliased(CollectionStep)
    resumed = session.scalars(
        select(CollectionStep.invoice_id)
        .where(CollectionStep.customer_id == customer.id, CollectionStep.step == SUSPEND)
        .where(~exists().where(done.invoice_id == CollectionStep.invoice_id, done.step == RESUME))
        .order_by(CollectionStep.id)
    ).all()
    if resumed:
        session.execute(
            dialect_insert(session)(CollectionStep)
            .values(
                [
                    {
                        "invoice_id": invoice_id,
                        "customer_id": customer.id,
                        "step": RESUME,
                        "due_at": now,
                        "done_at": now,
                        "sent": invoice_id == resumed[-1],
                    }
                    for invoice_id in resumed
                ]
            )
            .on_conflict_do_nothing(index_elements=["invoice_id", "step"])
        )
        notify(
            session,
            resumed[-1],
            RESUME,
            subject="Service resumed",
            body=f"Thank you: nothing is overdue any more for {customer.name}; "
            "the service is resumed.",
            now=now,
        )
    return True


def notify(
    session: Session, invoice_id: int, topic: str, *, subject: str, body: str, now: dt.datetime
) -> int:
    """Write one outbox e-mail per address of the invoice's class notification list (once per
    invoice, topic and recipient); returns how many were written."""
    row = session.execute(
        select(CustomerClass.notification_emails, Reseller.display_name, Reseller.name)
        .select_from(Invoice)
        .join(Customer, Customer.id == Invoice.customer_id)
        .join(CustomerClass, CustomerClass.id == Customer.customer_class_id)
        .join(Reseller, Reseller.id == Invoice.reseller_id)
        .where(Invoice.id == invoice_id)
    ).one()
    recipients = list(dict.fromkeys(row.notification_emails or []))
    if not recipients:
        return 0
    sender = row.display_name or row.name
    written = session.execute(
        dialect_insert(session)(Notification)
        .values(
            [
                {
                    "invoice_id": invoice_id,
                    "topic": topic,
                    "recipient": recipient,
                    "subject": f"{subject} ({sender})",
                    "body_text": body,
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                }
                for recipient in recipients
            ]
        )
        .on_conflict_do_nothing(index_elements=["invoice_id", "topic", "recipient"])
        .returning(Notification.id)
    ).all()
    return len(written)
