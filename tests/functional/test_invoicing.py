"""Invoice generation through Redis and a real worker against PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from models import ClosedPeriod, Invoice, InvoiceLine, Notification, Reseller
from models.invoicing_rules import format_long_date, local_date
from tests.invoicing_factories import (
    billing_customer,
    charge_payload,
    close_engine_period,
    close_period,
    local_midnight,
)
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

MAR19, APR19, MAY19 = dt.date(2026, 3, 19), dt.date(2026, 4, 19), dt.date(2026, 5, 19)


def _record(payload):
    from tasks.charges import record_charge_task

    result = record_charge_task.delay(payload).get(timeout=30)
    assert result["status"] == "recorded", result
    return result


def test_a_charge_on_each_side_of_a_boundary_lands_on_the_right_invoice(worker, clean_db) -> None:
    """A monthly-anniversary customer created March 19 in New York, periods from the period
    engine: a charge at the boundary minus 1 µs is on period 1, one at the boundary on period
    2, each invoiced once, and a redelivered batch creates nothing new."""
    from models.periods import first_period, next_period
    from tasks.invoicing import generate_invoices_task
    from tests.factories import make_customer

    tz = "America/New_York"
    with unit_of_work() as session:
        customer = make_customer(
            session,
            billing_period="monthly_anniversary",
            billing_timezone=tz,
            created_at=dt.datetime(2026, 3, 19, 14, 0, tzinfo=dt.UTC),
            credit_limit=None,
        )
        p1 = first_period("monthly_anniversary", MAR19, tz)
        p2 = next_period("monthly_anniversary", MAR19, tz, p1)
        first = close_engine_period(session, customer, p1).id
        second = close_engine_period(session, customer, p2).id
        session.expunge_all()
    boundary = p1.end
    assert boundary == local_midnight(APR19, tz)
    _record(charge_payload(customer, "1.25", boundary - dt.timedelta(microseconds=1), "before"))
    _record(charge_payload(customer, "2.50", boundary, "at"))
    _record(charge_payload(customer, "4.00", p1.start, "first-instant"))

    summary = generate_invoices_task.delay([first, second]).get(timeout=60)
    rerun = generate_invoices_task.delay([second, first]).get(timeout=60)

    assert summary["issued"] == 2
    assert rerun == {
        "status": "done",
        "errors": [],
        "issued": 0,
        "already_invoiced": [first, second],
        "missing": [],
        "failed": [],
        "invoices": [],
    }
    with unit_of_work() as session:
        invoices = {
            i.closed_period_id: i
            for i in session.scalars(select(Invoice).where(Invoice.customer_id == customer.id))
        }
        assert {k: v.subtotal for k, v in invoices.items()} == {
            first: Decimal("5.25"),
            second: Decimal("2.50"),
        }
        assert sorted(v.number for v in invoices.values()) == [1, 2]
        assert all(p.invoiced for p in session.scalars(select(ClosedPeriod)))
        issued = invoices[first]
        assert (issued.covered_from, issued.covered_to) == (MAR19, dt.date(2026, 4, 18))
        assert (invoices[second].covered_from, invoices[second].covered_to) == (
            APR19,
            dt.date(2026, 5, 18),
        )
        # issued "now" by the worker: the issue date is that instant's date in New York
        assert issued.issue_date == local_date(issued.issued_at, tz)
        assert issued.due_date == issued.issue_date  # the class has no grace period


def test_invoice_numbers_have_no_gaps_under_concurrent_generation(worker, clean_db) -> None:
    """60 periods of one reseller generated at once by the worker's two processes and four
    in-process threads, each period in two overlapping batches: numbers are exactly 1..60,
    one invoice per period."""
    from tasks.invoicing import generate_invoices, generate_invoices_task

    with unit_of_work() as session:
        ids = []
        for _ in range(60):
            customer = billing_customer(session, credit_limit=None)
            ids.append(close_period(session, customer, MAR19, APR19).id)
        session.expunge_all()
    batches = [ids[i : i + 4] for i in range(0, 60, 4)]
    shifted = [ids[i : i + 4] for i in range(2, 60, 4)] + [ids[:2]]

    sent = [generate_invoices_task.delay(b) for b in batches]

    def in_process(batch):
        with unit_of_work() as session:
            return generate_invoices(session, batch, now=dt.datetime.now(dt.UTC)).as_json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        local = list(pool.map(in_process, shifted))
    remote = [r.get(timeout=120) for r in sent]

    assert sum(s["issued"] for s in local + remote) == 60
    assert all(not s["failed"] for s in local + remote)
    with unit_of_work() as session:
        numbers = sorted(session.scalars(select(Invoice.number)))
        periods = session.scalar(select(func.count(func.distinct(Invoice.closed_period_id))))
        last = session.scalar(select(Reseller.last_invoice_number))
    assert numbers == list(range(1, 61))
    assert (periods, last) == (60, 60)


class _ById(HTMLParser):
    """The text of every element that has an id, as a browser would show it."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in {"meta", "br"}:
            return
        self._open.append(dict(attrs).get("id"))
        if tag == "tr" and ("class", "line") in attrs:
            self._row = []
        if tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag in {"meta", "br"}:
            return
        self._open.pop()
        if tag == "tr" and self._row is not None:
            self.rows.append([cell.strip() for cell in self._row])
            self._row = None

    def handle_data(self, data):
        for element_id in filter(None, self._open):
            self.text[element_id] = (self.text.get(element_id, "") + data).strip()
        if self._row is not None and self._row:
            self._row[-1] += data


def test_a_rendered_invoice_shows_the_customer_dates_and_totals(worker, clean_db, tmp_path) -> None:
    """`billing invoices show N --html FILE --pdf FILE --xml FILE` writes a page that, parsed,
    shows the customer, the covered local dates, the lines and the totals, a PDF whose text
    shows the same, and a schema-valid EN 16931 XML; list --customer finds it."""
    import facturx
    from pypdf import PdfReader

    from tasks.invoicing import generate_invoices_task
    from worker.cli import main

    tz = "Asia/Tokyo"
    with unit_of_work() as session:
        customer = billing_customer(
            session,
            name="Hokusai & Sons <Ltd>",
            currency="JPY",
            billing_timezone=tz,
            credit_limit=None,
            reseller="tokyo-voice",
            class_fields={
                "tax_name": "Consumption tax",
                "tax_rate": Decimal("0.1"),
                "grace_period_days": 30,
                "notification_emails": ["ap@hokusai.test"],
            },
        )
        period = close_period(session, customer, MAR19, APR19).id
        session.expunge_all()
    _record(charge_payload(customer, "1200", local_midnight(MAR19, tz), "a", description="Calls"))
    _record(
        charge_payload(
            customer,
            "345",
            local_midnight(APR19, tz) - dt.timedelta(seconds=1),
            "b",
            description="SMS",
        )
    )
    summary = generate_invoices_task.delay([period]).get(timeout=60)
    number = summary["invoices"][0]["number"]
    page, pdf, xml = tmp_path / "invoice.html", tmp_path / "invoice.pdf", tmp_path / "i.xml"

    shown = CliRunner().invoke(
        main,
        [
            *("invoices", "show", str(number), "--reseller", "tokyo-voice"),
            *("--html", str(page), "--pdf", str(pdf), "--xml", str(xml)),
        ],
    )
    listed = CliRunner().invoke(
        main, ["invoices", "list", "--customer", "HOKUSAI & sons <ltd>", "--json"]
    )

    assert shown.exit_code == 0, shown.output
    parsed = _ById()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert parsed.text["customer"] == "Hokusai & Sons <Ltd>"
    assert parsed.text["seller"] == "Tokyo-Voice"
    assert parsed.text["invoice-number"] == "1"
    assert parsed.text["covered"] == "March 19 \u2013 April 18, 2026"
    assert parsed.text["subtotal"] == "\xa51,545"
    assert parsed.text["tax"] == "\xa5155"  # 10 % of 1545 = 154.5, half-up
    assert parsed.text["total"] == "\xa51,700"
    assert parsed.rows == [
        ["March 19, 2026", "Calls", "\xa51,200"],
        ["April 18, 2026", "SMS", "\xa5345"],
    ]
    text = PdfReader(pdf).pages[0].extract_text()
    for expected in ("Invoice 1", "Hokusai & Sons <Ltd>", "Tokyo-Voice", "March 19, 2026"):
        assert expected in text
    for expected in ("Calls", "SMS", "\xa51,545", "\xa5155", "\xa51,700"):
        assert expected in text
    assert facturx.xml_check_xsd(xml.read_bytes(), flavor="factur-x", level="en16931")
    assert b"<ram:GrandTotalAmount>1700</ram:GrandTotalAmount>" in xml.read_bytes()
    with unit_of_work() as session:
        invoice = session.scalars(select(Invoice)).one()
        assert parsed.text["issue-date"] == format_long_date(invoice.issue_date)
        assert invoice.issue_date == local_date(invoice.issued_at, tz)
        assert invoice.due_date - invoice.issue_date == dt.timedelta(days=30)
        assert session.scalars(select(Notification.recipient)).all() == ["ap@hokusai.test"]
    listing = json.loads(listed.stdout)
    assert [
        (i["number"], i["customer"], i["total"], i["covered_from"], i["covered_to"])
        for i in listing
    ] == [(1, "Hokusai & Sons <Ltd>", "1700", "2026-03-19", "2026-04-18")]


def test_a_batch_with_a_failed_period_ends_failure_after_the_good_part_committed(
    worker, clean_db
) -> None:
    """Through the real worker: a batch with one period whose zone is unknown and one id
    that does not exist issues the healthy periods, then ends FAILURE in the result backend
    (what Flower shows) carrying the summary; `invoices generate --wait` exits 1."""
    from celery.result import AsyncResult

    from tasks.base import WorkFailed
    from tasks.invoicing import generate_invoices_task
    from worker.cli import main

    with unit_of_work() as session:
        ids = []
        for _ in range(4):
            customer = billing_customer(session, credit_limit=None)
            ids.append(close_period(session, customer, MAR19, APR19).id)
        session.get(ClosedPeriod, ids[1]).billing_timezone = "Atlantis/Capital"
    missing = max(ids) + 1000

    sent = generate_invoices_task.delay([*ids, missing])
    with pytest.raises(WorkFailed) as failed:
        sent.get(timeout=60)
    by_cli = CliRunner().invoke(main, ["invoices", "generate", str(ids[1]), "--wait"])

    assert AsyncResult(sent.id).state == "FAILURE"
    summary = failed.value.summary
    assert summary["status"] == "some_failed"
    assert (summary["issued"], summary["failed"], summary["missing"]) == (3, [ids[1]], [missing])
    with unit_of_work() as session:
        issued = set(session.scalars(select(Invoice.closed_period_id)))
        attempts = session.get(ClosedPeriod, ids[1]).invoice_attempts
    assert issued == {ids[0], ids[2], ids[3]}
    assert attempts == 2  # the batch, then the command
    assert by_cli.exit_code == 1, by_cli.output
    printed = json.loads(by_cli.stdout)
    assert printed["failed"] == [ids[1]]
    assert "Atlantis/Capital" in printed["errors"][0]["message"]
    listed = CliRunner().invoke(main, ["periods", "list", "--failed", "--json"])
    assert [(p["id"], p["invoice_attempts"]) for p in json.loads(listed.stdout)] == [(ids[1], 2)]


def test_numbers_follow_period_order_when_missed_periods_arrive_out_of_order(
    worker, clean_db
) -> None:
    """Three customers with eight missed periods each, one message per period sent in
    reverse and interleaved order to the worker's two processes: every customer's invoice
    numbers increase with its periods."""
    from tasks.invoicing import generate_invoices_task

    months = [dt.date(2025, m, 1) for m in range(1, 10)]
    with unit_of_work() as session:
        by_customer = []
        for _ in range(3):
            customer = billing_customer(session, credit_limit=None)
            by_customer.append(
                [close_period(session, customer, a, b).id for a, b in itertools.pairwise(months)]
            )
    messages = [ids[i] for i in reversed(range(8)) for ids in by_customer]

    results = [generate_invoices_task.delay([i]) for i in messages]
    for result in results:
        assert result.get(timeout=120)["status"] == "done"

    with unit_of_work() as session:
        number = {i.closed_period_id: i.number for i in session.scalars(select(Invoice))}
    assert len(number) == 24
    for ids in by_customer:
        numbers = [number[i] for i in ids]
        assert numbers == sorted(numbers), numbers
    assert sorted(number.values()) == list(range(1, 25))


def test_one_large_batch_is_issued_set_based_with_the_per_period_rules(worker, clean_db) -> None:
    """One message of 270 periods (90 customers in three zones, three months each), issued
    set-based by the worker: every invoice holds its own period's charges and fee lines; a
    charge recorded after its period's invoice goes on the customer's next invoice as a late
    charge; a period with a bad zone fails alone and holds only its customer's later period;
    numbers are 1..N in period order per customer; a rerun issues nothing new."""
    from tasks.base import WorkFailed
    from tasks.charges import record_charge
    from tasks.invoicing import generate_invoices_task
    from tests.fees_factories import make_plan, subscribe

    zones = ["UTC", "America/New_York", "Asia/Tokyo"]
    months = [dt.date(2026, m, 1) for m in (1, 2, 3, 4)]
    now = dt.datetime(2026, 4, 2, tzinfo=dt.UTC)
    periods: dict[int, list[int]] = {}
    with unit_of_work() as session:
        customers = [
            billing_customer(
                session, billing_timezone=zones[k % 3], created=months[0], period_end=months[1]
            )
            for k in range(90)
        ]
        for customer in customers:
            periods[customer.id] = [
                close_period(session, customer, a, b).id for a, b in itertools.pairwise(months)
            ]
            for a in months[:3]:
                at = local_midnight(a + dt.timedelta(days=14), customer.billing_timezone)
                payload = charge_payload(customer, "3.10", at, f"{customer.id}-{a}")
                assert record_charge(session, payload, now=now)["status"] == "recorded"
        bad, late, subscribed = customers[0], customers[1], customers[2]
        subscribe(
            session,
            subscribed,
            make_plan(session, "Line", "arrears", {"USD": "10.00"}),
            1,
            at=subscribed.created_at,
        )
        session.get(ClosedPeriod, periods[bad.id][1]).billing_timezone = "Atlantis/Capital"
        session.flush()
        session.expunge_all()
    first = generate_invoices_task.delay([periods[late.id][0]]).get(timeout=60)
    assert first["issued"] == 1
    late_at = local_midnight(dt.date(2026, 1, 20), late.billing_timezone)
    with unit_of_work() as session:
        payload = charge_payload(late, "7.00", late_at, "late-one")
        assert record_charge(session, payload, now=now)["status"] == "recorded"
    ids = sorted(i for ids in periods.values() for i in ids)

    with pytest.raises(WorkFailed) as failed:
        generate_invoices_task.delay(ids).get(timeout=120)
    with pytest.raises(WorkFailed) as rerun:
        generate_invoices_task.delay(list(reversed(ids))).get(timeout=120)

    summary = failed.value.summary
    assert summary["issued"] == 267
    assert summary["already_invoiced"] == [periods[late.id][0]]
    assert summary["failed"] == periods[bad.id][1:]
    assert [e["code"] for e in summary["errors"]] == [
        "generation_failed",
        "earlier_period_pending",
    ]
    assert rerun.value.summary["issued"] == 0
    assert len(rerun.value.summary["already_invoiced"]) == 268
    with unit_of_work() as session:
        invoices = {i.closed_period_id: i for i in session.scalars(select(Invoice))}
        lines: dict[int, list[tuple[str, Decimal]]] = {i.id: [] for i in invoices.values()}
        for line in session.scalars(select(InvoiceLine)):
            lines[line.invoice_id].append((line.description, line.amount))
        lines = {k: sorted(v) for k, v in lines.items()}
    assert sorted(i.number for i in invoices.values()) == list(range(1, 269))
    for customer_periods in periods.values():
        numbers = [invoices[i].number for i in customer_periods if i in invoices]
        assert numbers == sorted(numbers)
    assert set(periods[bad.id][1:]).isdisjoint(invoices)
    for cp, invoice in invoices.items():
        assert invoice.status == "issued"
        assert invoice.subtotal == sum(amount for _, amount in lines[invoice.id])
        assert invoice.total == invoice.subtotal + invoice.tax
        if cp in periods[subscribed.id]:
            assert [a for d, a in lines[invoice.id]] == [Decimal("3.10"), Decimal("10.00")]
        elif cp == periods[late.id][1]:
            day = format_long_date(local_date(late_at, late.billing_timezone))
            assert lines[invoice.id] == [
                ("Calls", Decimal("3.10")),
                (f"Calls (late charge from {day})", Decimal("7.00")),
            ]
        else:
            assert lines[invoice.id] == [("Calls", Decimal("3.10"))], cp
