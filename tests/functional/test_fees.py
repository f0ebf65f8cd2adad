"""Recurring fees, customer updates and closing through Redis, real workers and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from models import ClosedPeriod, Customer, Invoice, InvoiceLine, SubscriptionFee
from tasks.customer_update import update_customer
from tests.conftest import REDIS_PREFIX
from tests.factories import get_or_create_catalog, make_customer
from tests.fees_factories import make_plan, subscribe
from tests.functional.test_closing import prefixed_app
from tests.support import WorkerProcess, wait_for
from worker.config import REDELIVERY_AFTER
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

UTC = dt.UTC
NY = "America/New_York"
EN = "\N{EN DASH}"
X = "\N{MULTIPLICATION SIGN}"
M = Decimal


def _at(text_: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text_.replace("Z", "+00:00"))


def _task(app: Any, task: str, timeout: float = 60, **kwargs: Any) -> Any:
    return app.send_task(task, kwargs=kwargs).get(timeout=timeout)


def _close(app: Any, as_of: str) -> dict[str, int]:
    result: dict[str, int] = _task(app, "billing.periods.close_due", as_of=as_of)
    return result


def _invoiced(engine: Engine, customer_id: int, count: int) -> bool:
    with engine.connect() as conn:
        issued = conn.scalar(
            select(func.count())
            .select_from(Invoice)
            .where(Invoice.customer_id == customer_id, Invoice.status == "issued")
        )
        closed = conn.scalar(
            select(func.count())
            .select_from(ClosedPeriod)
            .where(ClosedPeriod.customer_id == customer_id)
        )
    return issued == closed == count


def _wait_invoiced(engine: Engine, customer_id: int, count: int) -> None:
    wait_for(
        lambda: _invoiced(engine, customer_id, count),
        timeout=60,
        what=f"{count} invoices of customer {customer_id}",
    )


def _lines(engine: Engine, customer_id: int) -> list[tuple[str, str, Decimal]]:
    with Session(engine) as session:
        rows = session.execute(
            select(Invoice.covered_from, InvoiceLine.description, InvoiceLine.amount)
            .join(InvoiceLine, InvoiceLine.invoice_id == Invoice.id)
            .where(Invoice.customer_id == customer_id)
            .order_by(Invoice.period_start, InvoiceLine.fee_id, InvoiceLine.id)
        ).all()
    return [(r[0].isoformat(), r[1], r[2]) for r in rows]


def _periods(engine: Engine, customer_id: int) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.execute(
            select(ClosedPeriod.start_date, ClosedPeriod.period_end, ClosedPeriod.billing_period)
            .where(ClosedPeriod.customer_id == customer_id)
            .order_by(ClosedPeriod.period_start)
        ).all()
    return [(r[0].isoformat(), r[1].strftime("%Y-%m-%dT%H:%MZ"), r[2]) for r in rows]


def test_arrears_and_advance_plans_over_three_periods_across_dst(
    worker, celery_app, clean_db
) -> None:
    """Created Feb 19 in New York (DST starts March 8): the first invoice bills the arrears
    plan for 10 of 28 days and the advance plan for those days plus all of March; each
    later invoice bills a whole month in arrears and the next whole month in advance."""
    created = _at("2026-02-19T20:00:00Z")
    with unit_of_work() as session:
        customer = make_customer(
            session, billing_period="monthly", billing_timezone=NY, created_at=created
        )
        line = make_plan(session, "Internet line", "arrears", {"USD": "28.00"})
        seat = make_plan(session, "PBX seat", "advance", {"USD": "10.00"})
        subscribe(session, customer, line, 1, created)
        subscribe(session, customer, seat, 25, created)
        customer_id = customer.id

    for as_of in ("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", "2026-05-01T04:00:00Z"):
        assert _close(celery_app, as_of)["closed"] == 1
    _wait_invoiced(clean_db, customer_id, 3)

    assert _periods(clean_db, customer_id) == [
        ("2026-02-19", "2026-03-01T05:00Z", "monthly"),
        ("2026-03-01", "2026-04-01T04:00Z", "monthly"),  # 743 hours: the DST change
        ("2026-04-01", "2026-05-01T04:00Z", "monthly"),
    ]
    seats = f"PBX seat {X} 25"
    FEB = f"February 19 {EN} February 28, 2026"
    assert _lines(clean_db, customer_id) == [
        ("2026-02-19", f"Internet line, {FEB} (10/28 days)", M("10")),
        (
            "2026-02-19",
            f"{seats}, February 19 {EN} February 28, 2026 (10/28 days, in advance)",
            M("89.29"),
        ),
        ("2026-02-19", f"{seats}, March 1 {EN} March 31, 2026 (in advance)", M("250")),
        ("2026-03-01", f"Internet line, March 1 {EN} March 31, 2026", M("28")),
        ("2026-03-01", f"{seats}, April 1 {EN} April 30, 2026 (in advance)", M("250")),
        ("2026-04-01", f"Internet line, April 1 {EN} April 30, 2026", M("28")),
        ("2026-04-01", f"{seats}, May 1 {EN} May 31, 2026 (in advance)", M("250")),
    ]


def test_a_quantity_change_mid_period_is_prorated_on_both_sides(
    worker, celery_app, clean_db
) -> None:
    """Seats go from 10 to 25 on March 15 through `billing.customers.update`: March's invoice
    credits the 10 seats' unused 17 days billed in advance and bills the 25 seats for them,
    and the arrears plan bills 3 lines for 14 days and 5 for 17."""
    created = _at("2026-02-01T12:00:00Z")
    with unit_of_work() as session:
        customer = make_customer(
            session, name="Grower", billing_period="monthly", created_at=created
        )
        seat = make_plan(session, "PBX seat", "advance", {"USD": "10.00"})
        line = make_plan(session, "Internet line", "arrears", {"USD": "31.00"})
        subscribe(session, customer, seat, 10, created)
        subscribe(session, customer, line, 3, created)
        customer_id = customer.id
    _close(celery_app, "2026-03-01T00:00:00Z")
    _wait_invoiced(clean_db, customer_id, 1)
    # The change must happen on March 15, so the service is called at that instant (the
    # task reads the clock; it is exercised in the next test).
    with unit_of_work() as session:
        result = update_customer(
            session,
            {
                "reseller": "acme",
                "name": "Grower",
                "subscriptions": [
                    {"plan": "PBX seat", "quantity": 25},
                    {"plan": "Internet line", "quantity": 5},
                ],
                "request_id": "ticket-42",
            },
            now=_at("2026-03-15T09:00:00Z"),
        )
    assert result.status == "updated"
    _close(celery_app, "2026-04-01T00:00:00Z")
    _wait_invoiced(clean_db, customer_id, 2)
    march = [(d, a) for c, d, a in _lines(clean_db, customer_id) if c == "2026-03-01"]
    assert sorted(march) == sorted(
        [
            (f"Internet line {X} 3, March 1 {EN} March 14, 2026 (14/31 days)", M("42")),
            (f"Internet line {X} 5, March 15 {EN} March 31, 2026 (17/31 days)", M("85")),
            (
                f"PBX seat {X} 25, March 15 {EN} March 31, 2026 (17/31 days, in advance)",
                M("137.10"),
            ),
            (f"PBX seat {X} 25, April 1 {EN} April 30, 2026 (in advance)", M("250")),
            (
                f"PBX seat {X} 10, March 15 {EN} March 31, 2026 not used (credit, 17/31 days)",
                M("-54.84"),
            ),
        ]
    )


def test_update_task_changes_the_customer_and_rejects_bad_requests_whole(
    worker, celery_app, clean_db
) -> None:
    """`billing.customers.update` through the worker applies a change and records it with
    the task's request id; a bad request is rejected with every problem and changes nothing."""
    with unit_of_work() as session:
        make_customer(session, name="Tasked", billing_period="monthly")
        make_plan(session, "PBX seat", "advance", {"USD": "10.00"})
    ok = _task(
        celery_app,
        "billing.customers.update",
        payload={"name": "Tasked", "subscriptions": [{"plan": "PBX seat", "quantity": 2}]},
    )
    assert ok["status"] == "updated"
    assert ok["changes"][0]["new"] == [{"plan": "PBX seat", "quantity": 2}]
    bad = _task(
        celery_app,
        "billing.customers.update",
        payload={
            "name": "Tasked",
            "credit_limit": "1.234",
            "subscriptions": [{"plan": "PBX seat", "quantity": "two"}],
        },
    )
    assert bad["status"] == "rejected"
    assert sorted(e["code"] for e in bad["errors"]) == ["invalid_type", "too_many_decimals"]
    with clean_db.connect() as conn:
        rows = conn.execute(text("SELECT field, request_id FROM customer_changes")).all()
    assert len(rows) == 1
    assert rows[0][0] == "subscriptions"
    assert rows[0][1].startswith("task:")


def test_monthly_to_weekly_takes_effect_at_the_next_boundary(worker, celery_app, clean_db) -> None:
    """Changed on February 20 in New York, February still closes monthly; from March 1 the
    periods are weekly (a one-day period to Monday March 2, then Monday to Monday across
    the DST change), and the weekly plan's fee is prorated 1 of 7 days for March 1."""
    created = _at("2026-01-15T17:00:00Z")
    with unit_of_work() as session:
        customer = make_customer(
            session,
            name="Switcher",
            billing_period="monthly",
            billing_timezone=NY,
            created_at=created,
        )
        line = make_plan(session, "Internet line", "arrears", {"USD": "7.00"})
        subscribe(session, customer, line, 1, created)
        customer_id = customer.id
    _close(celery_app, "2026-02-01T05:00:00Z")
    with unit_of_work() as session:
        result = update_customer(
            session,
            {"name": "Switcher", "billing_period": "weekly"},
            now=_at("2026-02-20T15:00:00Z"),
        )
    assert result.as_json()["changes"][0]["effective_at"] == "2026-03-01T05:00:00Z"
    _close(celery_app, "2026-03-09T05:00:00Z")
    _wait_invoiced(clean_db, customer_id, 4)
    assert _periods(clean_db, customer_id) == [
        ("2026-01-15", "2026-02-01T05:00Z", "monthly"),
        ("2026-02-01", "2026-03-01T05:00Z", "monthly"),
        ("2026-03-01", "2026-03-02T05:00Z", "weekly"),
        ("2026-03-02", "2026-03-09T04:00Z", "weekly"),
    ]
    fees = [(c, a) for c, _d, a in _lines(clean_db, customer_id)]
    assert fees == [
        ("2026-01-15", Decimal("3.84")),  # 17/31 days of a month
        ("2026-02-01", Decimal("7.00")),
        ("2026-03-01", Decimal("1.00")),  # 1/7 days of a week
        ("2026-03-02", Decimal("7.00")),
    ]


def test_closing_mid_period_makes_one_final_prorated_invoice_and_no_later_period(
    worker, celery_app, clean_db
) -> None:
    """`billing.customers.close` on March 10 at 14:00: one final invoice with the arrears
    fee for March 1-9, the credit of the advance fee for March 10-31, the usage up to the
    close; later closes add no period; a later charge is refused as `customer_closed`."""
    created = _at("2026-02-01T12:00:00Z")
    with unit_of_work() as session:
        customer = make_customer(
            session, name="Leaver", billing_period="monthly", created_at=created
        )
        seat = make_plan(session, "PBX seat", "advance", {"USD": "31.00"})
        line = make_plan(session, "Internet line", "arrears", {"USD": "31.00"})
        subscribe(session, customer, seat, 1, created)
        subscribe(session, customer, line, 1, created)
        customer_id = customer.id
    _close(celery_app, "2026-03-01T00:00:00Z")
    charge = {
        "customer": "Leaver",
        "amount": "5.00",
        "currency": "USD",
        "occurred_at": "2026-03-10T13:00:00Z",
        "description": "Calls",
        "idempotency_key": "c1",
    }
    assert _task(celery_app, "billing.charges.record", payload=charge)["status"] == "recorded"
    closed = _task(
        celery_app,
        "billing.customers.close",
        reseller="acme",
        name="Leaver",
        at="2026-03-10T14:00:00Z",
    )
    assert closed["status"] == "closed", closed
    again = _task(celery_app, "billing.customers.close", reseller="acme", name="Leaver")
    assert again["status"] == "already_closed"
    _wait_invoiced(clean_db, customer_id, 2)
    assert _close(celery_app, "2026-06-01T00:00:00Z")["closed"] == 0
    assert _periods(clean_db, customer_id)[-1] == ("2026-03-01", "2026-03-10T14:00Z", "monthly")
    final = [(d, a) for c, d, a in _lines(clean_db, customer_id) if c == "2026-03-01"]
    assert final == [
        (f"Internet line, March 1 {EN} March 9, 2026 (9/31 days)", M("9")),
        (f"PBX seat, March 10 {EN} March 31, 2026 not used (credit, 22/31 days)", M("-22")),
        ("Calls", M("5")),
    ]
    late = {**charge, "idempotency_key": "c2", "occurred_at": "2026-03-10T13:30:00Z"}
    refused = _task(celery_app, "billing.charges.record", payload=late)
    assert [e["code"] for e in refused["errors"]] == ["customer_closed"]


# --- A crash in the middle of a close with fees ----------------------------------------------

KILL_PREFIX = f"{REDIS_PREFIX}fees-kill:"


@pytest.fixture
def kill_app(celery_app, redis_client) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """An app of its own, so only the test's workers take its close and invoice tasks."""
    with prefixed_app(celery_app, KILL_PREFIX) as app:
        yield app
    for key in redis_client.scan_iter(match=f"{KILL_PREFIX}*"):
        redis_client.delete(key)


def _seed_subscribed(engine: Engine, n: int, start: dt.datetime) -> None:
    """`n` daily UTC customers created at `start`, each with 3 seats billed in advance
    (10.00) and one line billed in arrears (7.00)."""
    with Session(engine) as session:
        seat = make_plan(session, "PBX seat", "advance", {"USD": "10.00"})
        line = make_plan(session, "Internet line", "arrears", {"USD": "7.00"})
        reseller, business_model, customer_class = get_or_create_catalog(session)
        session.execute(
            text(
                """
                INSERT INTO customers (
                    reseller_id, name, name_key, business_model_id, customer_class_id,
                    billing_period, billing_timezone, balance_control, currency, custom_data,
                    created_at, created_local_date, current_period_start, current_period_end
                )
                SELECT :reseller, 'subscriber ' || g, 'subscriber ' || g, :model, :class,
                       'daily', 'UTC', 'postpaid', 'USD', '{}', :start, CAST(:start AS date),
                       :start, :start + interval '1 day'
                FROM generate_series(1, :n) AS g
                """
            ),
            {
                "reseller": reseller.id,
                "model": business_model.id,
                "class": customer_class.id,
                "start": start,
                "n": n,
            },
        )
        for plan, quantity in ((seat, 3), (line, 1)):
            session.execute(
                text(
                    """
                    INSERT INTO subscriptions (customer_id, plan_id, quantity, starts_at, starts_on)
                    SELECT id, :plan, :quantity, :start, CAST(:start AS date) FROM customers
                    """
                ),
                {"plan": plan.id, "quantity": quantity, "start": start},
            )
        session.commit()


def _kill_worker(app: Any, log_dir: Any, name: str) -> WorkerProcess:
    return WorkerProcess(
        app,
        log_dir,
        name=name,
        queues=["closing", "invoicing", "intake"],
        concurrency=1,
        env={
            "BILLING_REDIS_KEY_PREFIX": app.conf.broker_transport_options["global_keyprefix"],
            "BILLING_CLOSE_BATCH": "250",
            "BILLING_INVOICE_BATCH": "50",
        },
    )


def _closing_uncommitted(engine: Engine) -> bool:
    """Whether another connection is inside a transaction that is writing closed periods."""
    return (
        _count(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction') "
            "AND query ILIKE '%closed_periods%'",
        )
        > 0
    )


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(sql)) or 0)


def test_killing_the_worker_mid_close_with_fees_bills_every_fee_once(
    clean_db, kill_app, redis_client, tmp_path
) -> None:
    """SIGKILL while a two-day catch-up close is being invoiced, then a new worker closes
    and reconciles, and the messages the dead worker held come back as the visibility
    timeout brings them back: every period has one invoice, every fee is recorded once and
    on exactly one line, and each customer is billed 67.00 then 37.00 (advance for three
    days, arrears for two)."""
    n = 1500
    start = dt.datetime(2026, 4, 1, tzinfo=UTC)
    as_of = (start + dt.timedelta(days=2)).isoformat()
    _seed_subscribed(clean_db, n, start)
    doomed = _kill_worker(kill_app, tmp_path, "fees-doomed")
    doomed.start()
    try:
        kill_app.send_task("billing.periods.close_due", kwargs={"as_of": as_of}, queue="closing")
        wait_for(
            lambda: (
                _count(clean_db, "SELECT count(*) FROM invoices WHERE status = 'issued'") >= 300
            ),
            timeout=120,
            what="invoicing under way",
        )
    finally:
        doomed.kill()
    issued_at_kill = _count(clean_db, "SELECT count(*) FROM invoices WHERE status = 'issued'")
    assert issued_at_kill < 2 * n
    # What REDELIVERY_AFTER (16 minutes) would do: the messages the dead worker took and
    # never acknowledged become due to go back to their queue (see test_redelivery).
    # Reconcile rightly leaves their periods to them: they are still in the broker. (A
    # customer's missed periods travel in one message, so no later message heals them.)
    index = f"{KILL_PREFIX}unacked_index"
    for tag in redis_client.zrange(index, 0, -1):
        redis_client.zadd(index, {tag: time.time() - REDELIVERY_AFTER - 5})

    survivor = _kill_worker(kill_app, tmp_path, "fees-survivor")
    survivor.start()
    try:
        kill_app.send_task(
            "billing.periods.close_due", kwargs={"as_of": as_of}, queue="closing"
        ).get(timeout=120)
        kill_app.send_task(
            "billing.periods.reconcile",
            kwargs={"as_of": "2026-12-31T00:00:00Z", "older_than": 0},
            queue="closing",
        ).get(timeout=120)
        wait_for(
            lambda: _count(clean_db, "SELECT count(*) FROM closed_periods WHERE NOT invoiced") == 0,
            timeout=180,
            what="every closed period invoiced",
        )
    finally:
        survivor.stop()

    assert _count(clean_db, "SELECT count(*) FROM closed_periods") == 2 * n
    assert _count(clean_db, "SELECT count(*) FROM invoices WHERE status = 'issued'") == 2 * n
    assert (
        _count(clean_db, "SELECT count(*) FROM subscription_fees WHERE kind = 'advance'") == 3 * n
    )
    assert (
        _count(clean_db, "SELECT count(*) FROM subscription_fees WHERE kind = 'arrears'") == 2 * n
    )
    assert _count(clean_db, "SELECT count(*) FROM invoice_lines WHERE fee_id IS NOT NULL") == 5 * n
    assert _count(clean_db, "SELECT count(DISTINCT fee_id) FROM invoice_lines") == 5 * n
    with clean_db.connect() as conn:
        totals = conn.execute(
            text(
                "SELECT i.subtotal, count(*) FROM invoices i JOIN closed_periods p "
                "ON p.id = i.closed_period_id GROUP BY i.subtotal ORDER BY i.subtotal"
            )
        ).all()
    assert [(Decimal(t), c) for t, c in totals] == [(Decimal("37.00"), n), (Decimal("67.00"), n)]
    with Session(clean_db) as session:
        assert session.scalar(select(func.count()).select_from(SubscriptionFee)) == 5 * n
        assert session.scalar(select(func.count()).select_from(Customer)) == n


def test_killing_the_worker_mid_customer_close_then_closing_again_bills_every_fee_once(
    clean_db, kill_app, tmp_path
) -> None:
    """A customer close that must first catch up on ~1,400 daily periods is SIGKILLed in the
    middle: nothing of it stays (one transaction); closing again closes every period once,
    cuts the last one, and every fee is billed exactly once on exactly one invoice."""
    created = _at("2023-01-01T00:00:00Z")
    cut = "2026-11-15T12:00:00Z"
    with unit_of_work() as session:
        customer = make_customer(
            session, name="Long Gone", billing_period="daily", created_at=created
        )
        line = make_plan(session, "Internet line", "arrears", {"USD": "2.00"})
        seat = make_plan(session, "PBX seat", "advance", {"USD": "1.00"})
        subscribe(session, customer, line, 1, created)
        subscribe(session, customer, seat, 3, created)
        customer_id = customer.id
    days = (_at(cut).date() - created.date()).days  # whole days before the cut day
    doomed = _kill_worker(kill_app, tmp_path, "close-doomed")
    doomed.start()
    try:
        kill_app.send_task(
            "billing.customers.close",
            kwargs={"reseller": "acme", "name": "Long Gone", "at": cut},
            queue="intake",
        )
        wait_for(
            lambda: _closing_uncommitted(clean_db),
            timeout=60,
            interval=0.02,
            what="the close writing periods",
        )
    finally:
        doomed.kill()
    with unit_of_work() as session:
        assert session.get(Customer, customer_id).status == "active"  # type: ignore[union-attr]
    assert _count(clean_db, "SELECT count(*) FROM closed_periods") == 0

    survivor = _kill_worker(kill_app, tmp_path, "close-survivor")
    survivor.start()
    try:
        result = kill_app.send_task(
            "billing.customers.close",
            kwargs={"reseller": "acme", "name": "Long Gone", "at": cut},
            queue="intake",
        ).get(timeout=300)
        assert result["status"] == "closed", result
        assert len(result["closed_period_ids"]) == days + 1
        wait_for(
            lambda: _count(clean_db, "SELECT count(*) FROM closed_periods WHERE NOT invoiced") == 0,
            timeout=300,
            what="every closed period invoiced",
        )
    finally:
        survivor.stop()
    assert _count(clean_db, "SELECT count(*) FROM invoices") == days + 1
    # Arrears: one per period, the last (cut at noon) bills no day; advance: one per day.
    assert _count(clean_db, "SELECT count(*) FROM subscription_fees WHERE kind = 'arrears'") == days
    assert _count(clean_db, "SELECT count(*) FROM subscription_fees WHERE kind = 'advance'") == days
    assert _count(clean_db, "SELECT count(DISTINCT fee_id) FROM invoice_lines") == 2 * days
    with clean_db.connect() as conn:
        total = conn.scalar(text("SELECT sum(subtotal) FROM invoices"))
    assert Decimal(total) == Decimal(5 * days)
