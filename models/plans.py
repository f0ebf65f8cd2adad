"""Plans a reseller sells for a fee per billing period, and customers' subscriptions to them.

The rules (proration, which fees an invoice carries) are in `models.fees`; these are the rows.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
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
from models.names import MAX_KEY_LENGTH

_OPEN = text("ends_at IS NULL")


class Plan(Base):
    """A recurring fee of one of the reseller's business models, billed in advance or in
    arrears (`models.fees.BillingMode`). Unique per reseller by name key."""

    __tablename__ = "plans"
    __table_args__ = (
        UniqueConstraint("reseller_id", "name_key"),
        CheckConstraint("billing_mode IN ('advance', 'arrears')", name="billing_mode_known"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("resellers.id"))
    business_model_id: Mapped[int] = mapped_column(ForeignKey("business_models.id"))
    name: Mapped[str] = mapped_column(String(100))
    name_key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    billing_mode: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text, default="")


class PlanFee(Base):
    """A plan's fee per billing period and unit in one currency; a plan offers only the
    currencies it has a fee in."""

    __tablename__ = "plan_fees"
    __table_args__ = (
        UniqueConstraint("plan_id", "currency"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money())


class Subscription(Base):
    """One term of a customer's subscription to a plan: one quantity over `[starts_at,
    ends_at)`.

    A quantity change ends the term at the instant of the change and starts a new one
    (`replaces_id` links them), so each side of the change is prorated by its own days.
    `starts_on`/`ends_on` are the local dates of the instants in the billing timezone of the
    moment, the days proration counts (the start day is billed, the end day is not). At most
    one open term per customer and plan.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("ends_at IS NULL OR ends_at >= starts_at", name="ends_after_start"),
        Index("ix_subscriptions_customer", "customer_id", "starts_at"),
        Index(
            "uq_subscriptions_open",
            "customer_id",
            "plan_id",
            unique=True,
            postgresql_where=_OPEN,
            sqlite_where=_OPEN,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[dt.date | None] = mapped_column(Date)
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))


class SubscriptionFee(Base):
    """A fee billed (or credited) for a subscription term and a period: the record that makes
    every fee billed exactly once. Unique per (term, period start, kind), so a period's
    in-advance fee is billed once whichever invoice comes to it first, across catch-up,
    retries and concurrent generators."""

    __tablename__ = "subscription_fees"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period_start", "kind"),
        CheckConstraint("kind IN ('advance', 'arrears', 'credit')", name="kind_known"),
        Index("ix_subscription_fees_customer", "customer_id", "period_start"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    first_day: Mapped[dt.date] = mapped_column(Date)
    last_day: Mapped[dt.date] = mapped_column(Date)
    days: Mapped[int] = mapped_column(Integer)
    period_days: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money())
