"""What an invoice document shows, as a plain value built from stored, immutable data.

Every document (HTML, PDF, the EN 16931 XML, the notification e-mail) is rendered from an
`InvoiceView` and nothing else, so the same stored invoice always gives the same bytes.
The parties are the snapshot taken when the invoice was issued (`Party.from_json` reads it
back), so a later catalog or customer edit never changes an issued invoice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"  # corrects an issued invoice (`credited_number`)


class EInvoiceFormat(StrEnum):
    """Which structured e-invoice a customer class asks for."""

    NONE = "none"
    FACTURX = "factur-x"  # EN 16931 CII XML embedded in a PDF/A-3


@dataclass(frozen=True)
class Address:
    """A postal address; `country` is an ISO 3166-1 alpha-2 code."""

    lines: tuple[str, ...] = ()
    city: str = ""
    postal_code: str = ""
    region: str = ""
    country: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Address | None:
        if not data:
            return None
        return cls(
            lines=tuple(str(line) for line in data.get("lines", ()) if line),
            city=str(data.get("city") or ""),
            postal_code=str(data.get("postal_code") or ""),
            region=str(data.get("region") or ""),
            country=str(data.get("country") or ""),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "lines": list(self.lines),
            "city": self.city,
            "postal_code": self.postal_code,
            "region": self.region,
            "country": self.country,
        }


@dataclass(frozen=True)
class Party:
    """The seller (the reseller) or the buyer (the customer) as printed on the invoice."""

    name: str
    address: Address | None = None
    tax_id: str = ""
    email: str = ""
    # Seller only: how to pay.
    payment_text: str = ""
    iban: str = ""
    bic: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, fallback_name: str) -> Party:
        data = data or {}
        return cls(
            name=str(data.get("name") or fallback_name),
            address=Address.from_json(data.get("address")),
            tax_id=str(data.get("tax_id") or ""),
            email=str(data.get("email") or ""),
            payment_text=str(data.get("payment_text") or ""),
            iban=str(data.get("iban") or ""),
            bic=str(data.get("bic") or ""),
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.address is not None:
            out["address"] = self.address.as_json()
        for key in ("tax_id", "email", "payment_text", "iban", "bic"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class LineView:
    description: str
    amount: Decimal
    day: dt.date | None  # the local date the charge occurred, in the billing timezone


@dataclass(frozen=True)
class InvoiceView:
    """One issued invoice, everything its documents print."""

    number: int
    issue_date: dt.date
    due_date: dt.date
    covered_from: dt.date
    covered_to: dt.date
    currency: str
    subtotal: Decimal
    tax_name: str
    tax_rate: Decimal
    tax: Decimal
    total: Decimal
    timezone: str
    locale: str
    seller: Party
    buyer: Party
    lines: tuple[LineView, ...] = field(default_factory=tuple)
    einvoice: EInvoiceFormat = EInvoiceFormat.NONE
    template_name: str = "default.html"
    kind: DocumentKind = DocumentKind.INVOICE
    credited_number: int | None = None  # credit notes: the invoice they correct
    credited_issue_date: dt.date | None = None

    @property
    def document_id(self) -> str:
        """The invoice number as the e-invoice and file names carry it."""
        return str(self.number)


def document_locale(
    customer: str | None, customer_class: str | None, reseller: str | None, default: str
) -> str:
    """The locale of a customer's documents: its own, else its class's, else its reseller's."""
    return next((locale for locale in (customer, customer_class, reseller) if locale), default)


def issue_snapshot(
    seller: Party, buyer: Party, *, locale: str, einvoice: str, template: str
) -> dict[str, Any]:
    """What an issued invoice keeps of the catalog and the customer, for its documents."""
    return {
        "seller": seller.as_json(),
        "buyer": buyer.as_json(),
        "locale": locale,
        "einvoice": einvoice,
        "template": template,
    }
