"""What collects an invoice: money applied to it, credit notes, and the collection steps taken.

The rules (state, allocation, the ladder) are pure, in `models.collections_rules`; the
services that write these rows are `tasks.settlement` and `tasks.collections`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, Money, UTCDateTime

_PREPAID_FUNDS = text("source = 'prepaid_funds'")
_UNAPPLIED = text("unapplied > 0")


class ApplicationSource(StrEnum):
    PAYMENT = "payment"  # a postpaid payment, or its unapplied rest (the customer's credit)
    CREDIT_NOTE = "credit_note"  # a credit note, on its own invoice or as customer credit
    PREPAID_FUNDS = "prepaid_funds"  # a prepaid invoice, paid from funds when issued


class InvoiceApplication(Base):
    """An amount applied to an invoice; the invoice's amount paid is the sum of its rows.

    Written under the customer's row lock, so the sum never exceeds the invoice total. One
    row per (invoice, payment) and per (invoice, credit note); a prepaid invoice has one
    `prepaid_funds` row, for its whole total.
    """

    __tablename__ = "invoice_applications"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "source IN (" + ", ".join(f"'{s.value}'" for s in ApplicationSource) + ")",
            name="source_known",
        ),
        CheckConstraint(
            "(source = 'payment') = (payment_id IS NOT NULL)"
            " AND (source = 'credit_note') = (credit_note_id IS NOT NULL)",
            name="source_given",
        ),
        UniqueConstraint("invoice_id", "payment_id"),
        UniqueConstraint("invoice_id", "credit_note_id"),
        Index(
            "uq_invoice_applications_prepaid_funds",
            "invoice_id",
            unique=True,
            postgresql_where=_PREPAID_FUNDS,
            sqlite_where=_PREPAID_FUNDS,
        ),
        Index("ix_invoice_applications_invoice", "invoice_id"),
        Index("ix_invoice_applications_payment", "payment_id"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("credit_notes.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    applied_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CreditNote(Base):
    """A correction that reduces what an invoice asks for, numbered without gaps per reseller
    (its own sequence, `resellers.last_credit_note_number`).

    Stored complete, for rendering: number, reseller, customer, the credited invoice, amount
    and currency, reason, local issue date. `unapplied` is the part not (yet) applied to an
    invoice: the customer's credit (a credit on an invoice already paid), applied to its next
    invoice like a payment's rest. For a prepaid customer the credit goes back to the funds.
    """

    __tablename__ = "credit_notes"
    __table_args__ = (
        UniqueConstraint("reseller_id", "number"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("unapplied >= 0 AND unapplied <= amount", name="unapplied_in_range"),
        Index(
            "ix_credit_notes_unapplied",
            "customer_id",
            postgresql_where=_UNAPPLIED,
            sqlite_where=_UNAPPLIED,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("resellers.id"))
    number: Mapped[int] = mapped_column(Integer)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money())
    unapplied: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0")
    reason: Mapped[str] = mapped_column(Text)
    issue_date: Mapped[dt.date] = mapped_column(Date)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CollectionStep(Base):
    """One step of the collection ladder taken for one invoice: at most once, by the database.

    `step` is the ladder's step name (`reminder:7`, `overdue_notice`, `suspend`,
    `terminate`) or `resume`; `sent` is false for a step recorded without a notification
    (an obsolete reminder, or a suspension of a customer already suspended).
    """

    __tablename__ = "collection_steps"
    __table_args__ = (UniqueConstraint("invoice_id", "step"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    step: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent: Mapped[bool] = mapped_column(Boolean)
