"""The EN 16931 e-invoice of an `InvoiceView`: UN/CEFACT CII XML, Factur-X profile EN 16931.

Pure: the same view gives the same bytes. The XML is what `factur-x` embeds in the PDF/A-3
(`tasks.invoice_documents.render_facturx_pdf`) and what `billing invoices show --xml` writes;
it validates against the Factur-X 1.0.7 (ZUGFeRD 2.3) EN 16931 XSD that the `factur-x`
library ships (`facturx.xml_check_xsd`).

How this billing model maps onto EN 16931:

- each invoice line is one charge: quantity 1 (unit C62, "one"), net price = line amount;
- one VAT breakdown (BG-23) for the whole invoice: tax is computed once on the subtotal,
  exactly as EN 16931 computes it per category; category `S` (standard) when the rate is
  above zero, `Z` (zero rated) at zero;
- the billing period is the invoicing period (BG-14), the due date the payment terms' due
  date (BT-9); the seller's IBAN makes the payment means a SEPA credit transfer (58),
  otherwise a plain credit transfer (30) with the seller's payment text;
- tax ids are VAT identifiers (schemeID `VA`);
- a credit note is type 381 with positive amounts and the corrected invoice as its
  preceding invoice reference (BG-3).

EN 16931's business rules (the schematron, not the XSD) allow at most two decimals in an
amount: invoices in a three-decimal currency (BHD, KWD, …) pass the schema but not that
rule, as their amounts are exact in the currency.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from lxml import etree
from lxml.etree import _Element

from models.invoice_view import Address, DocumentKind, InvoiceView, LineView, Party
from models.money import round_money

RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
NSMAP = {"rsm": RSM, "ram": RAM, "udt": UDT, "qdt": QDT}

EN16931_GUIDELINE = "urn:cen.eu:en16931:2017"
COMMERCIAL_INVOICE = "380"
CREDIT_NOTE = "381"
SEPA_CREDIT_TRANSFER = "58"
CREDIT_TRANSFER = "30"
UNIT_ONE = "C62"


def _sub(parent: _Element, ns: str, tag: str, text: str | None = None, **attrs: str) -> _Element:
    element = etree.SubElement(parent, f"{{{ns}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def _ram(parent: _Element, tag: str, text: str | None = None, **attrs: str) -> _Element:
    return _sub(parent, RAM, tag, text, **attrs)


def _date(parent: _Element, tag: str, day: dt.date) -> None:
    _sub(_ram(parent, tag), UDT, "DateTimeString", day.strftime("%Y%m%d"), format="102")


def percent(rate: Decimal) -> str:
    """A tax rate fraction as EN 16931's percentage: Decimal("0.08875") → "8.875"."""
    value = (rate * 100).normalize()
    return f"{value:f}"


def tax_category(rate: Decimal) -> str:
    return "S" if rate > 0 else "Z"


def _address(parent: _Element, address: Address) -> None:
    node = _ram(parent, "PostalTradeAddress")
    if address.postal_code:
        _ram(node, "PostcodeCode", address.postal_code)
    for tag, line in zip(("LineOne", "LineTwo", "LineThree"), address.lines, strict=False):
        _ram(node, tag, line)
    if address.city:
        _ram(node, "CityName", address.city)
    _ram(node, "CountryID", address.country)
    if address.region:
        _ram(node, "CountrySubDivisionName", address.region)


def _party(parent: _Element, tag: str, party: Party) -> None:
    node = _ram(parent, tag)
    _ram(node, "Name", party.name)
    if party.address is not None and party.address.country:
        _address(node, party.address)
    if party.email:
        _ram(_ram(node, "URIUniversalCommunication"), "URIID", party.email, schemeID="EM")
    if party.tax_id:
        _ram(_ram(node, "SpecifiedTaxRegistration"), "ID", party.tax_id, schemeID="VA")


def cii_xml(view: InvoiceView, *, empty_line: str = "No charges in this period.") -> bytes:
    """The invoice as CII XML (Factur-X EN 16931 profile), UTF-8 bytes.

    EN 16931 requires at least one line (BG-25): an invoice of a period without charges
    carries one line of amount zero named `empty_line`.
    """

    def amount(value: Decimal) -> str:
        return f"{round_money(value, view.currency):f}"

    rate = percent(view.tax_rate)
    category = tax_category(view.tax_rate)
    root = etree.Element(f"{{{RSM}}}CrossIndustryInvoice", nsmap=NSMAP)

    context = _sub(root, RSM, "ExchangedDocumentContext")
    _ram(_ram(context, "GuidelineSpecifiedDocumentContextParameter"), "ID", EN16931_GUIDELINE)

    document = _sub(root, RSM, "ExchangedDocument")
    _ram(document, "ID", view.document_id)
    credit_note = view.kind is DocumentKind.CREDIT_NOTE
    _ram(document, "TypeCode", CREDIT_NOTE if credit_note else COMMERCIAL_INVOICE)
    _date(document, "IssueDateTime", view.issue_date)

    transaction = _sub(root, RSM, "SupplyChainTradeTransaction")
    lines = view.lines or (LineView(empty_line, Decimal(0), None),)
    for number, line in enumerate(lines, start=1):
        item = _ram(transaction, "IncludedSupplyChainTradeLineItem")
        _ram(_ram(item, "AssociatedDocumentLineDocument"), "LineID", str(number))
        _ram(_ram(item, "SpecifiedTradeProduct"), "Name", line.description)
        price = _ram(_ram(item, "SpecifiedLineTradeAgreement"), "NetPriceProductTradePrice")
        _ram(price, "ChargeAmount", amount(line.amount))
        delivery = _ram(item, "SpecifiedLineTradeDelivery")
        _ram(delivery, "BilledQuantity", "1", unitCode=UNIT_ONE)
        settlement = _ram(item, "SpecifiedLineTradeSettlement")
        tax = _ram(settlement, "ApplicableTradeTax")
        _ram(tax, "TypeCode", "VAT")
        _ram(tax, "CategoryCode", category)
        _ram(tax, "RateApplicablePercent", rate)
        if line.day is not None:
            period = _ram(settlement, "BillingSpecifiedPeriod")
            _date(period, "StartDateTime", line.day)
            _date(period, "EndDateTime", line.day)
        summation = _ram(settlement, "SpecifiedTradeSettlementLineMonetarySummation")
        _ram(summation, "LineTotalAmount", amount(line.amount))

    agreement = _ram(transaction, "ApplicableHeaderTradeAgreement")
    _party(agreement, "SellerTradeParty", view.seller)
    _party(agreement, "BuyerTradeParty", view.buyer)
    _ram(transaction, "ApplicableHeaderTradeDelivery")

    settlement = _ram(transaction, "ApplicableHeaderTradeSettlement")
    _ram(settlement, "PaymentReference", view.document_id)
    _ram(settlement, "InvoiceCurrencyCode", view.currency)
    means = _ram(settlement, "SpecifiedTradeSettlementPaymentMeans")
    _ram(means, "TypeCode", SEPA_CREDIT_TRANSFER if view.seller.iban else CREDIT_TRANSFER)
    if view.seller.payment_text:
        _ram(means, "Information", view.seller.payment_text)
    if view.seller.iban:
        _ram(_ram(means, "PayeePartyCreditorFinancialAccount"), "IBANID", view.seller.iban)
        if view.seller.bic:
            institution = _ram(means, "PayeeSpecifiedCreditorFinancialInstitution")
            _ram(institution, "BICID", view.seller.bic)
    tax = _ram(settlement, "ApplicableTradeTax")
    _ram(tax, "CalculatedAmount", amount(view.tax))
    _ram(tax, "TypeCode", "VAT")
    if category == "Z":
        _ram(tax, "ExemptionReason", "Zero rated")
    _ram(tax, "BasisAmount", amount(view.subtotal))
    _ram(tax, "CategoryCode", category)
    _ram(tax, "RateApplicablePercent", rate)
    period = _ram(settlement, "BillingSpecifiedPeriod")
    _date(period, "StartDateTime", view.covered_from)
    _date(period, "EndDateTime", view.covered_to)
    _date(_ram(settlement, "SpecifiedTradePaymentTerms"), "DueDateDateTime", view.due_date)
    totals = _ram(settlement, "SpecifiedTradeSettlementHeaderMonetarySummation")
    _ram(totals, "LineTotalAmount", amount(view.subtotal))
    _ram(totals, "TaxBasisTotalAmount", amount(view.subtotal))
    _ram(totals, "TaxTotalAmount", amount(view.tax), currencyID=view.currency)
    _ram(totals, "GrandTotalAmount", amount(view.total))
    _ram(totals, "DuePayableAmount", amount(view.total))
    if credit_note and view.credited_number is not None:
        # BG-3: the invoice this credit note corrects.
        reference = _ram(settlement, "InvoiceReferencedDocument")
        _ram(reference, "IssuerAssignedID", str(view.credited_number))
        if view.credited_issue_date is not None:
            issued = _ram(reference, "FormattedIssueDateTime")
            _sub(
                issued,
                QDT,
                "DateTimeString",
                view.credited_issue_date.strftime("%Y%m%d"),
                format="102",
            )

    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
