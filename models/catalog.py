"""The catalog a reseller's panel defines: resellers, business models, customer classes.

Loaded from a YAML/JSON file (`billing catalog load`); customers refer to these by name.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Integer, String, Text, false, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, Rate, UTCDateTime
from models.collections_rules import CollectionPolicy
from models.invoice_view import EInvoiceFormat


class Reseller(Base):
    """Owns customers; invoice numbers run without gaps per reseller."""

    __tablename__ = "resellers"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    # The seller on its invoices (`models.invoice_view.Party`); empty = not given.
    legal_name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tax_id: Mapped[str] = mapped_column(String(50), default="", server_default="")
    email: Mapped[str] = mapped_column(String(320), default="", server_default="")
    payment_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    iban: Mapped[str] = mapped_column(String(34), default="", server_default="")
    bic: Mapped[str] = mapped_column(String(11), default="", server_default="")
    # Locale of its customers' documents when neither customer nor class names one.
    locale: Mapped[str] = mapped_column(String(35), default="", server_default="")
    # The last invoice number handed out. Taken with `UPDATE … RETURNING` inside the
    # transaction that finalizes the invoice, so a rollback gives the number back.
    last_invoice_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Credit notes have their own gapless sequence, taken the same way.
    last_credit_note_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), server_default=func.current_timestamp()
    )


class BusinessModel(Base):
    """Which service is provided: hosted IP PBX, internet access, …"""

    __tablename__ = "business_models"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    service_type: Mapped[str] = mapped_column(String(50))
    description: Mapped[str] = mapped_column(Text, default="")


class CustomerClass(Base):
    """Parameters shared by every customer of the class.

    `custom_fields` is a list of `{"name": str, "type": str, "mandatory": bool}`; `type` is
    one of `models.custom_fields.CUSTOM_FIELD_TYPES`.

    The collection policy (`models.collections_rules.CollectionPolicy`): `reminder_days`
    (days before the due date), `overdue_notice`, `suspend_after_days` and
    `terminate_after_days` (days overdue); the defaults (none, false, null, null) do nothing.
    """

    __tablename__ = "customer_classes"
    __table_args__ = (
        CheckConstraint("grace_period_days >= 0", name="grace_period_non_negative"),
        CheckConstraint("tax_rate >= 0", name="tax_rate_non_negative"),
        CheckConstraint(
            "einvoice_format IN (" + ", ".join(f"'{f.value}'" for f in EInvoiceFormat) + ")",
            name="einvoice_format_known",
        ),
        CheckConstraint(
            "suspend_after_days IS NULL OR suspend_after_days >= 0", name="suspend_non_negative"
        ),
        CheckConstraint(
            "terminate_after_days IS NULL OR terminate_after_days >= 0",
            name="terminate_non_negative",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    grace_period_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    invoice_template: Mapped[str] = mapped_column(String(100), default="default.html")
    tax_name: Mapped[str] = mapped_column(String(50), default="Tax")
    tax_rate: Mapped[Decimal] = mapped_column(Rate(), default=Decimal(0))
    notification_emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    custom_fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Which customer details intake must have ("billing_address", "tax_id", "invoice_email");
    # the structured e-invoice its customers receive; their documents' default locale.
    requires: Mapped[list[str] | None] = mapped_column(JSON, default=list)
    einvoice_format: Mapped[str] = mapped_column(
        String(16), default=EInvoiceFormat.NONE.value, server_default=EInvoiceFormat.NONE.value
    )
    locale: Mapped[str] = mapped_column(String(35), default="", server_default="")
    reminder_days: Mapped[list[int]] = mapped_column(JSON, default=list)
    overdue_notice: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    suspend_after_days: Mapped[int | None] = mapped_column(Integer)
    terminate_after_days: Mapped[int | None] = mapped_column(Integer)

    def collection_policy(self) -> CollectionPolicy:
        return CollectionPolicy(
            reminder_days=tuple(self.reminder_days or ()),
            overdue_notice=self.overdue_notice,
            suspend_after_days=self.suspend_after_days,
            terminate_after_days=self.terminate_after_days,
        )
