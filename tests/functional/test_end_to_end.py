"""The whole flow through the real broker, a real worker and PostgreSQL: a customer taken in,
charged, its period closed at its local midnight, and the invoice generated from the close."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from models import ClosedPeriod, Invoice, InvoiceLine
from models.catalog_file import parse_catalog
from tasks.catalog import load_catalog
from tests.support import wait_for
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _invoices() -> list[tuple[Invoice, list[InvoiceLine]]]:
    with unit_of_work() as session:
        invoices = list(session.scalars(select(Invoice).order_by(Invoice.id)))
        return [
            (
                invoice,
                list(
                    session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
                ),
            )
            for invoice in invoices
        ]


def test_intake_charge_close_and_invoice_flow_through_the_worker(clean_db, worker) -> None:
    """A Tokyo customer created on March 19 is invoiced once for Mar 19 to Apr 18, with the
    charge made inside the period and VAT from its class, after the close at Tokyo midnight."""
    from tasks.charges import record_charge_task
    from tasks.closing import close_due_task
    from tasks.intake import create_customer_task

    with unit_of_work() as session:
        load_catalog(session, parse_catalog((EXAMPLES / "catalog.yaml").read_text()))

    created = create_customer_task.delay(
        {
            "reseller": "acme",
            "name": "Kaiju Networks KK",
            "business_model": "Hosted IP PBX",
            "customer_class": "Business",
            "billing_period": "monthly_anniversary",
            "billing_timezone": "Asia/Tokyo",
            "balance_control": "postpaid",
            "currency": "JPY",
            "credit_limit": "100000",
            "custom_data": {"tax_code": "JP-1"},
            "created_at": "2026-03-19T03:00:00Z",
        }
    ).get(timeout=30)
    assert created["status"] == "created", created
    # Tokyo is UTC+9: the period starts at local midnight, 15:00 UTC the day before.
    assert created["first_period"]["start"] == "2026-03-18T15:00:00Z"
    assert created["first_period"]["end"] == "2026-04-18T15:00:00Z"

    charge = record_charge_task.delay(
        {
            "customer": "Kaiju Networks KK",
            "amount": "1234",
            "currency": "JPY",
            "occurred_at": "2026-04-18T14:59:59Z",
            "description": "Calls",
            "idempotency_key": "cdr-1",
        }
    ).get(timeout=30)
    assert charge["status"] == "recorded", charge

    # One second before local midnight nothing is due; at midnight the period closes.
    early = close_due_task.delay(as_of="2026-04-18T14:59:59Z").get(timeout=60)
    assert early["closed"] == 0
    closed = close_due_task.delay(as_of="2026-04-18T15:00:00Z").get(timeout=60)
    assert closed["closed"] == 1
    again = close_due_task.delay(as_of="2026-04-18T15:00:00Z").get(timeout=60)
    assert again["closed"] == 0

    issued = wait_for(
        lambda: [i for i in _invoices() if i[0].status == "issued"],
        timeout=60,
        what="the invoice generated from the close",
    )
    assert len(issued) == 1
    invoice, lines = issued[0]
    assert invoice.number == 1
    assert (invoice.covered_from, invoice.covered_to) == (
        dt.date(2026, 3, 19),
        dt.date(2026, 4, 18),
    )
    assert [line.amount for line in lines] == [Decimal(1234)]
    # 20 % VAT on 1234 yen is 246.8, rounded half-up to whole yen.
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal(1234),
        Decimal(247),
        Decimal(1481),
    )
    assert invoice.snapshot["buyer"]["name"] == "Kaiju Networks KK"
    with unit_of_work() as session:
        period = session.scalars(select(ClosedPeriod)).one()
        assert period.invoiced
        assert period.billing_timezone == "Asia/Tokyo"
