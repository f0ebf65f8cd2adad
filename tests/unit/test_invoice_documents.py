"""Invoice documents from an InvoiceView: HTML, PDF, EN 16931 XML and Factur-X, per locale."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import facturx
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from pypdf import PdfReader

from models.einvoice import NSMAP, cii_xml, percent
from models.invoice_view import (
    Address,
    EInvoiceFormat,
    InvoiceView,
    LineView,
    Party,
    document_locale,
)
from models.invoicing_rules import invoice_totals
from tasks.invoice_documents import (
    LANGUAGES,
    LOCALE_DIR,
    invoice_attachments,
    language_of,
    notification_text,
    render_facturx_pdf,
    render_html,
    render_pdf,
)

ROOT = Path(__file__).resolve().parents[2]

SELLER = Party(
    name="ACME Télécom SAS",
    address=Address(("12 rue de la Paix",), "Paris", "75002", "", "FR"),
    tax_id="FR40303265045",
    email="factures@acme.example",
    payment_text="Virement SEPA sous 15 jours",
    iban="FR7630006000011234567890189",
    bic="AGRIFRPP",
)
BUYER = Party(
    name="Émile & Fils <SARL>",
    address=Address(("3 avenue Foch", "Bâtiment B"), "Lyon", "69006", "", "FR"),
    tax_id="FR23334175221",
)


def view(**changes) -> InvoiceView:
    lines = changes.pop(
        "lines",
        (
            LineView("Appels", Decimal("5.00"), dt.date(2026, 3, 1)),
            LineView("SMS", Decimal("3.44"), dt.date(2026, 3, 2)),
        ),
    )
    currency = changes.pop("currency", "EUR")
    rate = changes.pop("tax_rate", Decimal("0.2"))
    totals = invoice_totals((line.amount for line in lines), rate, currency)
    values = {
        "number": 42,
        "issue_date": dt.date(2026, 3, 19),
        "due_date": dt.date(2026, 4, 3),
        "covered_from": dt.date(2026, 2, 19),
        "covered_to": dt.date(2026, 3, 18),
        "currency": currency,
        "subtotal": totals.subtotal,
        "tax_name": "VAT",
        "tax_rate": rate,
        "tax": totals.tax,
        "total": totals.total,
        "timezone": "Europe/Paris",
        "locale": "en_US",
        "seller": SELLER,
        "buyer": BUYER,
        "lines": tuple(lines),
        "einvoice": EInvoiceFormat.FACTURX,
    }
    values.update(changes)
    return InvoiceView(**values)


def pdf_text(pdf: bytes) -> str:
    """The PDF's text with every run of spaces and line breaks as one space."""
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def test_the_pdf_shows_number_dates_parties_lines_totals_and_payment() -> None:
    """Extracted PDF text carries everything an accounts-payable clerk checks."""
    text = pdf_text(render_pdf(view()))

    for expected in (
        "Invoice 42",
        "March 19, 2026",  # issue date
        "April 3, 2026",  # due date
        "February 19 \u2013 March 18, 2026",  # period
        "ACME Télécom SAS",
        "12 rue de la Paix",
        "75002 Paris",
        "FR40303265045",
        "Émile & Fils <SARL>",
        "Bâtiment B",
        "69006 Lyon",
        "FR23334175221",
        "Appels",
        "SMS",
        "€5.00",
        "€3.44",
        "€8.44",  # subtotal
        "VAT (20%)",
        "€1.69",
        "€10.13",
        "FR7630006000011234567890189",
        "Virement SEPA sous 15 jours",
    ):
        assert expected in text, expected


def test_a_french_customer_reads_french_words_and_french_formatting() -> None:
    """fr_FR: translated labels, `10,13 €`, `19 mars 2026`, the country named in French."""
    text = pdf_text(render_pdf(view(locale="fr_FR")))

    for expected in (
        "Facture 42",
        "19 mars 2026",
        "3 avril 2026",
        "19 février \u2013 18 mars 2026",
        "10,13 €",
        "1,69 €",
        "Total à payer",
        "Merci de régler 10,13 € avant le 3 avril 2026.",
        "France",
        "VAT (20",
    ):
        assert expected in text, expected
    assert "Invoice" not in text


def test_a_german_customer_reads_german() -> None:
    """de_DE: German labels, `19. März 2026`, `10,13 €`."""
    text = pdf_text(render_pdf(view(locale="de_DE")))

    for expected in ("Rechnung 42", "19. März 2026", "10,13 €", "Gesamtbetrag", "Frankreich"):
        assert expected in text, expected


def test_three_decimal_currencies_keep_their_decimals_and_a_space_after_the_code() -> None:
    """BHD in English reads `BHD 10.125`, never `BHD10.125`, and keeps three decimals."""
    lines = (LineView("Calls", Decimal("10.125"), None),)
    text = pdf_text(render_pdf(view(currency="BHD", tax_rate=Decimal(0), lines=lines)))

    assert "BHD 10.125" in text
    assert "BHD10" not in text


def test_the_same_invoice_gives_the_same_bytes_dated_on_its_issue_date() -> None:
    """PDF and Factur-X are reproducible from stored data: no clock, no random id."""
    first, second = render_pdf(view()), render_pdf(view())
    assert first == second
    assert render_facturx_pdf(view()) == render_facturx_pdf(view())
    metadata = PdfReader(io.BytesIO(first)).metadata
    assert metadata["/CreationDate"] == "D:20260319000000+00'00'"
    assert metadata["/Title"] == "Invoice 42"
    assert render_pdf(view(number=43)) != first


def test_the_factur_x_pdf_embeds_the_schema_valid_xml_as_pdf_a_3() -> None:
    """The PDF/A-3 carries `factur-x.xml`, identical to `--xml`, with the Factur-X XMP."""
    pdf = render_facturx_pdf(view())

    filename, xml = facturx.get_xml_from_pdf(pdf, check_xsd=True)
    assert filename == "factur-x.xml"
    assert xml == cii_xml(view())
    reader = PdfReader(io.BytesIO(pdf))
    raw = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode()
    assert "<pdfaid:part>3</pdfaid:part>" in raw
    assert "EN 16931" in raw
    assert reader.metadata["/ModDate"] == "D:20260319000000+00'00'"


LINE = "//ram:IncludedSupplyChainTradeLineItem"
LINE_TOTAL = f"{LINE}//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount"


def _x(root, path: str) -> list[str]:
    return [str(v) for v in root.xpath(path, namespaces=NSMAP)]


def test_the_xml_carries_the_invoice_totals_tax_dates_parties_and_currency() -> None:
    """Each EN 16931 business term this invoice has is the invoice's own value."""
    v = view()
    root = etree.fromstring(cii_xml(v))
    settlement = "//ram:ApplicableHeaderTradeSettlement"
    totals = f"{settlement}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"

    assert _x(root, "//rsm:ExchangedDocument/ram:ID/text()") == ["42"]
    assert _x(root, "//rsm:ExchangedDocument/ram:TypeCode/text()") == ["380"]
    assert _x(root, "//ram:IssueDateTime/udt:DateTimeString/text()") == ["20260319"]
    assert _x(root, f"{settlement}/ram:InvoiceCurrencyCode/text()") == ["EUR"]
    assert _x(root, f"{totals}/ram:LineTotalAmount/text()") == ["8.44"]
    assert _x(root, f"{totals}/ram:TaxBasisTotalAmount/text()") == ["8.44"]
    assert _x(root, f"{totals}/ram:TaxTotalAmount/text()") == ["1.69"]
    assert _x(root, f"{totals}/ram:TaxTotalAmount/@currencyID") == ["EUR"]
    assert _x(root, f"{totals}/ram:GrandTotalAmount/text()") == ["10.13"]
    assert _x(root, f"{totals}/ram:DuePayableAmount/text()") == ["10.13"]
    tax = f"{settlement}/ram:ApplicableTradeTax"
    assert _x(root, f"{tax}/ram:BasisAmount/text()") == ["8.44"]
    assert _x(root, f"{tax}/ram:CalculatedAmount/text()") == ["1.69"]
    assert _x(root, f"{tax}/ram:CategoryCode/text()") == ["S"]
    assert _x(root, f"{tax}/ram:RateApplicablePercent/text()") == ["20"]
    period = f"{settlement}/ram:BillingSpecifiedPeriod"
    assert _x(root, f"{period}/ram:StartDateTime/udt:DateTimeString/text()") == ["20260219"]
    assert _x(root, f"{period}/ram:EndDateTime/udt:DateTimeString/text()") == ["20260318"]
    due = f"{settlement}/ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString"
    assert _x(root, f"{due}/text()") == ["20260403"]
    assert _x(root, "//ram:PayeePartyCreditorFinancialAccount/ram:IBANID/text()") == [SELLER.iban]
    seller, buyer = "//ram:SellerTradeParty", "//ram:BuyerTradeParty"
    assert _x(root, f"{seller}/ram:Name/text()") == [SELLER.name]
    assert _x(root, f"{seller}/ram:SpecifiedTaxRegistration/ram:ID/text()") == [SELLER.tax_id]
    assert _x(root, f"{seller}/ram:PostalTradeAddress/ram:CountryID/text()") == ["FR"]
    assert _x(root, f"{buyer}/ram:Name/text()") == [BUYER.name]
    assert _x(root, f"{buyer}/ram:PostalTradeAddress/ram:LineTwo/text()") == ["Bâtiment B"]
    assert _x(root, f"{LINE}/ram:SpecifiedTradeProduct/ram:Name/text()") == ["Appels", "SMS"]
    assert _x(root, f"{LINE_TOTAL}/text()") == ["5.00", "3.44"]


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)
_addresses = st.none() | st.builds(
    Address,
    lines=st.lists(_text, max_size=3).map(tuple),
    city=_text,
    postal_code=st.text("0123456789", max_size=6),
    country=st.sampled_from(["FR", "DE", "US", "BH", "JP"]),
)
_parties = st.builds(
    Party,
    name=_text,
    address=_addresses,
    tax_id=st.sampled_from(["", "FR40303265045", "DE136695976"]),
    iban=st.sampled_from(["", "DE89370400440532013000"]),
)


@settings(max_examples=60, deadline=None)
@given(
    currency=st.sampled_from(["EUR", "USD", "JPY", "BHD", "CHF"]),
    rate=st.sampled_from([Decimal(0), Decimal("0.2"), Decimal("0.08875"), Decimal("0.055")]),
    cents=st.lists(st.integers(min_value=1, max_value=10**9), max_size=6),  # [] = no charges
    seller=_parties,
    buyer=_parties,
)
def test_every_generated_xml_validates_and_its_totals_add_up(
    currency, rate, cents, seller, buyer
) -> None:
    """Whatever the currency, rate, lines and parties, the XML passes the official EN 16931
    XSD shipped by factur-x and its header totals are the sums of its lines and tax."""
    from models.money import quantum

    lines = tuple(LineView(f"line {i}", c * quantum(currency), None) for i, c in enumerate(cents))
    v = view(currency=currency, tax_rate=rate, lines=lines, seller=seller, buyer=buyer)
    xml = cii_xml(v)

    assert facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931")
    root = etree.fromstring(xml)
    line_totals = [Decimal(t) for t in _x(root, f"{LINE_TOTAL}/text()")]
    (basis,) = [Decimal(t) for t in _x(root, "//ram:TaxBasisTotalAmount/text()")]
    (tax,) = [Decimal(t) for t in _x(root, "//ram:TaxTotalAmount/text()")]
    (grand,) = [Decimal(t) for t in _x(root, "//ram:GrandTotalAmount/text()")]
    assert len(line_totals) == max(1, len(lines))  # EN 16931 wants a line, even of zero
    assert sum(line_totals, Decimal(0)) == basis == v.subtotal
    assert tax == v.tax
    assert grand == basis + tax == v.total
    assert _x(root, "//ram:RateApplicablePercent/text()")[-1] == percent(rate)


class _Page(HTMLParser):
    """Element ids with their text, table rows of the lines, and the document language."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self.lang = ""
        self._stack: list[str | None] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "html":
            self.lang = attributes.get("lang", "")
        if tag in {"br", "meta"}:
            return
        self._stack.append(attributes.get("id"))
        if tag == "tr" and attributes.get("class") == "line":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag in {"br", "meta"}:
            return
        self._stack.pop()
        if tag == "tr" and self._row is not None:
            self.rows.append([cell.strip() for cell in self._row])
            self._row = None

    def handle_data(self, data):
        for element_id in filter(None, self._stack):
            self.ids[element_id] = (self.ids.get(element_id, "") + data).strip()
        if self._row:
            self._row[-1] += data


def test_the_html_has_the_structure_the_screenshot_showed() -> None:
    """Seller, buyer, facts, one row per line and the totals, each findable by id; the page
    declares the customer's language and escapes customer text."""
    html = render_html(view(locale="fr_FR"))
    page = _Page()
    page.feed(html)

    assert page.lang == "fr"
    assert page.ids["invoice-number"] == "42"
    assert page.ids["seller"] == "ACME Télécom SAS"
    assert page.ids["customer"] == "Émile & Fils <SARL>"
    assert page.ids["issue-date"] == "19 mars 2026"
    assert page.ids["due-date"] == "3 avril 2026"
    assert page.ids["total"] == "10,13\xa0€"
    assert page.ids["iban"].startswith("IBAN: FR7630006000011234567890189")
    assert page.rows == [
        ["1 mars 2026", "Appels", "5,00\xa0€"],
        ["2 mars 2026", "SMS", "3,44\xa0€"],
    ]
    assert "&lt;SARL&gt;" in html


def test_the_notification_and_attachment_follow_the_customer_language() -> None:
    """Subject, body and the attachment's file name are translated."""
    subject, body = notification_text(view(locale="fr_FR"))
    (attachment,) = invoice_attachments(view(locale="fr_FR"))

    assert subject == "Facture 42 de ACME Télécom SAS"
    assert "10,13\xa0€" in body
    assert "3 avril 2026" in body
    assert attachment.filename == "facture-42.pdf"
    assert list(PdfReader(io.BytesIO(attachment.content)).attachments) == ["factur-x.xml"]


def test_a_class_without_e_invoice_attaches_a_plain_pdf() -> None:
    """No Factur-X XML inside when the class does not ask for it."""
    (attachment,) = invoice_attachments(view(einvoice=EInvoiceFormat.NONE))

    assert attachment.filename == "invoice-42.pdf"
    assert PdfReader(io.BytesIO(attachment.content)).attachments == {}


@pytest.mark.parametrize(
    ("customer", "customer_class", "reseller", "expected"),
    [
        ("fr_FR", "de_DE", "en_GB", "fr_FR"),
        (None, "de_DE", "en_GB", "de_DE"),
        (None, "", "en_GB", "en_GB"),
        (None, "", "", "en_US"),
    ],
)
def test_the_document_locale_is_the_customer_s_else_the_class_s_else_the_reseller_s(
    customer, customer_class, reseller, expected
) -> None:
    """The most specific locale given wins; the default is en_US."""
    assert document_locale(customer, customer_class, reseller, "en_US") == expected


@pytest.mark.parametrize(
    ("locale", "language"),
    [("fr_CA", "fr"), ("de_CH", "de"), ("en_GB", "en"), ("ja_JP", "en"), ("nonsense", "en")],
)
def test_languages_without_a_catalog_read_english(locale, language) -> None:
    """A locale picks its language's catalog; one we have no words for reads English."""
    assert language_of(locale) == language


def test_every_catalog_translates_every_word_of_the_template_and_the_e_mail() -> None:
    """The .po files hold every message the template and the code use; fr and de leave
    none untranslated (a new word in the template fails this until it is translated)."""
    method_map = [
        ("tasks/invoice_documents.py", "python"),
        ("models/templates/**.html", "jinja2"),
    ]
    options = {"models/templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
    used = {
        message[2] if isinstance(message[2], str) else message[2][0]
        for message in extract_from_dir(
            str(ROOT), method_map, options, keywords={**DEFAULT_KEYWORDS, "translate": (2,)}
        )
    }
    assert "Total due" in used
    for language in LANGUAGES:
        with (LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as source:
            catalog = read_po(source)
        known = {m.id: m.string for m in catalog if m.id}
        assert used <= set(known), (language, used - set(known))
        if language != "en":
            assert all(known[m] for m in used), language


def credit_note(**changes) -> InvoiceView:
    from models.invoice_view import DocumentKind
    from models.invoicing_rules import split_gross

    totals = split_gross(Decimal("6.00"), Decimal("0.2"), "EUR")
    values = {
        "kind": DocumentKind.CREDIT_NOTE,
        "number": 7,
        "issue_date": dt.date(2026, 3, 25),
        "due_date": dt.date(2026, 3, 25),
        "subtotal": totals.subtotal,
        "tax": totals.tax,
        "total": totals.total,
        "lines": (LineView("Appels facturés deux fois", totals.subtotal, None),),
        "credited_number": 42,
        "credited_issue_date": dt.date(2026, 3, 19),
    }
    values.update(changes)
    base = view()
    from dataclasses import replace

    return replace(base, **values)


def test_a_credit_note_reads_as_one_and_its_xml_is_a_valid_381_referring_to_the_invoice() -> None:
    """Same template and parties; 'Avoir' in French, the corrected invoice named, net + tax
    split at the invoice's rate; the XML is type 381 with the preceding invoice (BG-3)."""
    note = credit_note(locale="fr_FR")
    text = pdf_text(render_pdf(note))

    for expected in ("Avoir 7", "FACTURE CORRIGÉE", "42", "25 mars 2026", "5,00 €", "1,00 €"):
        assert expected in text, expected
    assert "Cet avoir réduit la facture 42 de 6,00 €." in text
    assert "Merci de régler" not in text
    xml = cii_xml(note)
    assert facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931")
    root = etree.fromstring(xml)
    assert _x(root, "//rsm:ExchangedDocument/ram:TypeCode/text()") == ["381"]
    assert _x(root, "//ram:InvoiceReferencedDocument/ram:IssuerAssignedID/text()") == ["42"]
    assert _x(root, "//ram:GrandTotalAmount/text()") == ["6.00"]
    (attachment,) = invoice_attachments(note)
    assert attachment.filename == "avoir-7.pdf"


@pytest.mark.parametrize("gross", ["0.01", "6.00", "10.13", "99999.99"])
@pytest.mark.parametrize("rate", ["0", "0.2", "0.055", "0.08875"])
def test_a_gross_amount_splits_into_net_and_tax_that_add_back_up(gross, rate) -> None:
    """net + tax is exactly the credited amount, and the net is the rounded gross / (1 + rate)."""
    from models.invoicing_rules import split_gross

    totals = split_gross(Decimal(gross), Decimal(rate), "EUR")

    assert totals.subtotal + totals.tax == totals.total == Decimal(gross)
    assert abs(totals.subtotal * (1 + Decimal(rate)) - Decimal(gross)) <= Decimal("0.01")
