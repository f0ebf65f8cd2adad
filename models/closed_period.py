"""A closed billing period: the record that a customer's period ended and must be invoiced."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UTCDateTime

# Partial-index condition (PostgreSQL and SQLite both support it).
_UNINVOICED = text("NOT invoiced")


class ClosedPeriod(Base):
    """One row per (customer, period start), enforced by the database: closing twice is a
    conflict, and a conflict means "already closed".

    The rule and timezone used are recorded as they were at closing time, so the invoice
    shows the dates the period really covered even if the customer's settings change later.
    `start_date`/`end_date` are the local dates of the boundaries (`end_date` exclusive), so
    the invoice covers `start_date .. end_date - 1 day`.

    `invoice_enqueued_at` is when invoice generation was last queued for it (null: the
    close committed but could not send the message, the broker being down) and `invoiced`
    whether its invoice exists; the reconcile step re-queues rows that stay uninvoiced.
    `invoice_attempts` counts the generations that failed on this period (the last error
    in `invoice_error`); each failure pushes its next re-queue further away, and after
    `MAX_INVOICE_ATTEMPTS` reconcile leaves it to an operator (`billing periods list
    --failed`).
    Voiding its invoice (`tasks.corrections`) leaves `invoiced` true: the period waits for
    the operator's reissue, so neither reconcile nor a stray message regenerates it, and its
    released charges wait for the replacement rather than move to a later invoice.
    """

    __tablename__ = "closed_periods"
    __table_args__ = (
        UniqueConstraint("customer_id", "period_start"),
        Index(
            "ix_closed_periods_uninvoiced",
            "invoice_enqueued_at",
            postgresql_where=_UNINVOICED,
            sqlite_where=_UNINVOICED,
        ),
        # A batch's customers' earlier periods still to invoice (tasks.invoicing).
        Index(
            "ix_closed_periods_customer_uninvoiced",
            "customer_id",
            "period_start",
            postgresql_where=_UNINVOICED,
            sqlite_where=_UNINVOICED,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date] = mapped_column(Date)
    billing_period: Mapped[str] = mapped_column(String(32))
    billing_timezone: Mapped[str] = mapped_column(String(64))
    closed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    invoice_enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    invoiced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    invoice_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    invoice_error: Mapped[str | None] = mapped_column(Text)


# Failed generations of one period after which reconcile stops re-queuing it.
MAX_INVOICE_ATTEMPTS = 5
