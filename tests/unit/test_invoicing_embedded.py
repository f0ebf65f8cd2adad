"""Invoice generation on the embedded default database (SQLite): the service end to end."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from itertools import pairwise

import pytest
from sqlalchemy import func, select

from models import Charge, ClosedPeriod, Customer, Invoice, InvoiceLine, Notification, Reseller
from tasks.charges import record_charge
from tasks.invoice_documents import load_invoice_view, render_html
from tasks.invoicing import generate_invoices
from tests.invoicing_factories import (
    billing_customer,
    charge_payload,
    close_period,
    local_midnight,
)

MAR19, APR19, MAY19 = dt.date(2026, 3, 19), dt.date(2026, 4, 19), dt.date(2026, 5, 19)
NOW = dt.datetime(2026, 4, 19, 0, 5, tzinfo=dt.UTC)


def _document(session, invoice) -> str:
    view = load_invoice_view(session, invoice.id)
    assert view is not None
    return render_html(view)


def _charge(session, customer, amount, at, key=None, description="Calls"):
    result = record_charge(
        session,
        charge_payload(customer, amount, at, key, description=description),
        now=at,
    )
    assert result["status"] == "recorded", result
    return result


def test_a_closed_period_becomes_an_issued_numbered_invoice(session) -> None:
    """Lines, tax on the subtotal, number 1, dates, document and one notification per address."""
    customer = billing_customer(
        session,
        name="Ada Lovelace",
        class_fields={
            "tax_name": "VAT",
            "tax_rate": Decimal("0.2"),
            "grace_period_days": 15,
            "notification_emails": ["billing@acme.test", "ops@acme.test"],
        },
    )
    period = close_period(session, customer, MAR19, APR19)
    _charge(session, customer, "10.00", dt.datetime(2026, 3, 20, 8, tzinfo=dt.UTC))
    _charge(session, customer, "2.55", dt.datetime(2026, 4, 18, 23, tzinfo=dt.UTC))

    summary = generate_invoices(session, [period.id], now=NOW).as_json()

    assert summary["issued"] == 1
    invoice = session.scalars(select(Invoice)).one()
    assert (invoice.number, invoice.status) == (1, "issued")
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal("12.55"),
        Decimal("2.51"),
        Decimal("15.06"),
    )
    assert (invoice.covered_from, invoice.covered_to) == (MAR19, dt.date(2026, 4, 18))
    assert (invoice.issue_date, invoice.due_date) == (APR19, dt.date(2026, 5, 4))
    assert invoice.issued_at == NOW
    assert invoice.document_html is None  # documents are rendered on demand
    html = _document(session, invoice)
    assert "Ada Lovelace" in html
    assert "March 19 \u2013 April 18, 2026" in html
    assert "$15.06" in html
    assert session.scalar(select(func.count()).select_from(InvoiceLine)) == 2
    assert session.scalars(select(Charge.invoice_id)).all() == [invoice.id, invoice.id]
    assert sorted(session.scalars(select(Notification.recipient))) == [
        "billing@acme.test",
        "ops@acme.test",
    ]
    assert session.get(ClosedPeriod, period.id).invoiced is True
    assert session.scalar(select(Reseller.last_invoice_number)) == 1


def test_a_rerun_creates_nothing_new(session) -> None:
    """Generating the same batch again reports it already invoiced and writes nothing."""
    customer = billing_customer(session, class_fields={"notification_emails": ["a@x.test"]})
    period = close_period(session, customer, MAR19, APR19)
    _charge(session, customer, "1.00", dt.datetime(2026, 3, 20, tzinfo=dt.UTC))
    generate_invoices(session, [period.id], now=NOW)

    again = generate_invoices(session, [period.id, period.id], now=NOW).as_json()

    assert again["issued"] == 0
    assert again["already_invoiced"] == [period.id]
    assert session.scalar(select(func.count()).select_from(Invoice)) == 1
    assert session.scalar(select(func.count()).select_from(Notification)) == 1
    assert session.scalar(select(Reseller.last_invoice_number)) == 1


def test_a_charge_on_each_side_of_the_boundary_lands_on_its_own_invoice(session) -> None:
    """A charge one microsecond before the end is on period 1; one at the end is on period 2."""
    customer = billing_customer(session, billing_timezone="America/New_York")
    first = close_period(session, customer, MAR19, APR19)
    second = close_period(session, customer, APR19, MAY19)
    boundary = local_midnight(APR19, "America/New_York")
    _charge(session, customer, "1.00", boundary - dt.timedelta(microseconds=1), "before")
    _charge(session, customer, "2.00", boundary, "at")

    generate_invoices(session, [first.id, second.id], now=NOW)

    totals = dict(session.execute(select(Invoice.closed_period_id, Invoice.subtotal)).all())
    assert totals == {first.id: Decimal("1.00"), second.id: Decimal("2.00")}


def test_generating_a_later_period_first_leaves_the_earlier_periods_charges_alone(
    session,
) -> None:
    """Out-of-order generation (catch-up batches) never moves a charge to the wrong invoice,
    and the earlier period, issued first, gets the earlier number."""
    customer = billing_customer(session)
    first = close_period(session, customer, MAR19, APR19)
    second = close_period(session, customer, APR19, MAY19)
    _charge(session, customer, "1.00", dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    _charge(session, customer, "2.00", dt.datetime(2026, 5, 1, tzinfo=dt.UTC))

    generate_invoices(session, [second.id], now=NOW)
    generate_invoices(session, [first.id], now=NOW)

    rows = session.execute(select(Invoice.closed_period_id, Invoice.number, Invoice.subtotal))
    assert sorted(rows) == [(first.id, 1, Decimal("1.00")), (second.id, 2, Decimal("2.00"))]


def test_a_late_charge_goes_on_the_next_invoice_with_a_note(session) -> None:
    """A charge recorded after its period was invoiced lands on the next one, marked late."""
    customer = billing_customer(session)
    first = close_period(session, customer, MAR19, APR19)
    generate_invoices(session, [first.id], now=NOW)
    _charge(session, customer, "3.00", dt.datetime(2026, 4, 2, 10, tzinfo=dt.UTC), "late")
    second = close_period(session, customer, APR19, MAY19)

    generate_invoices(session, [second.id], now=NOW)

    invoice = session.scalars(select(Invoice).where(Invoice.closed_period_id == second.id)).one()
    line = session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)).one()
    assert invoice.subtotal == Decimal("3.00")
    assert line.description == "Calls (late charge from April 2, 2026)"


def test_charges_after_the_period_and_of_other_customers_are_not_taken(session) -> None:
    """Only this customer's charges before the period end go on its invoice."""
    customer = billing_customer(session)
    other = billing_customer(session)
    period = close_period(session, customer, MAR19, APR19)
    _charge(session, customer, "1.00", dt.datetime(2026, 4, 19, 0, 0, 1, tzinfo=dt.UTC))
    _charge(session, other, "5.00", dt.datetime(2026, 3, 25, tzinfo=dt.UTC))

    generate_invoices(session, [period.id], now=NOW)

    invoice = session.scalars(select(Invoice)).one()
    assert invoice.total == Decimal("0.00")
    assert "No charges in this period." in _document(session, invoice)
    assert session.scalar(select(func.count()).where(Charge.invoice_id.is_not(None))) == 0


def test_a_missing_template_does_not_stop_invoicing_and_is_reported_when_rendering(
    session,
) -> None:
    """Generation renders nothing, so a class whose template is missing still gets its
    invoices numbered; rendering the document on demand names the missing template."""
    import jinja2

    good = billing_customer(session)
    bad = billing_customer(
        session, customer_class="Broken", class_fields={"invoice_template": "missing.html"}
    )
    periods = [close_period(session, c, MAR19, APR19) for c in (good, bad)]

    summary = generate_invoices(session, [p.id for p in periods], now=NOW).as_json()

    assert (summary["issued"], summary["status"]) == (2, "done")
    invoice = session.scalars(select(Invoice).where(Invoice.customer_id == bad.id)).one()
    with pytest.raises(jinja2.TemplateNotFound, match=r"missing\.html"):
        _document(session, invoice)


def test_numbers_run_per_reseller_and_unknown_periods_are_reported(session) -> None:
    """Each reseller has its own gapless sequence; an id with no closed period is 'missing'."""
    a = [billing_customer(session, reseller="alpha") for _ in range(2)]
    b = [billing_customer(session, reseller="beta") for _ in range(3)]
    periods = [close_period(session, c, MAR19, APR19) for c in [*a, *b]]

    summary = generate_invoices(session, [p.id for p in periods] + [999999], now=NOW).as_json()

    assert summary["missing"] == [999999]
    assert summary["errors"][0]["code"] == "missing"
    rows = session.execute(
        select(Reseller.name, Invoice.number).join(Reseller, Reseller.id == Invoice.reseller_id)
    ).all()
    assert sorted(rows) == [("alpha", 1), ("alpha", 2), ("beta", 1), ("beta", 2), ("beta", 3)]


@pytest.mark.parametrize(
    ("currency", "amounts", "rate", "total", "shown"),
    [
        ("JPY", ["1000", "235"], "0.08", "1334", "\xa51,334"),
        ("BHD", ["1.000", "0.235"], "0.1", "1.359", "BHD\xa01.359"),
    ],
)
def test_invoices_in_zero_and_three_decimal_currencies(
    session, currency, amounts, rate, total, shown
) -> None:
    """Totals and the document follow the currency's minor units."""
    customer = billing_customer(
        session, currency=currency, class_fields={"tax_rate": Decimal(rate)}
    )
    period = close_period(session, customer, MAR19, APR19)
    for i, amount in enumerate(amounts):
        _charge(session, customer, amount, dt.datetime(2026, 3, 20 + i, tzinfo=dt.UTC))

    generate_invoices(session, [period.id], now=NOW)

    invoice = session.scalars(select(Invoice)).one()
    assert invoice.total == Decimal(total)
    assert shown in _document(session, invoice)


def test_the_document_escapes_customer_supplied_text(session) -> None:
    """Names and descriptions are text, never markup."""
    customer = billing_customer(session, name="<script>alert(1)</script> & Co")
    period = close_period(session, customer, MAR19, APR19)
    _charge(session, customer, "1.00", dt.datetime(2026, 3, 20, tzinfo=dt.UTC), description="<b>x")

    generate_invoices(session, [period.id], now=NOW)

    html = _document(session, session.scalars(select(Invoice)).one())
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html
    assert "&lt;b&gt;x" in html


def test_a_period_whose_zone_is_unknown_fails_alone_and_the_failure_is_recorded(session) -> None:
    """A closed period whose zone the tz database does not know fails on its own (it used to
    fail the whole batch in the numbering phase); the healthy ones are issued, and the bad
    one counts an attempt, keeps its error and is re-queued only after a back-off."""
    customers = [billing_customer(session) for _ in range(4)]
    periods = [close_period(session, c, MAR19, APR19) for c in customers]
    periods[2].billing_timezone = "Mars/Olympus_Mons"
    session.flush()
    wait = dt.timedelta(minutes=15)

    first = generate_invoices(session, [p.id for p in periods], now=NOW, retry_after=wait)
    second = generate_invoices(session, [periods[2].id], now=NOW, retry_after=wait)

    assert first.issued == 3
    assert [f.closed_period_id for f in first.failures] == [periods[2].id]
    assert second.issued == 0
    bad = session.get(ClosedPeriod, periods[2].id)
    session.refresh(bad)
    assert (bad.invoiced, bad.invoice_attempts) == (False, 2)
    assert "Mars/Olympus_Mons" in bad.invoice_error
    # 1st failure: queued again at now (reconcile waits `wait`); 2nd: at now + wait (2x).
    assert bad.invoice_enqueued_at == NOW + wait
    assert sorted(session.scalars(select(Invoice.number))) == [1, 2, 3]


def test_invoicing_a_later_period_first_invoices_the_customers_earlier_ones(session) -> None:
    """Given only its latest closed period, a customer's earlier uninvoiced periods are
    issued first, in period order, so numbers follow periods whatever message came first."""
    customer = billing_customer(session)
    months = [dt.date(2026, m, 19) for m in range(1, 6)]
    periods = [close_period(session, customer, a, b) for a, b in pairwise(months)]

    result = generate_invoices(session, [periods[-1].id], now=NOW)
    again = generate_invoices(session, [periods[1].id], now=NOW)

    assert result.status == "done"
    assert [i.closed_period_id for i in result.invoices] == [p.id for p in periods]
    numbers = {i.closed_period_id: i.number for i in session.scalars(select(Invoice))}
    assert [numbers[p.id] for p in periods] == [1, 2, 3, 4]
    assert (again.issued, again.already_invoiced) == (0, (periods[1].id,))


def test_a_later_period_waits_while_an_earlier_one_fails(session) -> None:
    """When a customer's earlier period cannot be invoiced, its later ones are held, never
    numbered before it; other customers are issued."""
    customer, other = billing_customer(session), billing_customer(session)
    early = close_period(session, customer, MAR19, APR19)
    late = close_period(session, customer, APR19, MAY19)
    fine = close_period(session, other, MAR19, APR19)
    early.billing_timezone = "Nowhere/Land"
    session.flush()

    result = generate_invoices(session, [late.id, fine.id], now=NOW).as_json()

    assert [i["closed_period_id"] for i in result["invoices"]] == [fine.id]
    assert {e["code"] for e in result["errors"]} == {"generation_failed", "earlier_period_pending"}
    assert sorted(result["failed"]) == sorted([early.id, late.id])
    held = session.get(ClosedPeriod, late.id)
    session.refresh(held)
    assert (held.invoiced, held.invoice_attempts) == (False, 1)
    assert "earlier period" in held.invoice_error


def test_a_customer_taken_in_with_french_details_gets_a_french_invoice_with_its_parties(
    session,
) -> None:
    """Intake stores the buyer's details; issuing snapshots them with the seller's; a later
    edit of the reseller does not change the issued invoice's documents."""
    from pypdf import PdfReader

    from tasks.intake import create_customer
    from tasks.invoice_documents import render_pdf
    from tests.factories import DROP, get_or_create_catalog, intake_payload

    reseller, _, _ = get_or_create_catalog(session, customer_class="Plain", tax_rate=Decimal("0.2"))
    reseller.legal_name = "ACME Télécom SAS"
    reseller.tax_id = "FR40303265045"
    reseller.iban = "FR7630006000011234567890189"
    created = create_customer(
        session,
        intake_payload(
            name="Émile SARL",
            customer_class="Plain",
            custom_data=DROP,
            currency="EUR",
            billing_timezone="Europe/Paris",
            created_at="2026-03-18T23:00:00Z",
            billing_address={
                "lines": ["3 avenue Foch"],
                "postal_code": "69006",
                "city": "Lyon",
                "country": "FR",
            },
            tax_id="FR23334175221",
            invoice_email="factures@emile.example",
            locale="fr_FR",
        ),
        now=dt.datetime(2026, 3, 19, tzinfo=dt.UTC),
    )
    assert created["status"] == "created", created
    customer = session.get(Customer, created["customer_id"])
    period = close_period(session, customer, MAR19, APR19)
    _charge(session, customer, "8.44", dt.datetime(2026, 3, 20, 8, tzinfo=dt.UTC))
    generate_invoices(session, [period.id], now=NOW)
    invoice = session.scalars(select(Invoice)).one()
    reseller.legal_name = "Renamed later"
    session.flush()

    view = load_invoice_view(session, invoice.id)
    assert view is not None
    text = " ".join(PdfReader(io.BytesIO(render_pdf(view))).pages[0].extract_text().split())
    for expected in ("Facture 1", "ACME Télécom SAS", "FR40303265045", "Émile SARL", "69006 Lyon"):
        assert expected in text, expected
    assert "FR23334175221" in text
    assert "10,13 €" in text
    assert "Renamed later" not in text
    assert sorted(session.scalars(select(Notification.recipient))) == ["factures@emile.example"]


def test_a_credit_note_is_rendered_from_its_stored_row_and_its_invoice(session) -> None:
    """A credit note issued by collections gets the invoice's parties and locale, its own
    number and date, and a valid type-381 e-invoice pointing at the invoice."""
    import facturx

    from tasks.corrections import credit_invoice
    from tasks.invoice_documents import einvoice_xml, load_credit_note_view

    customer = billing_customer(
        session, class_fields={"tax_rate": Decimal("0.2")}, customer_fields={"locale": "de_DE"}
    )
    period = close_period(session, customer, MAR19, APR19)
    _charge(session, customer, "10.00", dt.datetime(2026, 3, 20, tzinfo=dt.UTC))
    generate_invoices(session, [period.id], now=NOW)
    later = NOW + dt.timedelta(days=3)
    credited = credit_invoice(
        session, reseller="acme", number=1, amount="6.00", reason="Doppelt berechnet", now=later
    ).as_json()
    note_id = credited["credit_note_id"]

    view = load_credit_note_view(session, note_id)

    assert view is not None
    assert (view.number, view.credited_number, view.issue_date) == (1, 1, dt.date(2026, 4, 22))
    assert (view.subtotal, view.tax, view.total) == (
        Decimal("5.00"),
        Decimal("1.00"),
        Decimal("6.00"),
    )
    html = render_html(view)
    assert "Gutschrift" in html
    assert "Doppelt berechnet" in html
    assert facturx.xml_check_xsd(einvoice_xml(view), flavor="factur-x", level="en16931")
