"""Money that moves: charges, payments, the balance ledger, invoices and their notifications."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
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


class InvoiceStatus(StrEnum):
    """Where an invoice is in its generation (payment states extend this list)."""

    GENERATING = "generating"  # claimed by a generator, not yet numbered
    ISSUED = "issued"  # numbered, rendered and final


class NotificationStatus(StrEnum):
    """Where an outbox e-mail is."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the mailer's attempts; an operator looks at it


# Partial-index condition (PostgreSQL and SQLite both support it).
_PENDING = text(f"status = '{NotificationStatus.PENDING.value}'")


class Charge(Base):
    """A service used at an instant, in the customer's currency.

    Idempotent per (customer, idempotency key). `invoice_id` is set when an invoice takes
    the charge, so each charge is invoiced once.
    """

    __tablename__ = "charges"
    __table_args__ = (
        UniqueConstraint("customer_id", "idempotency_key"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_charges_customer_occurred", "customer_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    description: Mapped[str] = mapped_column(String(500))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)


class Payment(Base):
    """A payment (postpaid) or top-up (prepaid). Idempotent per (customer, key)."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("customer_id", "idempotency_key"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    description: Mapped[str] = mapped_column(String(500), default="")
    idempotency_key: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class LedgerEntry(Base):
    """Every change of a customer's balance, so the balance can always be recomputed.

    `amount` is the signed change to `customers.balance` in its own convention (see
    Customer); `balance_after` is the balance once this entry applied. `entry_type` is
    `opening` (initial prepaid funds), `charge` or `payment`.
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
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Invoice(Base):
    """One invoice per closed period, enforced by the database.

    `number` is null while the invoice is `generating` and is taken from the reseller's
    gapless counter in the transaction that issues it.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("reseller_id", "number"),
        CheckConstraint(_one_of("status", InvoiceStatus), name="status_known"),
        CheckConstraint(
            f"status = '{InvoiceStatus.GENERATING.value}' OR number IS NOT NULL",
            name="issued_numbered",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    closed_period_id: Mapped[int] = mapped_column(ForeignKey("closed_periods.id"), unique=True)
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
    document_html: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), server_default=func.current_timestamp()
    )
    issued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"), unique=True)
    # A recurring fee's line (models.plans.SubscriptionFee), once per fee.
    fee_id: Mapped[int | None] = mapped_column(ForeignKey("subscription_fees.id"), unique=True)
    description: Mapped[str] = mapped_column(String(500))
    amount: Mapped[Decimal] = mapped_column(Money())
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Notification(Base):
    """Outbox row: an e-mail a mailer must send about an invoice, once per recipient."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("invoice_id", "recipient"),
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
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
