"""Invoice documents, rendered on demand from stored invoice data: HTML, PDF, Factur-X.

Invoice generation renders nothing: it stores the numbers, the lines and a snapshot of
the parties and the locale (`invoices.snapshot`). Documents are produced from that stored,
immutable data when someone asks (`billing invoices show --html/--pdf/--xml`) or when the
mailer attaches the PDF, so a large invoicing batch costs the same with or without them.

The same stored invoice always gives the same bytes: the PDF's dates are the issue date,
its file identifier is derived from the content (reportlab's invariant mode), and the
Factur-X embedding is told the same date instead of the clock.

Renderer: xhtml2pdf (HTML + CSS 2.1 on reportlab), pip-only, so `scripts/run` on a fresh
machine needs no system library. WeasyPrint draws CSS better but needs Pango from the
operating system. The PDF embeds the Bitstream Vera fonts that reportlab ships
(Latin scripts, €); PDF/A requires embedded fonts.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import (
    ClosedPeriod,
    CreditNote,
    Customer,
    CustomerClass,
    Invoice,
    InvoiceLine,
    Reseller,
)
from models.invoice_view import (
    Address,
    DocumentKind,
    EInvoiceFormat,
    InvoiceView,
    LineView,
    Party,
)
from models.invoicing_rules import (
    DEFAULT_LOCALE,
    covered_dates_text,
    format_long_date,
    format_money,
    format_rate,
    local_date,
    split_gross,
)

LOCALE_DIR = Path(__file__).resolve().parent.parent / "models" / "locale"
LANGUAGES = ("en", "fr", "de")  # the template's own words have a catalog in these


def language_of(locale: str) -> str:
    """The catalog language for a locale: "fr_CH" → "fr"; unknown languages read English."""
    try:
        language = Locale.parse(locale).language
    except (ValueError, UnknownLocaleError):
        return "en"
    return language if language in LANGUAGES else "en"


@cache
def translations(language: str) -> Translations:
    """The gettext catalog of `language`, compiled in memory from its .po file, once."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return Translations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


@cache
def template_environment(template_dir: str, language: str) -> jinja2.Environment:
    """Templates from `template_dir` (BILLING_TEMPLATE_DIR, if set) first, then the packaged
    ones, with the words of `language`.

    Autoescaping is on for every template: customer names and charge descriptions come
    from outside and must never become markup. One environment per language, because the
    installed translations belong to the environment.
    """
    loaders: list[jinja2.BaseLoader] = []
    if template_dir:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.PackageLoader("models", "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def translate(language: str, message: str, **values: object) -> str:
    """`message` in `language`, with `%(name)s` placeholders filled."""
    text = translations(language).ugettext(message)
    return text % values if values else text


def address_lines(address: Address | None, locale: str) -> list[str]:
    """An address as printed: street lines, postcode and city, region, country name."""
    if address is None:
        return []
    lines = list(address.lines)
    city = " ".join(part for part in (address.postal_code, address.city) if part)
    if city:
        lines.append(city)
    if address.region:
        lines.append(address.region)
    if address.country:
        lines.append(country_name(address.country, locale))
    return lines


def country_name(code: str, locale: str) -> str:
    try:
        return str(Locale.parse(locale).territories.get(code, code))
    except (ValueError, UnknownLocaleError):
        return code


def _party_context(party: Party, locale: str) -> dict[str, Any]:
    return {
        "name": party.name,
        "address_lines": address_lines(party.address, locale),
        "tax_id": party.tax_id,
        "email": party.email,
        "payment_text": party.payment_text,
        "iban": party.iban,
        "bic": party.bic,
    }


@cache
def _pdf_fonts() -> tuple[dict[str, str], ...]:
    """The Bitstream Vera faces reportlab ships, embedded in every PDF (PDF/A needs it)."""
    import reportlab

    folder = Path(reportlab.__file__).resolve().parent / "fonts"
    faces = [("Vera.ttf", "normal", "normal"), ("VeraBd.ttf", "bold", "normal")]
    faces += [("VeraIt.ttf", "normal", "italic"), ("VeraBI.ttf", "bold", "italic")]
    return tuple(
        {"url": (folder / name).as_uri(), "weight": weight, "style": style}
        for name, weight, style in faces
    )


def document_context(view: InvoiceView, *, for_pdf: bool = False) -> dict[str, Any]:
    """The template's variables: every amount and date already formatted for the locale."""
    locale = view.locale

    def money(amount: Any) -> str:
        return format_money(amount, view.currency, locale)

    return {
        "document": {
            "language": language_of(locale),
            "locale": locale,
            "fonts": _pdf_fonts() if for_pdf else (),
        },
        "invoice": {
            "credit_note": view.kind is DocumentKind.CREDIT_NOTE,
            "credited_number": view.credited_number,
            "credited_issue_date": ""
            if view.credited_issue_date is None
            else format_long_date(view.credited_issue_date, locale),
            "number": view.number,
            "issue_date": format_long_date(view.issue_date, locale),
            "due_date": format_long_date(view.due_date, locale),
            "covered": covered_dates_text(view.covered_from, view.covered_to, locale),
            "covered_from": view.covered_from.isoformat(),
            "covered_to": view.covered_to.isoformat(),
            "currency": view.currency,
            "subtotal": money(view.subtotal),
            "tax_name": view.tax_name,
            "tax_rate": format_rate(view.tax_rate, locale),
            "tax": money(view.tax),
            "total": money(view.total),
            "timezone": view.timezone,
        },
        "seller": _party_context(view.seller, locale),
        "buyer": _party_context(view.buyer, locale),
        # Templates written before parties existed used these two names.
        "reseller": {"name": view.seller.name},
        "customer": {"name": view.buyer.name},
        "lines": [
            {
                "date": "" if line.day is None else format_long_date(line.day, locale),
                "description": line.description,
                "amount": money(line.amount),
            }
            for line in view.lines
        ],
    }


def render_html(view: InvoiceView, *, template_dir: str = "", for_pdf: bool = False) -> str:
    """The invoice document as HTML, in the customer's locale."""
    env = template_environment(template_dir, language_of(view.locale))
    return env.get_template(view.template_name).render(**document_context(view, for_pdf=for_pdf))


class RenderError(RuntimeError):
    """The PDF renderer could not lay the document out."""


_PDF_LOCK = threading.Lock()  # reportlab's invariant switch is process-wide


def _pdf_instant(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def render_pdf(view: InvoiceView, *, template_dir: str = "") -> bytes:
    """The invoice as PDF from the same template, identical bytes for the same invoice."""
    from reportlab import rl_config
    from xhtml2pdf import pisa

    html = render_html(view, template_dir=template_dir, for_pdf=True)
    # It logs every CSS property it does not draw (border-collapse, …) as a warning.
    logging.getLogger("xhtml2pdf").setLevel(logging.ERROR)
    out = io.BytesIO()
    with _PDF_LOCK:
        previous = rl_config.invariant
        rl_config.invariant = 1  # fixed dates and a content-derived /ID: reproducible
        try:
            status = pisa.CreatePDF(html, dest=out, encoding="utf-8")
        finally:
            rl_config.invariant = previous
    if status.err:
        raise RenderError(f"the PDF renderer failed on invoice {view.number} ({status.err})")
    return _with_metadata(out.getvalue(), view)


def _with_metadata(pdf: bytes, view: InvoiceView) -> bytes:
    """Title, author and dates (the issue date, never the clock) in the PDF's info."""
    from pypdf import PdfReader, PdfWriter

    stamp = _pdf_instant(view.issue_date).strftime("D:%Y%m%d%H%M%S+00'00'")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.pdf_header = b"%PDF-1.7"  # PDF/A-3 is built on PDF 1.7
    writer.add_metadata(
        {
            "/Title": document_title(view),
            "/Author": view.seller.name,
            "/Subject": f"{view.seller.name} → {view.buyer.name}",
            "/Creator": "billing worker",
            "/Producer": "xhtml2pdf, reportlab, pypdf",
            "/CreationDate": stamp,
            "/ModDate": stamp,
        }
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@contextmanager
def _facturx_clock(day: dt.date) -> Iterator[None]:
    """The factur-x library stamps the embedded file and the XMP metadata with the clock;
    for a reproducible document it is given the issue date instead."""
    import facturx.facturx as fx

    instant = _pdf_instant(day)
    saved = fx._get_pdf_timestamp, fx._get_metadata_timestamp
    original_pdf_timestamp = saved[0]
    fx._get_pdf_timestamp = lambda date=None: original_pdf_timestamp(date or instant)
    fx._get_metadata_timestamp = lambda: instant.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    try:
        yield
    finally:
        fx._get_pdf_timestamp, fx._get_metadata_timestamp = saved


def einvoice_xml(view: InvoiceView) -> bytes:
    """The EN 16931 CII XML of the invoice (what Factur-X embeds and `--xml` writes)."""
    from models.einvoice import cii_xml

    empty = translate(language_of(view.locale), "No charges in this period.")
    return cii_xml(view, empty_line=empty)


def render_facturx_pdf(view: InvoiceView, *, template_dir: str = "") -> bytes:
    """The PDF with its EN 16931 CII XML embedded as Factur-X (PDF/A-3, `factur-x.xml`)."""
    from facturx import generate_from_binary

    pdf = render_pdf(view, template_dir=template_dir)
    xml = einvoice_xml(view)
    with _PDF_LOCK, _facturx_clock(view.issue_date):
        return bytes(
            generate_from_binary(
                pdf,
                xml,
                flavor="factur-x",
                level="en16931",
                check_xsd=True,
                pdf_metadata={
                    "author": view.seller.name,
                    "keywords": "Factur-X, Invoice",
                    "title": document_title(view),
                    "subject": f"{view.seller.name} → {view.buyer.name}",
                },
                lang=view.locale.replace("_", "-"),
            )
        )


def document_title(view: InvoiceView) -> str:
    language = language_of(view.locale)
    if view.kind is DocumentKind.CREDIT_NOTE:
        return translate(language, "Credit note %(number)s", number=view.number)
    return translate(language, "Invoice %(number)s", number=view.number)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str


def invoice_attachments(view: InvoiceView, *, template_dir: str = "") -> list[Attachment]:
    """What the invoice e-mail carries: the PDF, a Factur-X PDF when the class asks for it."""
    language = language_of(view.locale)
    if view.kind is DocumentKind.CREDIT_NOTE:
        stem = translate(language, "credit-note-%(number)s", number=view.number)
    else:
        stem = translate(language, "invoice-%(number)s", number=view.number)
    if view.einvoice is EInvoiceFormat.FACTURX:
        content = render_facturx_pdf(view, template_dir=template_dir)
    else:
        content = render_pdf(view, template_dir=template_dir)
    return [Attachment(f"{stem}.pdf", content, "application/pdf")]


def notification_text(view: InvoiceView) -> tuple[str, str]:
    """The invoice e-mail's subject and plain-text body, in the customer's language."""
    return _notification_text(
        view.locale,
        view.number,
        view.seller.name,
        view.buyer.name,
        (view.covered_from, view.covered_to),
        format_money(view.total, view.currency, view.locale),
        view.due_date,
    )


def issue_notification_text(
    snapshot: dict[str, Any],
    number: int,
    covered: tuple[dt.date, dt.date],
    total: Decimal,
    currency: str,
    due: dt.date,
) -> tuple[str, str]:
    """`notification_text` for an invoice being issued, from its snapshot: string formatting
    only, so issuing stays cheap."""
    locale = str(snapshot["locale"])
    return _notification_text(
        locale,
        number,
        str(snapshot["seller"]["name"]),
        str(snapshot["buyer"]["name"]),
        covered,
        format_money(total, currency, locale),
        due,
    )


def _notification_text(
    locale: str,
    number: int,
    seller: str,
    buyer: str,
    covered: tuple[dt.date, dt.date],
    total: str,
    due: dt.date,
) -> tuple[str, str]:
    language = language_of(locale)
    subject = translate(
        language, "Invoice %(number)s from %(seller)s", number=number, seller=seller
    )
    body = translate(
        language,
        "Invoice %(number)s for %(buyer)s, covering %(covered)s: %(total)s, due %(due)s.",
        number=number,
        buyer=buyer,
        covered=covered_dates_text(*covered, locale),
        total=total,
        due=format_long_date(due, locale),
    )
    return subject, body


def load_invoice_view(session: Session, invoice_id: int) -> InvoiceView | None:
    """The stored, issued invoice `invoice_id` as a view; None if it is not issued."""
    row = session.execute(
        select(
            Invoice,
            ClosedPeriod.billing_timezone,
            Reseller.display_name,
            Reseller.name.label("reseller_name"),
            Customer.name.label("customer_name"),
            CustomerClass.invoice_template,
        )
        .join(ClosedPeriod, ClosedPeriod.id == Invoice.closed_period_id)
        .join(Reseller, Reseller.id == Invoice.reseller_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .join(CustomerClass, CustomerClass.id == Customer.customer_class_id)
        .where(Invoice.id == invoice_id)
    ).one_or_none()
    if row is None:
        return None
    invoice: Invoice = row[0]
    if invoice.number is None or invoice.issue_date is None or invoice.due_date is None:
        return None
    timezone = row.billing_timezone
    lines = tuple(
        LineView(
            line.description,
            line.amount,
            None if line.occurred_at is None else local_date(line.occurred_at, timezone),
        )
        for line in session.execute(
            select(InvoiceLine.description, InvoiceLine.amount, InvoiceLine.occurred_at)
            .where(InvoiceLine.invoice_id == invoice.id)
            .order_by(InvoiceLine.occurred_at, InvoiceLine.id)
        )
    )
    # Invoices issued before snapshots existed print the names they were issued with.
    snapshot: dict[str, Any] = invoice.snapshot or {}
    return InvoiceView(
        number=invoice.number,
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
        covered_from=invoice.covered_from,
        covered_to=invoice.covered_to,
        currency=invoice.currency,
        subtotal=invoice.subtotal,
        tax_name=invoice.tax_name,
        tax_rate=invoice.tax_rate,
        tax=invoice.tax,
        total=invoice.total,
        timezone=timezone,
        locale=str(snapshot.get("locale") or DEFAULT_LOCALE),
        seller=Party.from_json(snapshot.get("seller"), row.display_name or row.reseller_name),
        buyer=Party.from_json(snapshot.get("buyer"), row.customer_name),
        lines=lines,
        einvoice=EInvoiceFormat(snapshot.get("einvoice") or EInvoiceFormat.NONE),
        template_name=str(snapshot.get("template") or row.invoice_template),
    )


def load_credit_note_view(session: Session, credit_note_id: int) -> InvoiceView | None:
    """A stored credit note as a view: the parties, locale and tax of the invoice it
    corrects, one line with its reason; its amount includes tax (split at the invoice's
    rate: `models.invoicing_rules.split_gross`)."""
    note = session.get(CreditNote, credit_note_id)
    if note is None:
        return None
    invoice = load_invoice_view(session, note.invoice_id)
    if invoice is None:
        return None
    totals = split_gross(note.amount, invoice.tax_rate, note.currency)
    return replace(
        invoice,
        kind=DocumentKind.CREDIT_NOTE,
        number=note.number,
        issue_date=note.issue_date,
        due_date=note.issue_date,
        subtotal=totals.subtotal,
        tax=totals.tax,
        total=totals.total,
        lines=(LineView(note.reason, totals.subtotal, None),),
        credited_number=invoice.number,
        credited_issue_date=invoice.issue_date,
    )
