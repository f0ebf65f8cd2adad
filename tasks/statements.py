"""Reading what is owed: invoice states and a customer's statement (read-only queries).

The state of an invoice is derived at the instant asked (`models.collections_rules`), from
its total and the sum of its applications, in the billing timezone of its period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import (
    ApplicationSource,
    ClosedPeriod,
    CreditNote,
    Customer,
    Invoice,
    InvoiceApplication,
    InvoiceStatus,
    Payment,
)
from models.collections_rules import InvoiceState, amount_due, invoice_state, overdue_since
from models.invoicing_rules import PREPAID
from models.money import round_money
from tasks.blocks import block_reasons


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class InvoiceStanding:
    """What an issued (or void) invoice asks for at an instant."""

    state: InvoiceState
    paid: Decimal  # applied from payments, credit and prepaid funds
    credited: Decimal  # applied from credit notes
    due: Decimal
    overdue_since: dt.datetime | None

    def as_json(self, currency: str) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "amount_paid": str(round_money(self.paid, currency)),
            "amount_credited": str(round_money(self.credited, currency)),
            "amount_due": str(round_money(self.due, currency)),
            "overdue_since": self.overdue_since and _iso(self.overdue_since),
        }


def standings(
    session: Session, invoices: Sequence[Invoice], *, at: dt.datetime
) -> dict[int, InvoiceStanding]:
    """The standing of each issued or void invoice at `at`, in three queries."""
    ids = [i.id for i in invoices if i.status != InvoiceStatus.GENERATING]
    if not ids:
        return {}
    sums: dict[tuple[int, bool], Decimal] = {}
    for invoice_id, source, amount in session.execute(
        select(
            InvoiceApplication.invoice_id,
            InvoiceApplication.source,
            func.sum(InvoiceApplication.amount),
        )
        .where(InvoiceApplication.invoice_id.in_(ids))
        .group_by(InvoiceApplication.invoice_id, InvoiceApplication.source)
    ):
        key = (invoice_id, source == ApplicationSource.CREDIT_NOTE)
        sums[key] = sums.get(key, Decimal(0)) + Decimal(amount)
    zones = dict(
        session.execute(
            select(Invoice.id, ClosedPeriod.billing_timezone)
            .join(ClosedPeriod, ClosedPeriod.id == Invoice.closed_period_id)
            .where(Invoice.id.in_(ids))
        ).all()
    )
    result = {}
    for invoice in invoices:
        if invoice.id not in zones or invoice.due_date is None:
            continue
        paid = sums.get((invoice.id, False), Decimal(0))
        credited = sums.get((invoice.id, True), Decimal(0))
        state = invoice_state(
            void=invoice.status == InvoiceStatus.VOID,
            total=invoice.total,
            applied=paid + credited,
            due_date=invoice.due_date,
            tz=zones[invoice.id],
            at=at,
        )
        result[invoice.id] = InvoiceStanding(
            state=state,
            paid=paid,
            credited=credited,
            due=Decimal(0)
            if state is InvoiceState.VOID
            else amount_due(invoice.total, paid + credited),
            overdue_since=overdue_since(invoice.due_date, zones[invoice.id])
            if state is InvoiceState.OVERDUE
            else None,
        )
    return result


def customer_statement(session: Session, customer: Customer, *, at: dt.datetime) -> dict[str, Any]:
    """Invoices, payments and credit notes in date order with a running balance (what the
    customer owes on its invoices; negative is credit), and what is overdue since when."""
    currency = customer.currency
    invoices = list(
        session.scalars(
            select(Invoice)
            .where(Invoice.customer_id == customer.id, Invoice.status != InvoiceStatus.GENERATING)
            .order_by(Invoice.issued_at, Invoice.id)
        )
    )
    standing = standings(session, invoices, at=at)
    numbers = {i.id: i.number for i in invoices}
    entries: list[tuple[dt.datetime, int, dict[str, Any], Decimal]] = []
    for invoice in invoices:
        assert invoice.issued_at is not None
        entries.append(
            (
                invoice.issued_at,
                0,
                {
                    "type": "invoice",
                    "number": invoice.number,
                    "covered_from": invoice.covered_from.isoformat(),
                    "covered_to": invoice.covered_to.isoformat(),
                    "due_date": invoice.due_date and invoice.due_date.isoformat(),
                    **standing[invoice.id].as_json(currency),
                },
                invoice.total,
            )
        )
        if invoice.status == InvoiceStatus.VOID and invoice.voided_at is not None:
            entries.append(
                (
                    invoice.voided_at,
                    1,
                    {"type": "void", "number": invoice.number, "reason": invoice.void_reason},
                    -invoice.total,
                )
            )
    if customer.balance_control == PREPAID:
        for invoice_id, applied_at, amount in session.execute(
            select(
                InvoiceApplication.invoice_id,
                InvoiceApplication.applied_at,
                InvoiceApplication.amount,
            ).where(
                InvoiceApplication.customer_id == customer.id,
                InvoiceApplication.source == ApplicationSource.PREPAID_FUNDS,
            )
        ):
            entries.append(
                (
                    applied_at,
                    2,
                    {"type": "paid_from_funds", "invoice": numbers.get(invoice_id)},
                    -amount,
                )
            )
    else:
        for payment in session.scalars(select(Payment).where(Payment.customer_id == customer.id)):
            applied = session.execute(
                select(InvoiceApplication.invoice_id, InvoiceApplication.amount)
                .where(InvoiceApplication.payment_id == payment.id)
                .order_by(InvoiceApplication.id)
            ).all()
            entries.append(
                (
                    payment.received_at,
                    2,
                    {
                        "type": "payment",
                        "idempotency_key": payment.idempotency_key,
                        "applied": [
                            {
                                "invoice": numbers.get(i),
                                "amount": str(round_money(a, currency)),
                            }
                            for i, a in applied
                        ],
                        "unapplied": str(round_money(payment.unapplied, currency)),
                    },
                    -payment.amount,
                )
            )
    for note in session.scalars(select(CreditNote).where(CreditNote.customer_id == customer.id)):
        entries.append(
            (
                note.issued_at,
                3,
                {
                    "type": "credit_note",
                    "number": note.number,
                    "invoice": numbers.get(note.invoice_id),
                    "reason": note.reason,
                    "unapplied": str(round_money(note.unapplied, currency)),
                },
                # A prepaid customer's credit note goes back to the funds, not to the invoice.
                Decimal(0) if customer.balance_control == PREPAID else -note.amount,
            )
        )
    entries.sort(key=lambda e: (e[0], e[1]))
    running = Decimal(0)
    lines = []
    for when, _order, entry, delta in entries:
        if when > at:  # a statement as of an instant shows what had happened by then
            break
        running += delta
        lines.append(
            {
                "at": _iso(when),
                **entry,
                "amount": str(round_money(abs(delta) if delta else Decimal(0), currency)),
                "balance": str(round_money(running, currency)),
            }
        )
    issued_by = {i.id for i in invoices if i.issued_at is not None and i.issued_at <= at}
    overdue = [
        {
            "number": i.number,
            "amount_due": str(round_money(standing[i.id].due, currency)),
            "overdue_since": _iso(s) if (s := standing[i.id].overdue_since) else None,
        }
        for i in invoices
        if i.id in issued_by and standing[i.id].state is InvoiceState.OVERDUE
    ]
    credit = sum(
        (
            row
            for row in session.scalars(
                select(Payment.unapplied).where(Payment.customer_id == customer.id)
            )
        ),
        Decimal(0),
    ) + sum(
        (
            row
            for row in session.scalars(
                select(CreditNote.unapplied).where(CreditNote.customer_id == customer.id)
            )
        ),
        Decimal(0),
    )
    return {
        "customer": customer.name,
        "currency": currency,
        "balance_control": customer.balance_control,
        "as_of": _iso(at),
        "entries": lines,
        "amount_due": str(
            round_money(
                sum((s.due for i, s in standing.items() if i in issued_by), Decimal(0)), currency
            )
        ),
        "credit": str(round_money(credit, currency)),
        "overdue": overdue,
        "blocked": customer.blocked,
        "block_reasons": {
            reason.value: _iso(since)
            for reason, since in block_reasons(session, customer.id).items()
        },
    }
