"""Fee lines through the real close and invoice services, on PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import tasks.base
from models import Base, ClosedPeriod, Customer, Invoice, InvoiceLine, SubscriptionFee
from tasks.closing import close_due
from tasks.invoicing import generate_invoices
from tests.factories import make_customer
from tests.fees_factories import make_plan, subscribe
from worker.db import make_engine, run_after_commit_callbacks

UTC = dt.UTC
NY = "America/New_York"


@pytest.fixture(autouse=True)
def sent(monkeypatch) -> list[object]:
    recorded: list[object] = []
    monkeypatch.setattr(tasks.base, "publish", lambda sigs, _parent: recorded.extend(sigs))
    return recorded


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request, tmp_path) -> Iterator[Session]:
    """A session on PostgreSQL or SQLite that runs its after-commit callbacks."""
    if request.param == "postgresql":
        request.getfixturevalue("clean_db")
        db_session = request.getfixturevalue("db_session")
        run_after_commit_callbacks(db_session)
        yield db_session
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'billing.sqlite3'}")
    Base.metadata.create_all(engine)
    with Session(engine) as sqlite_session:
        run_after_commit_callbacks(sqlite_session)
        yield sqlite_session
    engine.dispose()


def _close_and_invoice(session: Session, customer: Customer, now: dt.datetime) -> None:
    close_due(session, now=now, batch_size=100)
    ids = list(
        session.scalars(
            select(ClosedPeriod.id)
            .where(ClosedPeriod.customer_id == customer.id, ClosedPeriod.invoiced.is_(False))
            .order_by(ClosedPeriod.period_start)
        )
    )
    generate_invoices(session, ids, now=now)
    session.commit()


def _invoice_lines(session: Session, customer: Customer) -> list[tuple[str, str, Decimal]]:
    rows = session.execute(
        select(Invoice.covered_from, InvoiceLine.description, InvoiceLine.amount)
        .join(InvoiceLine, InvoiceLine.invoice_id == Invoice.id)
        .where(Invoice.customer_id == customer.id)
        .order_by(Invoice.period_start, InvoiceLine.id)
    ).all()
    return [(row[0].isoformat(), row[1], row[2]) for row in rows]


def test_arrears_and_advance_over_three_periods_across_dst(session) -> None:
    """Created Feb 19 in New York: arrears bills 10/28 then whole months; advance bills the
    first period and the next one on the first invoice, then one month ahead each time."""
    created = dt.datetime(2026, 2, 19, 20, tzinfo=UTC)  # 15:00 in New York
    customer = make_customer(
        session, billing_period="monthly", billing_timezone=NY, created_at=created
    )
    line = make_plan(session, "Internet line", "arrears", {"USD": "28.00"})
    seat = make_plan(session, "PBX seat", "advance", {"USD": "10.00"})
    subscribe(session, customer, line, 1, created)
    subscribe(session, customer, seat, 25, created)
    session.commit()

    # March 8 (DST starts) lies in the second period; each close runs at local midnight.
    for now in ("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", "2026-05-01T04:00:00Z"):
        _close_and_invoice(session, customer, dt.datetime.fromisoformat(now))

    en = "\N{EN DASH}"
    x = "\N{MULTIPLICATION SIGN}"
    assert _invoice_lines(session, customer) == [
        (
            "2026-02-19",
            f"Internet line, February 19 {en} February 28, 2026 (10/28 days)",
            Decimal("10.00"),
        ),
        (
            "2026-02-19",
            f"PBX seat {x} 25, February 19 {en} February 28, 2026 (10/28 days, in advance)",
            Decimal("89.29"),
        ),
        (
            "2026-02-19",
            f"PBX seat {x} 25, March 1 {en} March 31, 2026 (in advance)",
            Decimal("250.00"),
        ),
        ("2026-03-01", f"Internet line, March 1 {en} March 31, 2026", Decimal("28.00")),
        (
            "2026-03-01",
            f"PBX seat {x} 25, April 1 {en} April 30, 2026 (in advance)",
            Decimal("250.00"),
        ),
        ("2026-04-01", f"Internet line, April 1 {en} April 30, 2026", Decimal("28.00")),
        ("2026-04-01", f"PBX seat {x} 25, May 1 {en} May 31, 2026 (in advance)", Decimal("250.00")),
    ]
    totals = session.scalars(
        select(Invoice.subtotal).where(Invoice.customer_id == customer.id).order_by(Invoice.id)
    ).all()
    assert totals == [Decimal("349.29"), Decimal("278.00"), Decimal("278.00")]


def test_invoicing_again_bills_no_fee_twice(session) -> None:
    """Out-of-order and repeated generation still records each fee exactly once."""
    created = dt.datetime(2026, 1, 10, 12, tzinfo=UTC)
    customer = make_customer(session, billing_period="monthly", created_at=created)
    seat = make_plan(session, "PBX seat", "advance", {"USD": "10.00"})
    subscribe(session, customer, seat, 2, created)
    session.commit()
    close_due(session, now=dt.datetime(2026, 4, 1, tzinfo=UTC), batch_size=100)
    ids = list(session.scalars(select(ClosedPeriod.id).order_by(ClosedPeriod.period_start)))
    assert len(ids) == 3
    generate_invoices(session, [ids[2]], now=dt.datetime(2026, 4, 1, tzinfo=UTC))
    generate_invoices(session, ids, now=dt.datetime(2026, 4, 1, tzinfo=UTC))
    generate_invoices(session, ids, now=dt.datetime(2026, 4, 1, tzinfo=UTC))
    session.commit()
    fees = session.execute(
        select(SubscriptionFee.period_start, SubscriptionFee.kind, SubscriptionFee.amount).order_by(
            SubscriptionFee.period_start
        )
    ).all()
    starts = [row[0].date().isoformat() for row in fees]
    assert starts == ["2026-01-10", "2026-02-01", "2026-03-01", "2026-04-01"]
    assert [row[2] for row in fees] == [
        Decimal("14.19"),  # 22/31 days of 20.00
        Decimal("20.00"),
        Decimal("20.00"),
        Decimal("20.00"),
    ]
    lines = session.scalar(select(func.count()).select_from(InvoiceLine))
    assert lines == 4
