"""Fee lines through the real close and invoice services, on PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import tasks.base
from models import (
    Base,
    ClosedPeriod,
    Customer,
    CustomerChange,
    Invoice,
    InvoiceLine,
    SubscriptionFee,
)
from tasks.charges import record_charge
from tasks.closing import close_due
from tasks.customer_close import close_customer
from tasks.customer_suspension import resume_customer, suspend_customer
from tasks.customer_update import update_customer
from tasks.invoicing import generate_invoices
from tests.factories import make_customer
from tests.fees_factories import make_plan, subscribe
from tests.invoicing_factories import charge_payload
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


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _periods(session: Session, customer: Customer) -> list[tuple[str, str, str, str]]:
    rows = session.execute(
        select(
            ClosedPeriod.period_start,
            ClosedPeriod.period_end,
            ClosedPeriod.billing_period,
            ClosedPeriod.billing_timezone,
        )
        .where(ClosedPeriod.customer_id == customer.id)
        .order_by(ClosedPeriod.period_start)
    ).all()
    return [(_iso(r[0]), _iso(r[1]), r[2], r[3]) for r in rows]


def _monthly(session: Session, name: str, created: str, **fields: object) -> Customer:
    return make_customer(
        session, name=name, billing_period="monthly", created_at=_at(created), **fields
    )


def _lines_of(session: Session, customer: Customer, covered_from: str) -> list[tuple[str, Decimal]]:
    return [(d, a) for c, d, a in _invoice_lines(session, customer) if c == covered_from]


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def test_monthly_to_weekly_takes_effect_at_the_next_boundary_across_dst(session) -> None:
    """Asked on Feb 20, weekly starts at March 1: February closes monthly, then a one-day
    period to Monday March 2, then Monday to Monday across the March 8 DST change."""
    customer = make_customer(
        session,
        name="Switcher",
        billing_period="monthly",
        billing_timezone=NY,
        created_at=_at("2026-01-15T17:00:00Z"),
    )
    session.commit()
    close_due(session, now=_at("2026-02-01T05:00:00Z"), batch_size=100)
    result = update_customer(
        session,
        {"reseller": "acme", "name": "switcher", "billing_period": "weekly"},
        now=_at("2026-02-20T15:00:00Z"),
        request_id="req-1",
    )
    session.commit()
    assert result.as_json()["changes"] == [
        {
            "field": "billing_period",
            "old": "monthly",
            "new": "weekly",
            "effective_at": "2026-03-01T05:00:00Z",
        }
    ]
    close_due(session, now=_at("2026-03-10T05:00:00Z"), batch_size=100)
    assert _periods(session, customer) == [
        ("2026-01-15T05:00Z", "2026-02-01T05:00Z", "monthly", NY),
        ("2026-02-01T05:00Z", "2026-03-01T05:00Z", "monthly", NY),
        ("2026-03-01T05:00Z", "2026-03-02T05:00Z", "weekly", NY),
        ("2026-03-02T05:00Z", "2026-03-09T04:00Z", "weekly", NY),  # 167 hours: DST
    ]
    session.refresh(customer)
    assert (customer.billing_period, customer.pending_from) == ("weekly", None)
    changes = session.execute(
        select(CustomerChange.field, CustomerChange.request_id, CustomerChange.effective_at)
    ).all()
    assert [(c[0], c[1], _iso(c[2])) for c in changes] == [
        ("billing_period", "req-1", "2026-03-01T05:00Z")
    ]


def test_timezone_change_starts_at_the_old_boundary_and_ends_in_the_new_zone(session) -> None:
    """New York to London at April 1: the first London period starts at New York's
    midnight and ends at London's May 1 midnight (BST)."""
    customer = make_customer(
        session,
        name="Mover",
        billing_period="monthly",
        billing_timezone=NY,
        created_at=_at("2026-03-15T17:00:00Z"),
    )
    session.commit()
    update_customer(
        session,
        {"reseller": "acme", "name": "Mover", "billing_timezone": "Europe/London"},
        now=_at("2026-03-20T12:00:00Z"),
    )
    session.commit()
    close_due(session, now=_at("2026-05-02T00:00:00Z"), batch_size=100)
    assert _periods(session, customer) == [
        ("2026-03-15T04:00Z", "2026-04-01T04:00Z", "monthly", NY),
        ("2026-04-01T04:00Z", "2026-04-30T23:00Z", "monthly", "Europe/London"),
    ]


def test_asking_for_the_current_rule_again_cancels_the_waiting_change(session) -> None:
    """A change back to the rule in force before the boundary leaves nothing waiting."""
    customer = make_customer(
        session, name="Undo", billing_period="monthly", created_at=_at("2026-03-02T10:00:00Z")
    )
    session.commit()
    now = _at("2026-03-05T10:00:00Z")
    update_customer(session, {"name": "Undo", "billing_period": "daily"}, now=now)
    update_customer(session, {"name": "Undo", "billing_period": "monthly"}, now=now)
    session.commit()
    session.refresh(customer)
    assert (customer.pending_billing_period, customer.pending_from) == (None, None)


def test_quantity_change_mid_period_prorates_both_sides(session) -> None:
    """10 seats in advance, 25 from March 15: March's invoice credits 10 x 17 days and bills
    25 x 17 days; the arrears line bills 3 then 5 lines by their days."""
    created = _at("2026-02-01T12:00:00Z")
    customer = make_customer(session, name="Grower", billing_period="monthly", created_at=created)
    seat = make_plan(session, "PBX seat", "advance", {"USD": "10.00"})
    line = make_plan(session, "Internet line", "arrears", {"USD": "31.00"})
    subscribe(session, customer, seat, 10, created)
    subscribe(session, customer, line, 3, created)
    session.commit()
    _close_and_invoice(session, customer, _at("2026-03-01T00:00:00Z"))
    result = update_customer(
        session,
        {
            "name": "Grower",
            "subscriptions": [
                {"plan": "PBX seat", "quantity": 25},
                {"plan": "internet LINE", "quantity": 5},
            ],
        },
        now=_at("2026-03-15T09:00:00Z"),
    )
    assert result.status == "updated", result.as_json()
    session.commit()
    _close_and_invoice(session, customer, _at("2026-04-01T00:00:00Z"))
    lines = [
        (d, a) for covered, d, a in _invoice_lines(session, customer) if covered == "2026-03-01"
    ]
    x, en = "\N{MULTIPLICATION SIGN}", "\N{EN DASH}"
    assert lines == [
        (f"Internet line {x} 3, March 1 {en} March 14, 2026 (14/31 days)", Decimal("42.00")),
        (f"Internet line {x} 5, March 15 {en} March 31, 2026 (17/31 days)", Decimal("85.00")),
        (
            f"PBX seat {x} 25, March 15 {en} March 31, 2026 (17/31 days, in advance)",
            Decimal("137.10"),
        ),
        (f"PBX seat {x} 25, April 1 {en} April 30, 2026 (in advance)", Decimal("250.00")),
        (
            f"PBX seat {x} 10, March 15 {en} March 31, 2026 not used (credit, 17/31 days)",
            Decimal("-54.84"),
        ),
    ]


def test_update_rejects_every_problem_at_once_and_stores_nothing(session) -> None:
    """Unknown class, a prepaid credit limit, bad rule, unknown plan and bad quantity, together."""
    customer = make_customer(
        session,
        name="Prepaid One",
        balance_control="prepaid",
        created_at=_at("2026-03-02T10:00:00Z"),
    )
    session.commit()
    result = update_customer(
        session,
        {
            "name": "Prepaid One",
            "customer_class": "Nope",
            "credit_limit": "10.00",
            "billing_period": "fortnightly",
            "subscriptions": [
                {"plan": "Ghost", "quantity": 1},
                {"plan": "PBX seat", "quantity": -1},
            ],
        },
        now=_at("2026-03-05T10:00:00Z"),
    )
    codes = sorted((e["field"], e["code"]) for e in result.as_json()["errors"])
    assert codes == [
        ("billing_period", "unknown_billing_period"),
        ("credit_limit", "not_allowed"),
        ("customer_class", "not_found"),
        ("subscriptions[0].plan", "not_found"),
        ("subscriptions[1].quantity", "out_of_range"),
    ]
    assert session.scalar(select(func.count()).select_from(CustomerChange)) == 0
    session.refresh(customer)
    assert customer.billing_period == "monthly"


def test_lowering_the_credit_limit_blocks_at_once_and_raising_it_unblocks(session) -> None:
    """The block follows the new limit immediately, not at the next charge."""
    customer = make_customer(session, name="Owing", balance=Decimal("120.00"))
    session.commit()
    now = _at("2026-03-05T10:00:00Z")
    update_customer(session, {"name": "Owing", "credit_limit": "100.00"}, now=now)
    session.refresh(customer)
    assert customer.blocked
    update_customer(session, {"name": "Owing", "credit_limit": None}, now=now)
    session.refresh(customer)
    assert not customer.blocked
    assert customer.credit_limit is None


def test_close_mid_period_bills_a_final_prorated_invoice_and_no_later_period(session) -> None:
    """Closed on March 10 at 14:00: the last period is cut there; its invoice bills the
    arrears plan for 9 days, credits the advance plan for the 22 days it was billed but not
    used, carries the usage up to the close; no period follows and charges are refused."""
    created = _at("2026-02-01T12:00:00Z")
    customer = make_customer(session, name="Leaver", billing_period="monthly", created_at=created)
    seat = make_plan(session, "PBX seat", "advance", {"USD": "31.00"})
    line = make_plan(session, "Internet line", "arrears", {"USD": "31.00"})
    subscribe(session, customer, seat, 1, created)
    subscribe(session, customer, line, 1, created)
    session.commit()
    _close_and_invoice(session, customer, _at("2026-03-01T00:00:00Z"))
    record_charge(
        session,
        charge_payload(customer, "5.00", _at("2026-03-10T13:00:00Z"), "c1"),
        now=_at("2026-03-10T13:30:00Z"),
    )
    session.commit()
    result = close_customer(
        session,
        reseller="acme",
        name="Leaver",
        at=_at("2026-03-10T14:00:00Z"),
        now=_at("2026-03-10T15:00:00Z"),
        clock_skew=dt.timedelta(seconds=120),
    )
    assert result.status == "closed", result.as_json()
    session.commit()
    _close_and_invoice(session, customer, _at("2026-06-01T00:00:00Z"))
    assert _periods(session, customer)[-1] == (
        "2026-03-01T00:00Z",
        "2026-03-10T14:00Z",
        "monthly",
        "UTC",
    )
    assert len(_periods(session, customer)) == 2
    final = [
        (d, a) for covered, d, a in _invoice_lines(session, customer) if covered == "2026-03-01"
    ]
    en = "\N{EN DASH}"
    assert final == [
        (f"Internet line, March 1 {en} March 9, 2026 (9/31 days)", Decimal("9.00")),
        (
            f"PBX seat, March 10 {en} March 31, 2026 not used (credit, 22/31 days)",
            Decimal("-22.00"),
        ),
        ("Calls", Decimal("5.00")),
    ]
    again = close_customer(
        session,
        reseller="acme",
        name="Leaver",
        at=None,
        now=_at("2026-03-11T00:00:00Z"),
        clock_skew=dt.timedelta(seconds=120),
    )
    assert again.status == "already_closed"
    refused = record_charge(
        session,
        charge_payload(customer, "1.00", _at("2026-03-10T13:59:00Z"), "c2"),
        now=_at("2026-03-11T00:00:00Z"),
    )
    assert refused["status"] == "refused"
    assert refused["errors"][0]["code"] == "customer_closed"


def test_close_catches_up_on_periods_the_closer_has_not_reached(session) -> None:
    """A close at an instant two periods ahead of the stored one closes those first."""
    customer = make_customer(
        session, name="Behind", billing_period="monthly", created_at=_at("2026-01-10T12:00:00Z")
    )
    session.commit()
    result = close_customer(
        session,
        reseller="acme",
        name="Behind",
        at=_at("2026-03-05T00:00:00Z"),
        now=_at("2026-03-06T00:00:00Z"),
        clock_skew=dt.timedelta(seconds=120),
    )
    assert len(result.closed_period_ids) == 3
    assert [p[:2] for p in _periods(session, customer)] == [
        ("2026-01-10T00:00Z", "2026-02-01T00:00Z"),
        ("2026-02-01T00:00Z", "2026-03-01T00:00Z"),
        ("2026-03-01T00:00Z", "2026-03-05T00:00Z"),
    ]


@pytest.mark.parametrize(
    ("at", "code"),
    [
        ("2026-03-20T00:00:00Z", "in_future"),
        ("2026-01-01T00:00:00Z", "before_creation"),
        ("2026-02-15T00:00:00Z", "period_already_closed"),
    ],
)
def test_close_refusals_change_nothing(session, at: str, code: str) -> None:
    """A close in the future, before creation or inside an already closed period is refused."""
    customer = make_customer(
        session, name="Stayer", billing_period="monthly", created_at=_at("2026-01-10T12:00:00Z")
    )
    session.commit()
    close_due(session, now=_at("2026-03-01T00:00:00Z"), batch_size=100)
    result = close_customer(
        session,
        reseller="acme",
        name="Stayer",
        at=_at(at),
        now=_at("2026-03-10T00:00:00Z"),
        clock_skew=dt.timedelta(seconds=120),
    )
    assert [e["code"] for e in result.as_json()["errors"]] == [code]
    session.refresh(customer)
    assert customer.status == "active"


def test_suspend_and_resume_are_an_operator_block_of_their_own(session) -> None:
    """Suspending blocks for the operator reason; resuming lifts only it, so a customer
    also over its credit limit stays blocked; both are idempotent and in the history."""
    customer = make_customer(session, name="Paused", balance=Decimal("120.00"))
    session.commit()
    now = _at("2026-03-05T10:00:00Z")
    first = suspend_customer(session, reseller="acme", name="paused", note="fraud check", now=now)
    again = suspend_customer(session, reseller="acme", name="Paused", now=now)
    assert (first.status, again.status) == ("suspended", "already_suspended")
    assert first.as_json()["block_reasons"] == ["operator"]
    update_customer(session, {"name": "Paused", "credit_limit": "100.00"}, now=now)
    resumed = resume_customer(session, reseller="acme", name="Paused", now=now)
    assert resumed.as_json() | {"customer_id": None} == {
        "status": "resumed",
        "customer_id": None,
        "name": "Paused",
        "blocked": True,
        "block_reasons": ["credit_limit"],
    }
    assert resume_customer(session, reseller="acme", name="Paused", now=now).status == (
        "not_suspended"
    )
    session.refresh(customer)
    assert customer.blocked
    fields = session.scalars(select(CustomerChange.field).order_by(CustomerChange.id)).all()
    assert fields == ["suspension", "credit_limit", "suspension"]


def test_intake_subscribes_from_creation_and_rejects_every_bad_subscription(session) -> None:
    """Intake stores subscriptions from the creation instant; unknown plans, plans of another
    business model or without the currency and bad quantities are all reported at once."""
    from tasks.intake import create_customer
    from tests.factories import get_or_create_catalog, intake_payload

    get_or_create_catalog(session, customer_class="Business", custom_fields=[])
    make_plan(session, "PBX seat", "advance", {"USD": "12.00"})
    make_plan(session, "Euro seat", "advance", {"EUR": "11.00"})
    session.commit()
    now = _at("2026-03-19T20:00:00Z")
    bad = create_customer(
        session,
        intake_payload(
            custom_data={},
            subscriptions=[
                {"plan": "Ghost", "quantity": 1},
                {"plan": "Euro seat", "quantity": 1},
                {"plan": "pbx SEAT", "quantity": 0},
                {"plan": "PBX seat", "quantity": 2},
            ],
        ),
        now=now,
    )
    assert sorted((e["field"], e["code"]) for e in bad["errors"]) == [
        ("subscriptions[0].plan", "not_found"),
        ("subscriptions[1].plan", "currency_not_offered"),
        ("subscriptions[2].quantity", "out_of_range"),
    ]
    assert session.scalar(select(func.count()).select_from(Customer)) == 0
    good = create_customer(
        session,
        intake_payload(custom_data={}, subscriptions=[{"plan": "PBX seat", "quantity": 25}]),
        now=now,
    )
    assert good["status"] == "created", good
    from tasks.subscriptions import current_subscriptions

    assert current_subscriptions(session, good["customer_id"]) == [
        {"plan": "PBX seat", "quantity": 25, "since": "2026-03-19T20:00:00Z"}
    ]
