"""The customer, as the reseller's panel defines it, and its current open billing period."""

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
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, BigIntKey, Money, UTCDateTime
from models.catalog import BusinessModel, CustomerClass, Reseller

# Partial-index condition (PostgreSQL and SQLite both support it).
_ACTIVE = text("status = 'active'")


class BalanceControl(StrEnum):
    PREPAID = "prepaid"
    POSTPAID = "postpaid"


class BlockReason(StrEnum):
    """Why a customer may not use services. Reasons are independent: a customer is blocked
    while at least one is recorded (`customer_blocks`), and each is lifted on its own."""

    CREDIT_LIMIT = "credit_limit"  # postpaid balance owed at or over the credit limit
    NO_FUNDS = "no_funds"  # prepaid funds at zero
    OPERATOR = "operator"  # suspended by an operator
    OVERDUE = "overdue"  # suspended by collections for an overdue invoice


class CustomerStatus(StrEnum):
    """Lifecycle. Only active customers are billed; `blocked` is separate (see Customer)."""

    ACTIVE = "active"
    CLOSED = "closed"
    TERMINATED = "terminated"


class Customer(Base):
    """A billed customer.

    `balance` follows the panel's convention: for prepaid customers it is the available
    funds (positive, charges lower it); for postpaid customers it is what the customer owes
    (charges raise it). `blocked` means the customer may no longer use services; it is kept
    equal to "some `CustomerBlock` row exists" by `tasks.blocks` (the hot paths read the flag,
    the rows say why). A blocked customer is still billed.

    The current open period `[current_period_start, current_period_end)` is stored as UTC
    instants; the closer selects on `current_period_end <= now` through a partial index.
    `created_local_date` is the period anchor: the creation date in the billing timezone.
    It stays the anchor when the rule or zone changes later: a customer moved to
    `monthly_anniversary` keeps the day of the month it was created on.
    """

    __tablename__ = "customers"
    __table_args__ = (
        Index(
            "ix_customers_due",
            "current_period_end",
            postgresql_where=_ACTIVE,
            sqlite_where=_ACTIVE,
        ),
        CheckConstraint("balance_control IN ('prepaid', 'postpaid')", name="balance_control_known"),
        CheckConstraint("status IN ('active', 'closed', 'terminated')", name="status_known"),
        CheckConstraint(
            "credit_limit IS NULL OR (balance_control = 'postpaid' AND credit_limit >= 0)",
            name="credit_limit_postpaid_only",
        ),
        CheckConstraint("current_period_start < current_period_end", name="period_not_empty"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("resellers.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    business_model_id: Mapped[int] = mapped_column(ForeignKey("business_models.id"))
    customer_class_id: Mapped[int] = mapped_column(ForeignKey("customer_classes.id"))
    billing_period: Mapped[str] = mapped_column(String(32))
    billing_timezone: Mapped[str] = mapped_column(String(64))
    balance_control: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(String(3))
    credit_limit: Mapped[Decimal | None] = mapped_column(Money())
    balance: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0), server_default="0")
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[str] = mapped_column(
        String(16), default=CustomerStatus.ACTIVE.value, server_default=CustomerStatus.ACTIVE.value
    )
    custom_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The buyer on its invoices (optional): postal address (`models.invoice_view.Address` as
    # JSON), tax id, an address that receives its invoices, the locale of its documents.
    billing_address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tax_id: Mapped[str | None] = mapped_column(String(50))
    invoice_email: Mapped[str | None] = mapped_column(String(320))
    locale: Mapped[str | None] = mapped_column(String(35))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_local_date: Mapped[dt.date] = mapped_column(Date)
    current_period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    current_period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # One customer per intake idempotency key; a repeated key returns this customer.
    intake_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    stored_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), server_default=func.current_timestamp()
    )
    # A billing period rule or timezone change waiting for the end of the period it was
    # asked in (`pending_from`, a boundary of the current rule and zone): that period still
    # closes by the old ones, and the closer switches at the boundary (tasks.period_changes).
    pending_billing_period: Mapped[str | None] = mapped_column(String(32))
    pending_billing_timezone: Mapped[str | None] = mapped_column(String(64))
    pending_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # When the customer was closed (status `closed`): its last period ends here.
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    reseller: Mapped[Reseller] = relationship(lazy="raise")
    business_model: Mapped[BusinessModel] = relationship(lazy="raise")
    customer_class: Mapped[CustomerClass] = relationship(lazy="raise")


# Names are unique case-insensitively; the index, not a check before insert, enforces it,
# so two workers racing on the same name produce exactly one customer.
Index("uq_customers_name_lower", func.lower(Customer.name), unique=True)


class CustomerBlock(Base):
    """One reason a customer is blocked, since when. At most one row per (customer, reason);
    the row is deleted when that reason is lifted. Written only through `tasks.blocks`."""

    __tablename__ = "customer_blocks"
    __table_args__ = (
        UniqueConstraint("customer_id", "reason"),
        CheckConstraint(
            "reason IN (" + ", ".join(f"'{r.value}'" for r in BlockReason) + ")",
            name="reason_known",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    reason: Mapped[str] = mapped_column(String(16))
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
