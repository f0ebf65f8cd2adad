"""Settlement, the collection run and corrections, in-process on PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import (
    Base,
    BlockReason,
    Charge,
    ClosedPeriod,
    CollectionStep,
    CreditNote,
    Customer,
    Invoice,
    InvoiceApplication,
    LedgerEntry,
    Notification,
    Payment,
)
from tasks.blocks import block_reasons
from tasks.charges import balance_mismatches, record_charge, record_payment
from tasks.closing import reconcile
from tasks.collections import run_collections
from tasks.corrections import credit_invoice, reissue_invoice, void_invoice
from tasks.invoicing import generate_invoices
from tasks.settlement import open_invoices
from tests.invoicing_factories import (
    billing_customer,
    charge_payload,
    close_period,
    local_midnight,
    payment_payload,
)
from worker.db import make_engine

D = Decimal
MAR1, APR1, MAY1, JUN1 = (dt.date(2026, m, 1) for m in (3, 4, 5, 6))
POLICY = {
    "grace_period_days": 10,
    "notification_emails": ["ar@acme.test"],
    "reminder_days": [3, 1],
    "overdue_notice": True,
    "suspend_after_days": 5,
    "terminate_after_days": 20,
}


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request, tmp_path) -> Iterator[Session]:
    """A session on PostgreSQL (rolled back) or on a fresh embedded SQLite file."""
    if request.param == "postgresql":
        request.getfixturevalue("clean_db")
        yield request.getfixturevalue("db_session")
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'billing.sqlite3'}")
    Base.metadata.create_all(engine)
    with Session(engine) as sqlite_session:
        yield sqlite_session
    engine.dispose()


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def _invoice(session, customer, start, end, amount, *, now=None) -> Invoice:
    """Charge `amount` inside [start, end), close the period and issue its invoice."""
    if amount != "0":
        result = record_charge(
            session,
            charge_payload(customer, amount, at(start), f"{customer.name}-{start}"),
            now=at(start),
        )
        assert result["status"] == "recorded", result
    period = close_period(session, customer, start, end)
    summary = generate_invoices(session, [period.id], now=now or at(end, 0))
    assert summary.issued == 1, summary
    return session.scalars(select(Invoice).where(Invoice.closed_period_id == period.id)).one()


def _applied(session, invoice: Invoice) -> Decimal:
    return D(
        session.scalar(
            select(func.coalesce(func.sum(InvoiceApplication.amount), 0)).where(
                InvoiceApplication.invoice_id == invoice.id
            )
        )
    )


def _settled_marks_agree(session) -> None:
    """`settled_at` is set exactly on the issued invoices nothing is left due on."""
    issued = select(Invoice).where(Invoice.status == "issued")
    for invoice in session.scalars(issued.execution_options(populate_existing=True)):
        assert (invoice.settled_at is not None) == (_applied(session, invoice) >= invoice.total), (
            invoice.number
        )


def _pay(session, customer, amount, when, key):
    result = record_payment(session, payment_payload(customer, amount, when, key), now=when)
    assert result["status"] == "recorded", result
    return result


def test_a_payment_pays_the_older_invoice_first_and_the_rest_waits_for_the_next(session) -> None:
    """Two open invoices, one payment covering both and more: the older is paid first, the
    leftover is credit, and the next invoice issued is paid from it."""
    customer = billing_customer(session, created=MAR1, period_end=APR1, class_fields=POLICY)
    march = _invoice(session, customer, MAR1, APR1, "30.00")
    april = _invoice(session, customer, APR1, MAY1, "50.00")

    _pay(session, customer, "50.00", at(MAY1, 9), "p1")
    assert (_applied(session, march), _applied(session, april)) == (D("30.00"), D("20.00"))

    _pay(session, customer, "40.00", at(MAY1, 10), "p2")
    assert _applied(session, april) == D("50.00")
    assert session.scalar(select(func.sum(Payment.unapplied))) == D("10.00")

    may = _invoice(session, customer, MAY1, JUN1, "25.00")
    assert _applied(session, may) == D("10.00")
    assert session.scalar(select(func.sum(Payment.unapplied))) == 0
    assert [(inv.invoice_id, inv.due) for inv, _tz in open_invoices(session, customer.id)] == [
        (may.id, D("15.00"))
    ]
    assert balance_mismatches(session) == []
    _settled_marks_agree(session)


def test_a_replayed_payment_applies_nothing_twice(session) -> None:
    """The same payment key twice: one application."""
    customer = billing_customer(session, created=MAR1, period_end=APR1)
    march = _invoice(session, customer, MAR1, APR1, "30.00")
    _pay(session, customer, "10.00", at(APR1, 9), "same")
    again = _pay(session, customer, "10.00", at(APR1, 9), "same")
    assert again["replayed"] is True
    assert _applied(session, march) == D("10.00")


def test_a_zero_invoice_is_paid_and_a_prepaid_invoice_is_paid_from_funds(session) -> None:
    """Nothing due on a zero total; a prepaid invoice is settled at issue, its tax from funds."""
    postpaid = billing_customer(session, created=MAR1, period_end=APR1)
    empty = _invoice(session, postpaid, MAR1, APR1, "0")
    assert open_invoices(session, postpaid.id) == []
    assert empty.total == 0

    prepaid = billing_customer(
        session,
        balance_control="prepaid",
        funds=D("100.00"),
        created=MAR1,
        period_end=APR1,
        customer_class="Prepaid",
        class_fields={"tax_rate": D("0.10")},
    )
    invoice = _invoice(session, prepaid, MAR1, APR1, "40.00")
    assert (invoice.total, _applied(session, invoice)) == (D("44.00"), D("44.00"))
    assert session.get(Customer, prepaid.id).balance == D("56.00")
    tax = session.scalars(
        select(LedgerEntry).where(
            LedgerEntry.customer_id == prepaid.id, LedgerEntry.entry_type == "invoice_tax"
        )
    ).one()
    assert (tax.amount, tax.balance_after) == (D("-4.00"), D("56.00"))
    assert balance_mismatches(session) == []
    _settled_marks_agree(session)


def _steps(session, invoice) -> list[tuple[str, bool]]:
    return [
        (s.step, s.sent)
        for s in session.scalars(
            select(CollectionStep)
            .where(CollectionStep.invoice_id == invoice.id)
            .order_by(CollectionStep.id)
        )
    ]


def test_the_ladder_runs_once_per_step_and_payment_resumes_a_suspended_customer(session) -> None:
    """Reminders, notice, suspension at their days; reruns add nothing; paying the overdue
    invoice lifts the overdue block only, leaving the credit-limit block of newer usage."""
    customer = billing_customer(
        session, created=MAR1, period_end=APR1, credit_limit=D("40.00"), class_fields=POLICY
    )
    march = _invoice(session, customer, MAR1, APR1, "30.00")  # issued Apr 1, due Apr 11
    assert march.due_date == dt.date(2026, 4, 11)

    run_collections(session, now=at(dt.date(2026, 4, 8)))
    assert _steps(session, march) == [("reminder:3", True)]
    run_collections(session, now=at(dt.date(2026, 4, 8)))
    assert _steps(session, march) == [("reminder:3", True)]

    # Down from Apr 9 to Apr 17: overdue since Apr 12, so the 1-day reminder is obsolete.
    summary = run_collections(session, now=at(dt.date(2026, 4, 17)))
    assert (summary.steps, summary.skipped_reminders) == ({"overdue_notice": 1, "suspend": 1}, 1)
    assert _steps(session, march) == [
        ("reminder:3", True),
        ("reminder:1", False),
        ("overdue_notice", True),
        ("suspend", True),
    ]
    assert set(block_reasons(session, customer.id)) == {BlockReason.OVERDUE}
    assert session.get(Customer, customer.id).blocked

    # April usage reaches the credit limit on its own: a second, independent block.
    for key, amount in (("a1", "9.00"), ("a2", "50.00")):
        when = at(dt.date(2026, 4, 18))
        record_charge(session, charge_payload(customer, amount, when, key), now=when)
    assert set(block_reasons(session, customer.id)) == {
        BlockReason.OVERDUE,
        BlockReason.CREDIT_LIMIT,
    }

    paid = _pay(session, customer, "30.00", at(dt.date(2026, 4, 20)), "pay-march")
    assert (paid["balance"], paid["blocked"]) == ("59.00", True)
    assert set(block_reasons(session, customer.id)) == {BlockReason.CREDIT_LIMIT}
    assert _steps(session, march)[-1] == ("resume", True)
    topics = session.scalars(
        select(Notification.topic)
        .where(Notification.invoice_id == march.id)
        .order_by(Notification.id)
    ).all()
    assert topics == ["invoice", "reminder:3", "overdue_notice", "suspend", "resume"]
    _settled_marks_agree(session)


def test_corrections_void_reissue_and_credit_notes(session) -> None:
    """Void releases the charges, reissue numbers a replacement, credit notes number apart and
    a credit on a paid invoice becomes credit for the next invoice."""
    customer = billing_customer(session, created=MAR1, period_end=APR1)
    march = _invoice(session, customer, MAR1, APR1, "30.00")
    now = at(dt.date(2026, 4, 2))

    voided = void_invoice(session, reseller="acme", number=march.number, reason="wrong", now=now)
    assert voided.as_json()["status"] == "voided", voided.as_json()
    assert session.scalar(select(Charge.invoice_id)) is None
    assert session.get(ClosedPeriod, march.closed_period_id).invoiced is True  # awaits reissue

    later = now + dt.timedelta(days=30)
    stale = reconcile(session, now=later, older_than=dt.timedelta(minutes=15), batch_size=100)
    assert stale.requeued == 0  # a void invoice's period waits for the operator's reissue

    again = void_invoice(session, reseller="acme", number=march.number, reason="x", now=now)
    assert again.as_json()["errors"][0]["code"] == "not_issued"

    reissued = reissue_invoice(session, reseller="acme", number=march.number, now=now).as_json()
    assert (reissued["status"], reissued["number"], reissued["replaces"]) == ("reissued", 2, 1)
    replacement = session.get(Invoice, reissued["invoice_id"])
    assert replacement.replaces_invoice_id == march.id
    assert replacement.total == D("30.00")

    first = credit_invoice(
        session, reseller="acme", number=2, amount="5.00", reason="goodwill", now=now
    ).as_json()
    assert (first["status"], first["credit_note"], first["customer_credit"]) == (
        "credited",
        1,
        "0.0000",
    )
    assert _applied(session, replacement) == D("5.00")
    _pay(session, customer, "25.00", now, "pay")
    second = credit_invoice(
        session, reseller="acme", number=2, amount="10.00", reason="outage", now=now
    ).as_json()
    assert (second["credit_note"], second["customer_credit"]) == (2, "10.0000")
    too_much = credit_invoice(
        session, reseller="acme", number=2, amount="15.01", reason="x", now=now
    ).as_json()
    assert too_much["errors"][0]["code"] == "exceeds_invoice"

    april = _invoice(session, customer, APR1, MAY1, "12.00")
    assert _applied(session, april) == D("10.00")
    assert session.scalar(select(func.sum(CreditNote.unapplied))) == 0
    assert balance_mismatches(session) == []
    _settled_marks_agree(session)


def test_the_charges_of_a_void_invoice_wait_for_its_replacement(session) -> None:
    """While a void invoice awaits its reissue, the next period's invoice does not take its
    released charges as late ones; the replacement does."""
    customer = billing_customer(session, created=MAR1, period_end=APR1)
    march = _invoice(session, customer, MAR1, APR1, "30.00")
    now = at(dt.date(2026, 4, 2))
    void_invoice(session, reseller="acme", number=march.number, reason="wrong", now=now)

    april = _invoice(session, customer, APR1, MAY1, "12.00")
    assert april.total == D("12.00")

    reissued = reissue_invoice(session, reseller="acme", number=march.number, now=now).as_json()
    assert (reissued["number"], reissued["total"]) == (3, "30.00")
    again = reissue_invoice(session, reseller="acme", number=march.number, now=now).as_json()
    assert again["errors"][0]["code"] == "already_reissued"


def test_a_void_invoice_s_fees_are_billed_again_on_its_replacement(session, monkeypatch) -> None:
    """An invoice with a recurring fee line, voided and reissued: the replacement bills the
    same fee once, and no fee is left recorded on the void invoice."""
    import tasks.base
    from models import SubscriptionFee
    from tasks.closing import close_due
    from tests.factories import make_customer
    from tests.fees_factories import make_plan, subscribe

    monkeypatch.setattr(tasks.base, "publish", lambda signatures, _parent: None)
    created = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    customer = make_customer(session, billing_period="monthly", created_at=created)
    line = make_plan(session, "Internet line", "arrears", {"USD": "31.00"})
    subscribe(session, customer, line, 1, created)
    session.commit()
    close_due(session, now=at(dt.date(2026, 2, 1), 0), batch_size=100)
    period = session.scalars(select(ClosedPeriod).where(ClosedPeriod.customer_id == customer.id))
    closed = period.one()
    generate_invoices(session, [closed.id], now=at(dt.date(2026, 2, 1), 1))
    first = session.scalars(select(Invoice).where(Invoice.closed_period_id == closed.id)).one()
    assert first.total == D("31.00")

    now = at(dt.date(2026, 2, 2))
    void_invoice(session, reseller="acme", number=first.number, reason="wrong plan", now=now)
    reissued = reissue_invoice(session, reseller="acme", number=first.number, now=now).as_json()

    assert reissued["total"] == "31.00"
    fees = session.execute(select(SubscriptionFee.invoice_id, SubscriptionFee.amount)).all()
    assert [tuple(f) for f in fees] == [(reissued["invoice_id"], D("31.00"))]


def test_termination_closes_the_customer_with_a_final_period(session) -> None:
    """M days overdue: the customer is closed at the run's instant (its last period cut
    there, for the final invoice) and marked terminated, once."""
    from models import CustomerChange

    customer = billing_customer(session, created=MAR1, period_end=APR1, class_fields=POLICY)
    _invoice(session, customer, MAR1, APR1, "30.00")  # due Apr 11, overdue Apr 12
    # The factory leaves the current period at March; the closer would have moved it on.
    customer = session.get(Customer, customer.id)
    customer.current_period_start = local_midnight(APR1, "UTC")
    customer.current_period_end = local_midnight(MAY1, "UTC")
    session.flush()

    when = at(dt.date(2026, 5, 3))  # Apr 12 + 20 days = May 2
    summary = run_collections(session, now=when)
    again = run_collections(session, now=when + dt.timedelta(days=1))

    assert (summary.terminated, again.terminated) == (1, 0)
    stored = session.get(Customer, customer.id)
    session.refresh(stored)
    assert (stored.status, stored.closed_at) == ("terminated", when)
    last = session.scalars(
        select(ClosedPeriod)
        .where(ClosedPeriod.customer_id == customer.id)
        .order_by(ClosedPeriod.period_start.desc())
    ).first()
    assert (last.period_start, last.period_end) == (local_midnight(MAY1, "UTC"), when)
    history = session.scalars(
        select(CustomerChange.new_value).where(
            CustomerChange.customer_id == customer.id, CustomerChange.field == "status"
        )
    ).all()
    assert history == ["closed", "terminated"]
