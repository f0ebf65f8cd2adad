"""Corrections of issued invoices, which are never edited: void, reissue, credit notes.

- `void_invoice`: an issued invoice with nothing applied to it (no payment, credit or
  credit note) becomes `void`, with the instant and the reason. Its charges become
  uninvoiced again and its recurring fees unbilled (its lines stay, marked void, as the
  record of what it said), and its closed period waits for a replacement: it stays
  marked invoiced, so neither the reconcile step nor a stray generation message reissues
  it behind the operator's back, and invoicing treats a period without a live invoice as
  pending, so its charges are not swept onto a later invoice. A partly paid invoice is
  corrected with a credit note.
- `reissue_invoice`: the replacement of a void invoice, for the same closed period, with
  the period's charges as they are now and a new number from the reseller's invoice
  sequence (`replaces_invoice_id` points back).
- `credit_invoice`: a credit note for part or all of what an invoice asked for (at most its
  total less earlier credit notes), numbered from the reseller's own gapless credit-note
  sequence. It lowers the postpaid balance owed (a `credit_note` ledger entry) and is
  applied to the invoice's amount left due; what the invoice no longer owes (it was paid
  already) becomes the customer's credit, applied to open invoices then to the next one
  issued. A prepaid customer gets the credit back in its funds.

Locks: the reseller row first (its number sequences), then the customer row, the same
order invoice generation takes them, so concurrent corrections and generation queue
without deadlocking; a refusal takes no number, so numbers stay gapless.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models import (
    ApplicationSource,
    Charge,
    ClosedPeriod,
    CreditNote,
    Customer,
    Invoice,
    InvoiceApplication,
    InvoiceLine,
    InvoiceStatus,
    LedgerEntryType,
    Reseller,
)
from models.billing import LIVE_INVOICE
from models.invoicing_rules import (
    PREPAID,
    Refusal,
    apply_payment,
    format_money,
    local_date,
)
from models.money import MoneyError, parse_amount
from models.plans import SubscriptionFee
from models.validation import Problem
from tasks.balances import apply_balance_change
from tasks.invoicing import generate_invoices
from tasks.queries import ResellerRef, resolve_reseller
from tasks.settlement import (
    applied_sum,
    apply_credit,
    lock_customer,
    mark_settled,
    notify,
    resume_if_clear,
)


class CorrectionStatus(StrEnum):
    VOIDED = "voided"
    REISSUED = "reissued"
    CREDITED = "credited"
    REFUSED = "refused"


@dataclass(frozen=True)
class CorrectionResult:
    status: CorrectionStatus
    errors: tuple[Problem, ...] = ()
    fields: tuple[tuple[str, Any], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "errors": [p.as_dict() for p in self.errors],
            **dict(self.fields),
        }


def _refused(field: str | None, code: str, message: str) -> CorrectionResult:
    return CorrectionResult(CorrectionStatus.REFUSED, (Problem(field, code, message),))


def _find(
    session: Session, reseller: str | None, number: int
) -> tuple[ResellerRef, Invoice] | CorrectionResult:
    found = resolve_reseller(session, reseller)
    if isinstance(found, Problem):
        return CorrectionResult(CorrectionStatus.REFUSED, (found,))
    invoice = session.scalars(
        select(Invoice).where(Invoice.reseller_id == found.id, Invoice.number == number)
    ).one_or_none()
    if invoice is None:
        return _refused("number", "unknown_invoice", f"{found.name!r} has no invoice {number}")
    return found, invoice


def _lock_reseller(session: Session, reseller_id: int) -> None:
    # NO KEY UPDATE, like the numbering UPDATE itself: it waits for a concurrent issuer of
    # the reseller's numbers, not for every insert that refers to the reseller.
    session.execute(
        select(Reseller.id).where(Reseller.id == reseller_id).with_for_update(key_share=True)
    )


def _relock(session: Session, invoice: Invoice) -> Invoice:
    return session.scalars(
        select(Invoice)
        .where(Invoice.id == invoice.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one()


def void_invoice(
    session: Session, *, reseller: str | None, number: int, reason: str, now: dt.datetime
) -> CorrectionResult:
    """Void an unpaid issued invoice; its charges and period wait for a reissue."""
    reason = reason.strip()
    if not reason:
        return _refused("reason", "required", "say why the invoice is voided")
    found = _find(session, reseller, number)
    if isinstance(found, CorrectionResult):
        return found
    _reseller, invoice = found
    customer = lock_customer(session, invoice.customer_id)
    invoice = _relock(session, invoice)
    if invoice.status != InvoiceStatus.ISSUED:
        return _refused("number", "not_issued", f"invoice {number} is {invoice.status}")
    applied = session.scalar(select(applied_sum(invoice.id)))
    if applied:
        return _refused(
            "number",
            "invoice_paid",
            f"invoice {number} has {applied} applied to it; issue a credit note instead",
        )
    session.execute(
        update(Invoice)
        .where(Invoice.id == invoice.id)
        .values(status=InvoiceStatus.VOID, voided_at=now, void_reason=reason)
    )
    session.execute(
        update(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id).values(void=True)
    )
    # Its recurring fees are unbilled again too: the replacement bills them (models.plans).
    session.execute(
        update(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id).values(fee_id=None)
    )
    session.execute(delete(SubscriptionFee).where(SubscriptionFee.invoice_id == invoice.id))
    released = len(
        session.execute(
            update(Charge)
            .where(Charge.invoice_id == invoice.id)
            .values(invoice_id=None)
            .returning(Charge.id)
            .execution_options(synchronize_session=False)
        ).all()
    )
    # The period stays `invoiced` (see ClosedPeriod): it waits for the operator's reissue.
    resume_if_clear(session, customer, now=now)
    return CorrectionResult(
        CorrectionStatus.VOIDED,
        fields=(
            ("number", number),
            ("invoice_id", invoice.id),
            ("closed_period_id", invoice.closed_period_id),
            ("charges_released", released),
            ("voided_at", now.isoformat().replace("+00:00", "Z")),
        ),
    )


def reissue_invoice(
    session: Session, *, reseller: str | None, number: int, now: dt.datetime
) -> CorrectionResult:
    """Issue the replacement of void invoice NUMBER for the same period, with a new number."""
    found = _find(session, reseller, number)
    if isinstance(found, CorrectionResult):
        return found
    _reseller, void = found
    if void.status != InvoiceStatus.VOID:
        return _refused("number", "not_void", f"invoice {number} is {void.status}; void it first")
    live = session.scalars(
        select(Invoice).where(Invoice.closed_period_id == void.closed_period_id, LIVE_INVOICE)
    ).one_or_none()
    if live is not None and live.status == InvoiceStatus.ISSUED:
        return _refused(
            "number",
            "already_reissued",
            f"the period of invoice {number} is invoiced again as invoice {live.number}",
        )
    # Uninvoiced again for the generation below, in this transaction only: a failure rolls
    # it back with everything else, and the period keeps waiting for the operator.
    session.execute(
        update(ClosedPeriod)
        .where(ClosedPeriod.id == void.closed_period_id)
        .values(invoiced=False, invoice_enqueued_at=now)
    )
    with session.begin_nested() as attempt:
        result = generate_invoices(session, [void.closed_period_id], now=now)
        issued = next(
            (i for i in result.invoices if i.closed_period_id == void.closed_period_id), None
        )
        if issued is None:
            attempt.rollback()
    if issued is None:
        why = "; ".join(f.message for f in result.failures) or "nothing was issued"
        session.execute(
            update(ClosedPeriod)
            .where(ClosedPeriod.id == void.closed_period_id)
            .values(invoiced=True)
        )
        return _refused("number", "reissue_failed", f"invoice {number}: {why}")
    session.execute(
        update(Invoice).where(Invoice.id == issued.invoice_id).values(replaces_invoice_id=void.id)
    )
    return CorrectionResult(
        CorrectionStatus.REISSUED,
        fields=(
            ("replaces", number),
            ("number", issued.number),
            ("invoice_id", issued.invoice_id),
            ("total", str(issued.total)),
        ),
    )


def credit_invoice(
    session: Session,
    *,
    reseller: str | None,
    number: int,
    amount: str,
    reason: str,
    now: dt.datetime,
) -> CorrectionResult:
    """Issue a credit note against invoice NUMBER (see the module doc)."""
    reason = reason.strip()
    if not reason:
        return _refused("reason", "required", "say what the credit note is for")
    found = _find(session, reseller, number)
    if isinstance(found, CorrectionResult):
        return found
    seller, invoice = found
    try:
        value = parse_amount(amount, invoice.currency)
    except MoneyError as exc:
        return _refused("amount", "invalid_amount", str(exc))
    if value <= 0:
        return _refused("amount", "invalid_amount", "the amount must be greater than zero")
    _lock_reseller(session, seller.id)
    customer = lock_customer(session, invoice.customer_id)
    invoice = _relock(session, invoice)
    if invoice.status != InvoiceStatus.ISSUED:
        return _refused("number", "not_issued", f"invoice {number} is {invoice.status}")
    credited = session.scalar(
        select(func.coalesce(func.sum(CreditNote.amount), 0)).where(
            CreditNote.invoice_id == invoice.id
        )
    )
    room = invoice.total - Decimal(credited or 0)
    if value > room:
        return _refused(
            "amount",
            "exceeds_invoice",
            f"invoice {number} can be credited at most {room} {invoice.currency} more",
        )
    credit_number = session.execute(
        update(Reseller)
        .where(Reseller.id == seller.id)
        .values(last_credit_note_number=Reseller.last_credit_note_number + 1)
        .returning(Reseller.last_credit_note_number)
    ).scalar_one()
    zone = session.scalar(
        select(ClosedPeriod.billing_timezone).where(ClosedPeriod.id == invoice.closed_period_id)
    )
    prepaid = customer.balance_control == PREPAID
    note = CreditNote(
        reseller_id=seller.id,
        number=credit_number,
        invoice_id=invoice.id,
        customer_id=customer.id,
        currency=invoice.currency,
        amount=value,
        unapplied=Decimal(0) if prepaid else value,
        reason=reason,
        issue_date=local_date(now, zone or customer.billing_timezone),
        issued_at=now,
    )
    session.add(note)
    session.flush()
    _ledger(session, customer, note, now)
    if not prepaid:
        _apply_to_own_invoice(session, customer, note, invoice, now)
        apply_credit(session, customer, now=now)
    left = session.scalar(select(CreditNote.unapplied).where(CreditNote.id == note.id))
    notify(
        session,
        invoice.id,
        f"credit_note:{credit_number}",
        subject=f"Credit note {credit_number} for invoice {number}",
        body=(
            f"Credit note {credit_number} for {customer.name}: "
            f"{format_money(value, invoice.currency)} credited on invoice {number} ({reason})."
        ),
        now=now,
    )
    return CorrectionResult(
        CorrectionStatus.CREDITED,
        fields=(
            ("credit_note", credit_number),
            ("credit_note_id", note.id),
            ("invoice", number),
            ("amount", str(value)),
            ("currency", invoice.currency),
            ("customer_credit", str(left)),
        ),
    )


def _ledger(session: Session, customer: Customer, note: CreditNote, now: dt.datetime) -> None:
    """Lower the amount owed (postpaid) or give the funds back (prepaid), like a payment."""
    change = apply_payment(
        customer.balance_control, customer.balance, customer.credit_limit, note.amount
    )
    if isinstance(change, Refusal):  # cannot happen: a positive amount is always accepted
        raise RuntimeError(change.message)
    apply_balance_change(
        session,
        customer,
        change,
        entry_type=LedgerEntryType.CREDIT_NOTE,
        now=now,
        credit_note_id=note.id,
    )


def _apply_to_own_invoice(
    session: Session, customer: Customer, note: CreditNote, invoice: Invoice, now: dt.datetime
) -> None:
    left = invoice.total - Decimal(session.scalar(select(applied_sum(invoice.id))) or 0)
    take = min(left, note.amount)
    if take <= 0:
        return
    session.add(
        InvoiceApplication(
            invoice_id=invoice.id,
            customer_id=customer.id,
            source=ApplicationSource.CREDIT_NOTE,
            credit_note_id=note.id,
            amount=take,
            applied_at=now,
        )
    )
    session.execute(
        update(CreditNote).where(CreditNote.id == note.id).values(unapplied=note.amount - take)
    )
    session.flush()
    mark_settled(session, [invoice.id], now=now)
