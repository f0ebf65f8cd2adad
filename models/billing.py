"""Money that moves: charges, payments, the balance ledger, invoices and their notifications.

Collections (what is applied to invoices, credit notes, collection steps) are in
`models.collections`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, Money, Rate, UTCDateTime


def _one_of(column: str, values: type[StrEnum]) -> str:
    """The CheckConstraint text that keeps `column` within an enum's values."""
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class LedgerEntryType(StrEnum):
    """Why a customer's balance moved."""

    OPENING = "opening"  # initial prepaid funds
    CHARGE = "charge"
    PAYMENT = "payment"
    CREDIT_NOTE = "credit_note"
    INVOICE_TAX = "invoice_tax"  # a prepaid invoice's tax, taken from the funds at issue


class InvoiceStatus(StrEnum):
    """Where an invoice is in its generation; what it asks for (paid, overdue, …) is
    derived, not stored (`models.collections_rules`)."""

    GENERATING = "generating"  # claimed by a generator, not yet numbered
    ISSUED = "issued"  # numbered, rendered and final
    VOID = "void"  # voided by a correction; its period may be invoiced again


class NotificationStatus(StrEnum):
    """Where an outbox e-mail is."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the mailer's attempts; an operator looks at it


# Partial-index condition (PostgreSQL and SQLite both support it).
_PENDING = text(f"status = '{NotificationStatus.PENDING.value}'")
# A void invoice no longer counts: at most one live invoice per closed period.
LIVE_INVOICE = text(f"status <> '{InvoiceStatus.VOID.value}'")
# Issued with something left due: what collections and payments look at.
OPEN_INVOICE = text(f"status = '{InvoiceStatus.ISSUED.value}' AND settled_at IS NULL")
_LIVE_LINE = text("NOT void")
_UNINVOICED_CHARGE = text("invoice_id IS NULL")
_UNAPPLIED = text("unapplied > 0")


class Charge(Base):
    """A service used at an instant, in the customer's currency.

    Idempotent per (reseller, idempotency key): `reseller_id` is the customer's, copied so
    the key's scope is a constraint. `invoice_id` is set when an invoice takes the charge,
    so each charge is invoiced once.
    """

    __tablename__ = "charges"
    __table_args__ = (
        UniqueConstraint("reseller_id", "idempotency_key"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_charges_customer_occurred", "customer_id", "occurred_at"),
        # The charges still waiting for an invoice (late charges: tasks.invoicing).
        Index(
            "ix_charges_uninvoiced",
            "customer_id",
            "occurred_at",
            postgresql_where=_UNINVOICED_CHARGE,
            sqlite_where=_UNINVOICED_CHARGE,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("resellers.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    description: Mapped[str] = mapped_column(String(500))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)


class Payment(Base):
    """A payment (postpaid) or top-up (prepaid). Idempotent per (reseller, key).

    `unapplied` is the part of a postpaid payment not yet applied to an invoice: the
    customer's credit, applied to the next invoice issued. A prepaid top-up is funds, not
    credit, and is never applied (its `unapplied` is 0).
    """

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("reseller_id", "idempotency_key"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("unapplied >= 0 AND unapplied <= amount", name="unapplied_in_range"),
        Index(
            "ix_payments_unapplied",
            "customer_id",
            postgresql_where=_UNAPPLIED,
            sqlite_where=_UNAPPLIED,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("resellers.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    description: Mapped[str] = mapped_column(String(500), default="")
    idempotency_key: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    unapplied: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0")


class LedgerEntry(Base):
    """Every change of a customer's balance, so the balance can always be recomputed.

    `amount` is the signed change to `customers.balance` in its own convention (see
    Customer); `balance_after` is the balance once this entry applied. `entry_type` is
    `opening` (initial prepaid funds), `charge`, `payment`, `credit_note`, or
    `invoice_tax` (a prepaid invoice's tax, taken from the funds when it is issued).
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(_one_of("entry_type", LedgerEntryType), name="entry_type_known"),
        Index("ix_ledger_entries_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    entry_type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Money())
    balance_after: Mapped[Decimal] = mapped_column(Money())
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"), unique=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), unique=True)
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("credit_notes.id"), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Invoice(Base):
    """One live invoice per closed period, enforced by the database (a partial unique index:
    a void invoice and its replacement share the period).

    `number` is null while the invoice is `generating` and is taken from the reseller's
    gapless counter in the transaction that issues it. Issued invoices are never edited:
    voiding one sets `status = 'void'`, `voided_at` and `void_reason`; its replacement
    (`replaces_invoice_id`) is a new invoice with a new number. An issued invoice is open
    (something is left due) while `settled_at` is null.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("reseller_id", "number"),
        CheckConstraint(_one_of("status", InvoiceStatus), name="status_known"),
        CheckConstraint(
            f"status = '{InvoiceStatus.GENERATING.value}' OR number IS NOT NULL",
            name="issued_numbered",
        ),
        CheckConstraint("(status = 'void') = (voided_at IS NOT NULL)", name="void_dated"),
        Index(
            "uq_invoices_live_closed_period",
            "closed_period_id",
            unique=True,
            postgresql_where=LIVE_INVOICE,
            sqlite_where=LIVE_INVOICE,
        ),
        Index(
            "ix_invoices_open",
            "customer_id",
            postgresql_where=OPEN_INVOICE,
            sqlite_where=OPEN_INVOICE,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    closed_period_id: Mapped[int] = mapped_column(ForeignKey("closed_periods.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("resellers.id"))
    number: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=InvoiceStatus.GENERATING.value)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0")
    tax_name: Mapped[str] = mapped_column(String(50), default="Tax")
    tax_rate: Mapped[Decimal] = mapped_column(Rate(), default=Decimal(0))
    tax: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0")
    total: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0")
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    covered_from: Mapped[dt.date] = mapped_column(Date)
    covered_to: Mapped[dt.date] = mapped_column(Date)
    issue_date: Mapped[dt.date | None] = mapped_column(Date)
    due_date: Mapped[dt.date | None] = mapped_column(Date)
    # Written by invoices issued before documents were rendered on demand; no longer written.
    document_html: Mapped[str | None] = mapped_column(Text)
    # What the documents need and the catalog may later change, frozen at issue: the seller
    # and buyer parties, the locale, the template and the e-invoice format
    # (`tasks.invoice_documents.load_invoice_view` reads it).
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), server_default=func.current_timestamp()
    )
    issued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    voided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    void_reason: Mapped[str | None] = mapped_column(Text)
    replaces_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    # When nothing was left due any more (set with the application that settled it; a
    # zero total is settled when issued). A marker for the index of open invoices: what is
    # owed is always the total less the sum of the applications (models.collections).
    settled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class InvoiceLine(Base):
    """A line of an invoice. A charge is on at most one live line; the lines of a void
    invoice keep their charge (`void` is set) as the record of what it said."""

    __tablename__ = "invoice_lines"
    __table_args__ = (
        Index(
            "uq_invoice_lines_live_charge",
            "charge_id",
            unique=True,
            postgresql_where=_LIVE_LINE,
            sqlite_where=_LIVE_LINE,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"))
    # A recurring fee's line (models.plans.SubscriptionFee), once per fee.
    fee_id: Mapped[int | None] = mapped_column(ForeignKey("subscription_fees.id"), unique=True)
    void: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    description: Mapped[str] = mapped_column(String(500))
    amount: Mapped[Decimal] = mapped_column(Money())
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Notification(Base):
    """Outbox row: an e-mail a mailer must send about an invoice, once per topic and recipient.

    `topic` is `invoice` for the invoice itself (its document goes with it), a collection
    step's name (`reminder:7`, `overdue_notice`, `suspend`, `terminate`, `resume`), or
    `credit_note:<number>`.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("invoice_id", "topic", "recipient"),
        CheckConstraint(_one_of("status", NotificationStatus), name="status_known"),
        Index(
            "ix_notifications_pending",
            "created_at",
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"))
    topic: Mapped[str] = mapped_column(String(40), default="invoice", server_default="invoice")
    recipient: Mapped[str] = mapped_column(String(320))
    # NULL until the mailer composes an invoice's text from the stored invoice (issuing
    # writes the outbox set-based); other topics are written with their text.
    subject: Mapped[str | None] = mapped_column(String(300))
    body_text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
