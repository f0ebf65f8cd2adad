"""Collections through Redis, a real worker and PostgreSQL: overdue at the local day start,
payments applied oldest first, the ladder once per step even after an outage or with two
runners, suspension and resume, corrections numbered without gaps under concurrency."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from models import (
    BlockReason,
    CollectionStep,
    CreditNote,
    Invoice,
    InvoiceApplication,
    Notification,
    Payment,
    Reseller,
)
from models.collections_rules import overdue_since
from tasks.blocks import block_reasons
from tests.invoicing_factories import (
    billing_customer,
    charge_payload,
    close_period,
    local_midnight,
    payment_payload,
)
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

D = Decimal
EMAILS = ["ar@acme.test", "ops@acme.test"]


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _customer(**fields: Any) -> Any:
    with unit_of_work() as session:
        customer = billing_customer(session, **fields)
        session.expunge(customer)
    return customer


def _invoice(customer: Any, start: dt.date, end: dt.date, amount: str, issued: dt.datetime) -> Any:
    """Record `amount` used at the start of [start, end), close that period and issue its
    invoice at `issued` (in-process: the issue instant is the test's)."""
    from tasks.charges import record_charge
    from tasks.invoicing import generate_invoices

    tz = customer.billing_timezone
    with unit_of_work() as session:
        used = local_midnight(start, tz) + dt.timedelta(hours=1)
        key = f"{customer.name}-{start}"
        result = record_charge(session, charge_payload(customer, amount, used, key), now=used)
        assert result["status"] == "recorded", result
        period = close_period(session, customer, start, end)
        summary = generate_invoices(session, [period.id], now=issued)
        assert summary.issued == 1, summary
        invoice = session.scalars(select(Invoice).where(Invoice.closed_period_id == period.id))
        found = invoice.one()
        session.expunge(found)
    return found


def _run(as_of: dt.datetime) -> dict[str, Any]:
    from tasks.collections import run_collections_task

    return run_collections_task.delay(as_of.isoformat()).get(timeout=60)


def _pay(customer: Any, amount: str, when: dt.datetime, key: str) -> dict[str, Any]:
    from tasks.charges import record_payment_task

    result = record_payment_task.delay(payment_payload(customer, amount, when, key)).get(timeout=30)
    assert result["status"] == "recorded", result
    return result


def _steps(invoice_id: int) -> list[tuple[str, bool]]:
    with unit_of_work() as session:
        return [
            (s.step, s.sent)
            for s in session.scalars(
                select(CollectionStep)
                .where(CollectionStep.invoice_id == invoice_id)
                .order_by(CollectionStep.id)
            )
        ]


def _topics(invoice_id: int) -> list[str]:
    with unit_of_work() as session:
        return list(
            session.scalars(
                select(Notification.topic)
                .where(Notification.invoice_id == invoice_id, Notification.topic != "invoice")
                .order_by(Notification.id)
            )
        )


def _statement(customer: Any, as_of: dt.datetime | None = None) -> dict[str, Any]:
    from worker.cli import main

    at = ["--as-of", as_of.isoformat()] if as_of else []
    result = CliRunner().invoke(
        main, ["customers", "statement", customer.name, "--reseller", "acme", *at, "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize(
    ("tz", "start", "end", "grace", "due", "overdue_at"),
    [
        # Havana skips midnight on 2026-03-08: the day after the due date starts at 01:00 CDT.
        ("America/Havana", "2026-02-01", "2026-03-01", 6, "2026-03-07", "2026-03-08T05:00Z"),
        # Santiago skips midnight on 2026-09-06: that day starts at 01:00 -03.
        ("America/Santiago", "2026-08-01", "2026-09-01", 4, "2026-09-05", "2026-09-06T04:00Z"),
        # An ordinary zone east of UTC: overdue before the UTC midnight.
        ("Asia/Tokyo", "2026-02-01", "2026-03-01", 9, "2026-03-10", "2026-03-10T15:00Z"),
    ],
)
def test_an_invoice_becomes_overdue_at_the_local_day_start_after_its_due_date(
    worker, clean_db, tz, start, end, grace, due, overdue_at
) -> None:
    """One microsecond before the next local day starts the invoice is still issued and gets
    no notice; at that instant (not at a UTC midnight) it is overdue and the notice goes out."""
    customer = _customer(
        billing_timezone=tz,
        created=dt.date.fromisoformat(start),
        period_end=dt.date.fromisoformat(end),
        class_fields={
            "grace_period_days": grace,
            "overdue_notice": True,
            "notification_emails": EMAILS,
        },
    )
    end_day = dt.date.fromisoformat(end)
    invoice = _invoice(
        customer,
        dt.date.fromisoformat(start),
        end_day,
        "80.00",
        local_midnight(end_day, tz) + dt.timedelta(hours=9),
    )
    assert invoice.due_date == dt.date.fromisoformat(due)
    boundary = _utc(overdue_at)
    assert overdue_since(invoice.due_date, tz) == boundary

    before = boundary - dt.timedelta(microseconds=1)
    assert _run(before)["steps"] == {}
    assert _statement(customer, before)["entries"][0]["state"] == "issued"

    assert _run(boundary)["steps"] == {"overdue_notice": 1}
    statement = _statement(customer, boundary)
    assert statement["entries"][0]["state"] == "overdue"
    assert statement["overdue"] == [
        {"number": invoice.number, "amount_due": "80.00", "overdue_since": overdue_at[:-1] + ":00Z"}
    ]
    assert _topics(invoice.id) == ["overdue_notice", "overdue_notice"]  # one per address
    assert _run(boundary + dt.timedelta(days=1))["steps"] == {}


def test_a_payment_pays_the_older_invoice_first_and_leaves_credit_for_the_next(
    worker, clean_db
) -> None:
    """Through the worker: a payment larger than two open invoices pays the older due date
    first, then the newer, and the rest is applied when the next invoice is generated."""
    from tasks.invoicing import generate_invoices_task

    feb, mar, apr, may = (dt.date(2026, m, 1) for m in (2, 3, 4, 5))
    customer = _customer(created=feb, period_end=mar, class_fields={"grace_period_days": 10})
    older = _invoice(customer, feb, mar, "30.00", local_midnight(mar, "UTC"))
    newer = _invoice(customer, mar, apr, "45.00", local_midnight(apr, "UTC"))

    paid = _pay(customer, "100.00", _utc("2026-04-05T10:00Z"), "pay-1")
    assert paid["balance"] == "-25.00"

    with unit_of_work() as session:
        applied = session.execute(
            select(InvoiceApplication.invoice_id, InvoiceApplication.amount).order_by(
                InvoiceApplication.id
            )
        ).all()
        assert [tuple(a) for a in applied] == [(older.id, D("30.00")), (newer.id, D("45.00"))]
        assert session.scalar(select(Payment.unapplied)) == D("25.00")
        from tasks.charges import record_charge

        used = _utc("2026-04-10T10:00Z")
        record_charge(session, charge_payload(customer, "40.00", used, "april"), now=used)
        period_id = close_period(session, customer, apr, may).id
    summary = generate_invoices_task.delay([period_id]).get(timeout=60)
    assert summary["issued"] == 1
    with unit_of_work() as session:
        latest = session.get(Invoice, summary["invoices"][0]["invoice_id"])
        credit = session.scalar(
            select(InvoiceApplication.amount).where(InvoiceApplication.invoice_id == latest.id)
        )
        assert (latest.total, credit) == (D("40.00"), D("25.00"))
        assert session.scalar(select(Payment.unapplied)) == 0
    statement = _statement(customer)  # now: the last invoice was issued today by the worker
    assert [e.get("state") for e in statement["entries"]] == [
        "paid",
        "paid",
        None,
        "partially_paid",
    ]
    assert [e["balance"] for e in statement["entries"]] == ["30.00", "75.00", "-25.00", "15.00"]
    assert (statement["amount_due"], statement["credit"]) == ("15.00", "0.00")


def test_suspension_after_n_days_and_resume_on_payment_keep_a_credit_limit_block_apart(
    worker, clean_db
) -> None:
    """Suspended (reason overdue) N days after the due day; newer usage reaches the credit
    limit (its own block); paying the overdue invoice through the worker resumes the overdue
    block only, and the statement shows the credit-limit block left."""
    from tasks.charges import record_charge_task

    feb, mar = dt.date(2026, 2, 1), dt.date(2026, 3, 1)
    customer = _customer(
        created=feb,
        period_end=mar,
        credit_limit=D("40.00"),
        class_fields={
            "grace_period_days": 10,
            "suspend_after_days": 3,
            "notification_emails": EMAILS,
        },
    )
    invoice = _invoice(customer, feb, mar, "30.00", local_midnight(mar, "UTC"))  # due Mar 11
    assert _run(_utc("2026-03-14T23:59:59Z"))["steps"] == {}
    suspended = _run(_utc("2026-03-15T00:00Z"))
    assert (suspended["steps"], suspended["suspended"]) == ({"suspend": 1}, 1)

    for key, amount in (("m1", "9.00"), ("m2", "50.00")):
        result = record_charge_task.delay(
            charge_payload(customer, amount, _utc("2026-03-16T10:00Z"), key)
        ).get(timeout=30)
        assert result["status"] == "recorded", result
    with unit_of_work() as session:
        assert set(block_reasons(session, customer.id)) == {
            BlockReason.OVERDUE,
            BlockReason.CREDIT_LIMIT,
        }

    paid = _pay(customer, "30.00", _utc("2026-03-17T10:00Z"), "pay-overdue")
    assert (paid["balance"], paid["blocked"]) == ("59.00", True)
    statement = _statement(customer, _utc("2026-03-17T11:00Z"))
    assert list(statement["block_reasons"]) == ["credit_limit"]
    assert statement["overdue"] == []
    assert _steps(invoice.id) == [("suspend", True), ("resume", True)]
    assert _topics(invoice.id) == ["suspend", "suspend", "resume", "resume"]
    assert _run(_utc("2026-03-20T00:00Z"))["steps"] == {}  # paid: no more steps, no re-suspend


def test_a_three_day_outage_then_one_run_sends_each_missed_reminder_once_in_order(
    worker, clean_db
) -> None:
    """Reminders 3, 2 and 1 days before the due date all missed: the next run sends the three,
    furthest first, once each; a second run sends nothing."""
    feb, mar = dt.date(2026, 2, 1), dt.date(2026, 3, 1)
    customer = _customer(
        created=feb,
        period_end=mar,
        class_fields={
            "grace_period_days": 10,
            "reminder_days": [1, 3, 2],
            "notification_emails": EMAILS[:1],
        },
    )
    invoice = _invoice(customer, feb, mar, "12.00", local_midnight(mar, "UTC"))  # due Mar 11
    assert _run(_utc("2026-03-07T12:00Z"))["steps"] == {}
    # Down from March 8 to March 10 included; back on March 10 at noon.
    first = _run(_utc("2026-03-10T12:00Z"))
    second = _run(_utc("2026-03-10T12:05Z"))
    assert (first["steps"], second["steps"]) == ({"reminder": 3}, {})
    assert _steps(invoice.id) == [("reminder:3", True), ("reminder:2", True), ("reminder:1", True)]
    assert _topics(invoice.id) == ["reminder:3", "reminder:2", "reminder:1"]


def test_two_concurrent_runners_send_nothing_twice(worker, clean_db) -> None:
    """Twenty overdue invoices, runs started at once on two worker processes and in this
    process: every step is taken once and each notification written once."""
    from tasks.collections import run_collections, run_collections_task

    feb, mar = dt.date(2026, 2, 1), dt.date(2026, 3, 1)
    fields = {
        "grace_period_days": 5,
        "reminder_days": [2],
        "overdue_notice": True,
        "suspend_after_days": 1,
        "notification_emails": EMAILS,
    }
    invoices = [
        _invoice(
            _customer(created=feb, period_end=mar, class_fields=fields),
            feb,
            mar,
            "10.00",
            local_midnight(mar, "UTC"),
        )
        for _ in range(20)
    ]
    as_of = _utc("2026-03-10T12:00Z")  # due Mar 6: reminder obsolete, notice and suspension

    def in_process() -> dict[str, Any]:
        with unit_of_work() as session:
            return run_collections(session, now=as_of).as_json()

    queued = [run_collections_task.delay(as_of.isoformat()) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        local = list(pool.map(lambda _: in_process(), range(2)))
    results = [r.get(timeout=120) for r in queued] + local
    for kind in ("overdue_notice", "suspend"):
        assert sum(r["steps"].get(kind, 0) for r in results) == len(invoices)
    assert sum(r["suspended"] for r in results) == len(invoices)
    with unit_of_work() as session:
        steps = session.scalar(select(func.count()).select_from(CollectionStep))
        sent = session.scalar(
            select(func.count()).select_from(Notification).where(Notification.topic != "invoice")
        )
    assert steps == 3 * len(invoices)  # skipped reminder, notice, suspension
    assert sent == 2 * len(invoices) * len(EMAILS)


def test_void_reissue_and_credit_notes_are_numbered_without_gaps_under_concurrency(
    worker, clean_db
) -> None:
    """Invoices voided and reissued while other invoices are generated by the worker, and
    credit notes issued from several threads: invoice numbers and credit-note numbers each run
    1..n without a gap or a repeat, and a refused credit takes no number."""
    from tasks.corrections import credit_invoice, reissue_invoice, void_invoice
    from tasks.invoicing import generate_invoices_task

    feb, mar, apr = (dt.date(2026, m, 1) for m in (2, 3, 4))
    customers = [_customer(created=feb, period_end=mar) for _ in range(6)]
    first = [_invoice(c, feb, mar, "20.00", local_midnight(mar, "UTC")) for c in customers]
    now = _utc("2026-03-05T12:00Z")
    with unit_of_work() as session:
        pending = [close_period(session, c, mar, apr).id for c in customers]
        from tasks.charges import record_charge

        for c in customers:
            used = _utc("2026-03-10T10:00Z")
            record_charge(session, charge_payload(c, "5.00", used, f"{c.name}-mar"), now=used)

    def correct(invoice: Invoice) -> tuple[str, str]:
        with unit_of_work() as session:
            voided = void_invoice(
                session, reseller="acme", number=invoice.number, reason="typo", now=now
            )
        with unit_of_work() as session:
            reissued = reissue_invoice(session, reseller="acme", number=invoice.number, now=now)
        return voided.status.value, reissued.status.value

    def credit(number: int, amount: str) -> str:
        with unit_of_work() as session:
            result = credit_invoice(
                session, reseller="acme", number=number, amount=amount, reason="goodwill", now=now
            )
            return result.status.value

    generation = [generate_invoices_task.delay([pid]) for pid in pending]
    with ThreadPoolExecutor(max_workers=4) as pool:
        corrected = list(pool.map(correct, first[:3]))
        credits = list(
            pool.map(
                lambda args: credit(*args),
                [(inv.number, "1.00") for inv in first[3:]] * 3 + [(first[3].number, "99.00")],
            )
        )
    for result in generation:
        assert result.get(timeout=60)["issued"] == 1
    assert corrected == [("voided", "reissued")] * 3
    assert sorted(credits) == ["credited"] * 9 + ["refused"]
    with unit_of_work() as session:
        numbers = sorted(session.scalars(select(Invoice.number)))
        notes = sorted(session.scalars(select(CreditNote.number)))
        reseller = session.scalars(select(Reseller)).one()
        void = session.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.status == "void")
        )
    assert numbers == list(range(1, 6 + 6 + 3 + 1))  # 6 first, 6 next, 3 replacements
    assert reseller.last_invoice_number == 15
    assert notes == list(range(1, 10))
    assert reseller.last_credit_note_number == 9
    assert void == 3


def _cli(*args: str) -> tuple[int, Any]:
    from worker.cli import main

    result = CliRunner().invoke(main, list(args))
    try:
        return result.exit_code, json.loads(result.output)
    except json.JSONDecodeError:
        return result.exit_code, result.output


def test_the_correction_commands_and_the_state_filter(worker, clean_db) -> None:
    """`billing invoices void|reissue|credit` as the README shows them, refusals as structured
    errors with exit status 1, and `billing invoices list --status` by state."""
    feb, mar, apr = (dt.date(2026, m, 1) for m in (2, 3, 4))
    customer = _customer(created=feb, period_end=mar, class_fields={"grace_period_days": 5})
    first = _invoice(customer, feb, mar, "20.00", local_midnight(mar, "UTC"))
    second = _invoice(customer, mar, apr, "8.00", local_midnight(apr, "UTC"))
    number = str(first.number)

    code, voided = _cli(
        "invoices", "void", number, "--reseller", "acme", "--reason", "typo", "--json"
    )
    assert (code, voided["status"], voided["charges_released"]) == (0, "voided", 1)
    code, refused = _cli(
        "invoices", "void", number, "--reseller", "acme", "--reason", "x", "--json"
    )
    assert (code, refused["status"], refused["errors"][0]["code"]) == (1, "refused", "not_issued")
    code, unknown = _cli("invoices", "void", "99", "--reseller", "acme", "--reason", "x")
    assert (code, "has no invoice 99" in unknown) == (1, True)
    code, reissued = _cli("invoices", "reissue", number, "--reseller", "acme", "--json")
    assert (code, reissued["number"], reissued["total"]) == (0, 3, "20.00")
    code, credited = _cli(
        "invoices", "credit", str(second.number), "--reseller", "acme",
        "--amount", "8.00", "--reason", "outage", "--json",
    )  # fmt: skip
    assert (code, credited["credit_note"]) == (0, 1)
    code, bad = _cli(
        "invoices", "credit", "3", "--reseller", "acme", "--amount", "1.234", "--reason", "x",
        "--json",
    )  # fmt: skip
    assert (code, bad["errors"][0]["field"], bad["errors"][0]["code"]) == (
        1,
        "amount",
        "invalid_amount",
    )

    def numbers(state: str) -> list[int]:
        code, items = _cli("invoices", "list", "--status", state, "--json")
        assert code == 0
        return [item["number"] for item in items]

    assert numbers("void") == [first.number]
    assert numbers("paid") == [second.number]  # settled by its credit note
    assert numbers("issued") == [3]  # the replacement, issued now, due in 5 days
    assert numbers("overdue") == []


def test_concurrent_payments_and_invoice_generation_never_overpay(worker, clean_db) -> None:
    """Twelve payments sent at once through two worker processes while three invoices are
    generated: every payment is applied in full or kept as credit, no invoice is paid past
    its total, and no credit is left while an invoice is open."""
    from tasks.charges import record_charge
    from tasks.invoicing import generate_invoices_task

    months = [dt.date(2026, m, 1) for m in range(1, 6)]
    customer = _customer(created=months[0], period_end=months[1])
    _invoice(customer, months[0], months[1], "35.00", local_midnight(months[1], "UTC"))
    with unit_of_work() as session:
        pending = []
        for start, end in pairwise(months[1:]):
            used = local_midnight(start, "UTC") + dt.timedelta(hours=2)
            record_charge(session, charge_payload(customer, "27.50", used, f"c-{start}"), now=used)
            pending.append(close_period(session, customer, start, end).id)

    from tasks.charges import record_payment_task

    payments = [
        record_payment_task.delay(
            payment_payload(customer, "10.00", _utc("2026-05-02T10:00Z"), f"p{i}")
        )
        for i in range(12)
    ]
    invoices = [generate_invoices_task.delay([pid]) for pid in pending]
    assert all(p.get(timeout=60)["status"] == "recorded" for p in payments)
    assert sum(r.get(timeout=60)["issued"] for r in invoices) == 3

    with unit_of_work() as session:
        totals = dict(session.execute(select(Invoice.id, Invoice.total)).all())
        applied = dict(
            session.execute(
                select(InvoiceApplication.invoice_id, func.sum(InvoiceApplication.amount)).group_by(
                    InvoiceApplication.invoice_id
                )
            ).all()
        )
        rests = session.execute(select(Payment.id, Payment.amount, Payment.unapplied)).all()
        by_payment = dict(
            session.execute(
                select(InvoiceApplication.payment_id, func.sum(InvoiceApplication.amount)).group_by(
                    InvoiceApplication.payment_id
                )
            ).all()
        )
    assert sum(totals.values()) == D("117.50")
    assert all(applied.get(i, 0) <= total for i, total in totals.items())
    for payment_id, amount, unapplied in rests:
        assert by_payment.get(payment_id, 0) + unapplied == amount
    assert sum(applied.values()) == D("117.50")  # 120 paid: every invoice settled
    assert sum(r.unapplied for r in rests) == D("2.50")
