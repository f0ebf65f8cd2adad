"""The close and reconcile services, in process, on PostgreSQL (rolled back) and SQLite."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from decimal import Decimal

import pendulum
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import tasks.base
from models import Base, ClosedPeriod, Customer, Invoice
from models.periods import Period, next_period, period_containing
from tasks.closing import close_due, parse_as_of, reconcile
from tests.factories import make_customer
from worker.db import make_engine, run_after_commit_callbacks

UTC = dt.UTC


class Sent(list):  # type: ignore[type-arg]
    """The invoice signatures the service's sending thread published after each commit."""

    @property
    def ids(self) -> list[int]:
        return [i for signature in self for i in signature.args[0]]


@pytest.fixture
def sent(monkeypatch) -> Sent:
    recorded = Sent()
    monkeypatch.setattr(tasks.base, "publish", lambda sigs, _parent: recorded.extend(sigs))
    return recorded


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request, tmp_path) -> Iterator[Session]:
    """A session on PostgreSQL (the production path) or SQLite (the embedded default) that
    runs its after-commit callbacks, as the task's `unit_of_work` session does."""
    if request.param == "postgresql":
        request.getfixturevalue("clean_db")  # the close sees every due customer committed
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


def _closed(session: Session, customer: Customer) -> list[ClosedPeriod]:
    return list(
        session.scalars(
            select(ClosedPeriod)
            .where(ClosedPeriod.customer_id == customer.id)
            .order_by(ClosedPeriod.period_start)
        )
    )


def test_a_period_that_has_ended_is_closed_and_the_customer_moves_on(session, sent) -> None:
    """The closed period records the customer, both instants and local dates, the rule and
    zone used and the closing instant; the customer's current period becomes the next one."""
    customer = make_customer(
        session,
        billing_period="monthly",
        billing_timezone="America/New_York",
        created_at=dt.datetime(2026, 1, 15, 17, tzinfo=UTC),
    )
    session.commit()
    now = dt.datetime(2026, 2, 1, 5, 0, tzinfo=UTC)  # Feb 1 00:00 in New York

    summary = close_due(session, now=now, batch_size=100)

    (closed,) = _closed(session, customer)
    assert (closed.period_start, closed.period_end) == (
        dt.datetime(2026, 1, 15, 5, tzinfo=UTC),
        dt.datetime(2026, 2, 1, 5, tzinfo=UTC),
    )
    assert (closed.start_date, closed.end_date) == (dt.date(2026, 1, 15), dt.date(2026, 2, 1))
    assert (closed.billing_period, closed.billing_timezone) == ("monthly", "America/New_York")
    assert closed.closed_at == now
    assert closed.invoice_enqueued_at == now
    assert closed.invoiced is False
    session.refresh(customer)
    assert customer.current_period_start == dt.datetime(2026, 2, 1, 5, tzinfo=UTC)
    assert customer.current_period_end == dt.datetime(2026, 3, 1, 5, tzinfo=UTC)
    assert summary.as_json() == {
        "status": "done",
        "errors": [],
        "closed": 1,
        "already_closed": 0,
        "advanced": 1,
        "batches": 1,
        "invoice_messages": 1,
        "period_computations": 1,
        "unclosable": 0,
        "unsent": 0,
    }
    assert sent.ids == [closed.id]


def test_a_period_one_second_from_its_end_stays_open(session, sent) -> None:
    """Selection is `current_period_end <= now`: a second before the end nothing closes."""
    customer = make_customer(session, billing_period="daily", billing_timezone="Asia/Tokyo")
    session.commit()

    summary = close_due(
        session, now=customer.current_period_end - dt.timedelta(seconds=1), batch_size=100
    )

    assert summary.closed == 0
    assert _closed(session, customer) == []
    assert sent == []


def test_a_customer_three_days_behind_gets_three_daily_periods_in_order(session, sent) -> None:
    """After downtime every missed period is closed separately, contiguous and in order."""
    customer = make_customer(
        session,
        billing_period="daily",
        billing_timezone="Europe/Berlin",
        created_at=dt.datetime(2026, 3, 27, 12, tzinfo=UTC),
    )
    session.commit()
    # Berlin springs forward on 2026-03-29: one of the three days has 23 hours.
    now = dt.datetime(2026, 3, 30, 9, tzinfo=UTC)

    summary = close_due(session, now=now, batch_size=100)

    closed = _closed(session, customer)
    assert [(c.start_date, c.end_date) for c in closed] == [
        (dt.date(2026, 3, 27), dt.date(2026, 3, 28)),
        (dt.date(2026, 3, 28), dt.date(2026, 3, 29)),
        (dt.date(2026, 3, 29), dt.date(2026, 3, 30)),
    ]
    assert all(a.period_end == b.period_start for a, b in itertools.pairwise(closed))
    assert closed[2].period_end - closed[2].period_start == dt.timedelta(hours=23)
    session.refresh(customer)
    current = period_containing("daily", dt.date(2026, 3, 27), "Europe/Berlin", now)
    assert customer.current_period_end == current.end
    assert summary.closed == 3
    assert summary.advanced == 3
    assert sorted(sent.ids) == [c.id for c in closed]


def _catch_up_mix(session: Session) -> None:
    """Customers behind by weeks to a year under every rule, in zones whose midnight is
    skipped or repeated, one with a rule change waiting at a boundary further on."""
    created = dt.datetime(2025, 3, 30, 17, tzinfo=UTC)
    zones = ("America/Havana", "Australia/Lord_Howe")
    rules = ("daily", "weekly", "semimonthly", "monthly", "monthly_anniversary", "30_days")
    for rule, tz in itertools.product(rules, zones):
        make_customer(
            session,
            name=f"{rule} {tz}",
            billing_period=rule,
            billing_timezone=tz,
            created_at=created,
        )
    waiting = make_customer(
        session,
        name="switching",
        billing_period="daily",
        billing_timezone="UTC",
        created_at=dt.datetime(2026, 1, 1, 9, tzinfo=UTC),
    )
    # A change to weekly in Tokyo waits at the end of the tenth daily period.
    waiting.pending_billing_period = "weekly"
    waiting.pending_billing_timezone = "Asia/Tokyo"
    waiting.pending_from = dt.datetime(2026, 1, 11, tzinfo=UTC)
    session.commit()


def _closed_rows(session: Session) -> list[tuple[object, ...]]:
    return [
        tuple(row)
        for row in session.execute(
            select(
                Customer.name,
                ClosedPeriod.period_start,
                ClosedPeriod.period_end,
                ClosedPeriod.start_date,
                ClosedPeriod.end_date,
                ClosedPeriod.billing_period,
                ClosedPeriod.billing_timezone,
            )
            .join(Customer, Customer.id == ClosedPeriod.customer_id)
            .order_by(Customer.name, ClosedPeriod.period_start)
        )
    ]


def _current_periods(session: Session) -> list[tuple[object, ...]]:
    return [
        tuple(row)
        for row in session.execute(
            select(
                Customer.name,
                Customer.billing_period,
                Customer.billing_timezone,
                Customer.current_period_start,
                Customer.current_period_end,
                Customer.pending_from,
            ).order_by(Customer.name)
        )
    ]


def test_catching_up_in_one_pass_records_what_one_period_passes_would(session, sent) -> None:
    """Every customer's missed periods close in one pass and one batch, and the rows and
    the periods the customers move to equal those of the old one-period-per-pass close
    (`period_limit=1`, one customer a batch), rule changes included."""
    now = dt.datetime(2026, 4, 2, 12, tzinfo=UTC)
    _catch_up_mix(session)

    summary = close_due(session, now=now, batch_size=100)
    one_pass = _closed_rows(session), _current_periods(session)
    session.query(ClosedPeriod).delete()
    session.query(Customer).delete()
    session.commit()
    _catch_up_mix(session)
    stepwise = close_due(session, now=now, batch_size=1, period_limit=1)

    assert (_closed_rows(session), _current_periods(session)) == one_pass
    assert summary.closed == stepwise.closed == len(one_pass[0]) > 900
    # One batch for everyone, then the switching period alone, then the rest after it.
    assert summary.batches == 3
    assert stepwise.batches == stepwise.closed
    # The waiting change took effect at its boundary and nowhere else.
    switching = [row for row in one_pass[0] if row[0] == "switching"]
    assert [row[5:] for row in switching[:10]] == [("daily", "UTC")] * 10
    assert {row[5:] for row in switching[10:]} == {("weekly", "Asia/Tokyo")}
    assert switching[10][1] == dt.datetime(2026, 1, 11, tzinfo=UTC)


def test_a_customer_created_in_1970_closes_in_one_batch_with_batched_messages(
    session, sent
) -> None:
    """A daily customer imported with created_at 1970-01-01 gets every day since closed in
    one batch, each period the engine's, contiguous and in order, and its invoice messages
    carry them in period order, `invoice_batch_size` to a message, not one each."""
    customer = make_customer(
        session,
        billing_period="daily",
        billing_timezone="America/Havana",
        created_at=dt.datetime(1970, 1, 1, 12, tzinfo=UTC),
    )
    others = [make_customer(session, billing_period="monthly") for _ in range(3)]
    session.commit()
    now = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)

    summary = close_due(session, now=now, batch_size=100, invoice_batch_size=1000)

    closed = _closed(session, customer)
    expected = []
    period = Period(
        pendulum.instance(closed[0].period_start), pendulum.instance(closed[0].period_end)
    )
    while period.end <= now:
        # In UTC: aware times sharing a zone compare by wall clock, which a repeated hour
        # fools.
        expected.append((period.start.astimezone(UTC), period.end.astimezone(UTC)))
        period = next_period("daily", dt.date(1970, 1, 1), "America/Havana", period)
    assert [(c.period_start, c.period_end) for c in closed] == expected
    assert len(closed) == (now.date() - dt.date(1970, 1, 1)).days  # 20,605 local days
    assert closed[0].start_date == dt.date(1970, 1, 1)
    session.refresh(customer)
    assert (customer.current_period_start, customer.current_period_end) == (
        period.start.astimezone(UTC),
        period.end.astimezone(UTC),
    )
    assert summary.batches == 1
    assert summary.closed == len(closed) + sum(len(_closed(session, c)) for c in others)
    ids = [c.id for c in closed]
    mine = set(ids)
    in_messages = [i for signature in sent for i in signature.args[0] if i in mine]
    assert in_messages == ids  # in period order
    assert summary.invoice_messages == len(sent) == -(-summary.closed // 1000)
    assert all(len(signature.args[0]) <= 1000 for signature in sent)


def test_a_batch_records_at_most_the_period_limit_and_comes_back_for_the_rest(
    session, sent, monkeypatch
) -> None:
    """Memory stays bounded: customers far behind share each batch's period budget, a
    later batch of the same run goes on where the last one stopped, and everything still
    closes exactly once."""
    import tasks.closing

    written: list[int] = []
    for name in ("_write_postgresql", "_write_sqlite"):
        original = getattr(tasks.closing, name)

        def counting(session, steps, now, _original=original):  # type: ignore[no-untyped-def]
            written.append(sum(len(ids) * len(catch_up.periods) for ids, *_, catch_up in steps))
            return _original(session, steps, now)

        monkeypatch.setattr(tasks.closing, name, counting)
    behind = [
        make_customer(
            session,
            billing_period="daily",
            billing_timezone=tz,
            created_at=dt.datetime(2025, 12, 1, 12, tzinfo=UTC),
        )
        for tz in ("UTC", "UTC", "Europe/Paris", "Asia/Tokyo")
    ]
    session.commit()
    now = dt.datetime(2026, 1, 1, 12, tzinfo=UTC)  # 31 days each: 124 periods

    summary = close_due(session, now=now, batch_size=10, period_limit=20)

    assert summary.closed == sum(written) == 124
    assert max(written) <= 20
    assert summary.batches == len(written) >= 7
    for customer in behind:
        closed = _closed(session, customer)
        assert len(closed) == 31
        assert all(a.period_end == b.period_start for a, b in itertools.pairwise(closed))
    assert sorted(sent.ids) == sorted(session.scalars(select(ClosedPeriod.id)))


@pytest.mark.parametrize(
    ("customers", "chunk", "expected"),
    [
        ([1, 1, 1, 2, 2, 2, 3, 3, 3], 4, [[1, 1, 1], [2, 2, 2], [3, 3, 3]]),
        ([1, 2, 3, 4, 5], 2, [[1, 2], [3, 4], [5]]),
        ([1] * 9 + [2], 4, [[1] * 4, [1] * 4, [1, 2]]),
        ([1, 2, 2, 2, 2, 2, 3], 3, [[1], [2, 2, 2], [2, 2, 3]]),
        ([], 5, []),
    ],
)
def test_invoice_messages_keep_a_customers_periods_together(customers, chunk, expected) -> None:
    """Messages are cut between customers where a customer's periods fit in one, and a
    customer with more periods than a message takes consecutive ones; nothing is lost or
    reordered."""
    from tasks.closing import _customer_chunks

    ids = list(range(100, 100 + len(customers)))
    pieces = _customer_chunks(ids, customers, chunk)

    assert [[customers[i - 100] for i in piece] for piece in pieces] == expected
    assert [i for piece in pieces for i in piece] == ids


def test_the_claim_walks_the_due_index_even_when_every_customer_is_due(
    clean_db, db_session
) -> None:
    """On PostgreSQL the claim is an index walk in end order that stops at its limit, not a
    scan and sort of every due customer, even on a small table where all are due and the
    limit exceeds them (there the planner alone picks a sequential scan and a sort)."""
    from sqlalchemy import text
    from sqlalchemy.dialects import postgresql

    from tasks.closing import _claim_due, _plan_batch

    make_customer(db_session, name="model", billing_period="daily")
    columns = (
        "reseller_id, business_model_id, customer_class_id, billing_period, billing_timezone,"
        " balance_control, currency, balance, custom_data, created_at, created_local_date,"
        " current_period_start"
    )
    # Period ends in no physical order (only the plan is looked at, nothing is closed).
    db_session.execute(
        text(
            f"INSERT INTO customers (name, name_key, {columns}, current_period_end)"
            f" SELECT 'c' || g, 'c' || g, {columns},"
            "  current_period_end + (g * 7919 % 1000) * interval '1 minute'"
            " FROM customers, generate_series(1, 2000) g"
        )
    )
    db_session.commit()
    db_session.execute(text("ANALYZE customers"))
    claim = _claim_due(db_session, dt.datetime(2026, 2, 1, tzinfo=UTC), 5000, set())
    sql = str(claim.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))

    _plan_batch(db_session)
    plan = "\n".join(row[0] for row in db_session.execute(text(f"EXPLAIN {sql}")))
    db_session.rollback()

    assert "Index Scan using ix_customers_due on customers" in plan
    assert "Seq Scan on customers" not in plan
    assert "Bitmap" not in plan


def test_closed_and_terminated_customers_are_no_longer_billed(session, sent) -> None:
    """Only active customers are selected, however long ago their period ended."""
    active = make_customer(session, billing_period="weekly")
    make_customer(session, billing_period="weekly", status="closed")
    make_customer(session, billing_period="weekly", status="terminated")
    session.commit()

    summary = close_due(session, now=dt.datetime(2026, 1, 20, tzinfo=UTC), batch_size=100)

    customers = session.execute(
        select(Customer.status, func.count(ClosedPeriod.id))
        .join(ClosedPeriod, ClosedPeriod.customer_id == Customer.id, isouter=True)
        .group_by(Customer.status)
    ).all()
    assert dict(customers) == {"active": 1, "closed": 0, "terminated": 0}
    assert summary.closed == len(_closed(session, active)) == 1


def test_running_the_close_again_changes_nothing(session, sent) -> None:
    """A duplicate beat or a rerun with the same instant finds nothing left to close."""
    for tz in ("UTC", "Asia/Kolkata", "America/Havana"):
        make_customer(session, billing_period="semimonthly", billing_timezone=tz)
    session.commit()
    now = dt.datetime(2026, 3, 2, tzinfo=UTC)
    first = close_due(session, now=now, batch_size=2)
    before = session.scalar(select(func.count()).select_from(ClosedPeriod))
    sent.clear()

    second = close_due(session, now=now, batch_size=2)

    # 3 customers x [Jan 15, Jan 16), [Jan 16, Feb 1), [Feb 1, Feb 16), [Feb 16, Mar 1)
    assert first.closed == before == 12
    assert second.closed == second.batches == 0
    assert session.scalar(select(func.count()).select_from(ClosedPeriod)) == before
    assert sent == []


def test_a_period_recorded_by_someone_else_is_not_duplicated(session, sent) -> None:
    """If the period's row already exists (another closer got there), the conflict means
    done: no second row, no second invoice message, and the customer still moves on."""
    customer = make_customer(session, billing_period="daily")
    session.add(
        ClosedPeriod(
            customer_id=customer.id,
            period_start=customer.current_period_start,
            period_end=customer.current_period_end,
            start_date=dt.date(2026, 1, 15),
            end_date=dt.date(2026, 1, 16),
            billing_period="daily",
            billing_timezone="UTC",
            closed_at=dt.datetime(2026, 1, 16, tzinfo=UTC),
            invoice_enqueued_at=dt.datetime(2026, 1, 16, tzinfo=UTC),
        )
    )
    session.commit()

    summary = close_due(session, now=dt.datetime(2026, 1, 16, tzinfo=UTC), batch_size=10)

    assert summary.closed == 0
    assert summary.already_closed == 1
    assert summary.advanced == 1
    assert len(_closed(session, customer)) == 1
    session.refresh(customer)
    assert customer.current_period_start == dt.datetime(2026, 1, 16, tzinfo=UTC)
    assert sent == []


def test_a_customer_the_engine_refuses_is_logged_and_does_not_block_the_others(
    session, sent, caplog
) -> None:
    """A stored period that is not a boundary of the customer's rule (data intake never
    writes) is reported and skipped; every other due customer still closes."""
    broken = make_customer(session, billing_period="daily")
    broken.current_period_end = dt.datetime(2026, 1, 16, 12, 34, tzinfo=UTC)
    healthy = [make_customer(session, billing_period="daily") for _ in range(3)]
    session.commit()

    summary = close_due(session, now=dt.datetime(2026, 1, 17, tzinfo=UTC), batch_size=2)

    (problem,) = summary.unclosable
    assert (problem.field, problem.code) == ("customer_ids", "unclosable")
    assert f"customer {broken.id}" in problem.message
    assert summary.status == "some_failed"
    assert summary.closed == 6  # 3 customers x (Jan 15-16, Jan 16-17)
    assert _closed(session, broken) == []
    assert all(len(_closed(session, c)) == 2 for c in healthy)
    assert f"customer {broken.id} cannot be closed" in caplog.text


def test_invoice_generation_is_queued_in_batches_on_the_invoicing_queue(session, sent) -> None:
    """Closed periods are sent `invoice_batch_size` ids per message, by task name, each id
    exactly once, one message set per committed batch."""
    for _ in range(5):
        make_customer(session, billing_period="weekly")
    session.commit()

    summary = close_due(
        session, now=dt.datetime(2026, 1, 19, tzinfo=UTC), batch_size=3, invoice_batch_size=2
    )

    closed_ids = session.scalars(select(ClosedPeriod.id)).all()
    assert summary.closed == 5
    assert summary.batches == 2
    assert [len(s.args[0]) for s in sent] == [2, 1, 2]  # batch of 3, then batch of 2
    assert summary.invoice_messages == 3
    assert sorted(sent.ids) == sorted(closed_ids)
    assert {s.task for s in sent} == {"billing.invoices.generate"}
    assert {s.options["queue"] for s in sent} == {"invoicing"}


def test_customers_sharing_a_boundary_share_one_period_computation(session, sent) -> None:
    """Period arithmetic is done per (rule, zone, anchor, boundary), not per customer."""
    for day in range(1, 21):
        make_customer(
            session,
            billing_period="monthly",
            billing_timezone="Australia/Sydney",
            created_at=dt.datetime(2026, 1, day, 3, tzinfo=UTC),
        )
    session.commit()

    summary = close_due(session, now=dt.datetime(2026, 2, 1, tzinfo=UTC), batch_size=7)

    assert summary.closed == 20
    assert summary.batches == 3
    assert summary.period_computations == 1


def test_the_close_needs_an_aware_instant(session, sent) -> None:
    """A naive `now` is a bug in the caller, not something to guess a zone for."""
    with pytest.raises(ValueError, match="aware"):
        close_due(session, now=dt.datetime(2026, 1, 1), batch_size=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-08T05:00:00Z", dt.datetime(2026, 3, 8, 5, tzinfo=UTC)),
        ("2026-03-08T00:00:00-05:00", dt.datetime(2026, 3, 8, 5, tzinfo=UTC)),
    ],
)
def test_as_of_instants_are_read_in_utc(text: str, expected: dt.datetime) -> None:
    """`--as-of` and the task's `as_of` accept ISO-8601 with an offset, compared in UTC."""
    assert parse_as_of(text) == expected


@pytest.mark.parametrize("text", ["2026-03-08T05:00:00", "yesterday"])
def test_as_of_without_an_offset_is_rejected(text: str) -> None:
    """An instant without an offset would be read in the machine's zone: refuse it."""
    with pytest.raises(ValueError, match=r"offset|ISO-8601"):
        parse_as_of(text)


# --- reconcile --------------------------------------------------------------------------


def _closed_period(session: Session, *, enqueued: dt.datetime, invoiced: bool) -> ClosedPeriod:
    customer = make_customer(session, billing_period="daily")
    period = ClosedPeriod(
        customer_id=customer.id,
        period_start=customer.current_period_start,
        period_end=customer.current_period_end,
        start_date=dt.date(2026, 1, 15),
        end_date=dt.date(2026, 1, 16),
        billing_period="daily",
        billing_timezone="UTC",
        closed_at=enqueued,
        invoice_enqueued_at=enqueued,
        invoiced=invoiced,
    )
    session.add(period)
    session.flush()
    return period


def test_reconcile_requeues_closed_periods_whose_invoice_never_came(session, sent) -> None:
    """A period still uninvoiced `older_than` after queuing is queued again and its queuing
    time moved to now, so the next reconcile leaves it alone; recent or invoiced ones stay."""
    now = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)
    lost = _closed_period(session, enqueued=now - dt.timedelta(hours=2), invoiced=False)
    recent = _closed_period(session, enqueued=now - dt.timedelta(minutes=5), invoiced=False)
    done = _closed_period(session, enqueued=now - dt.timedelta(hours=2), invoiced=True)
    session.commit()

    summary = reconcile(session, now=now, older_than=dt.timedelta(minutes=15), batch_size=10)
    again = reconcile(session, now=now, older_than=dt.timedelta(minutes=15), batch_size=10)

    assert summary.as_json() == {
        "status": "done",
        "errors": [],
        "requeued": 1,
        "invoice_messages": 1,
        "still_queued": 0,
    }
    assert sent.ids == [lost.id]
    assert again.requeued == 0
    session.refresh(lost)
    session.refresh(recent)
    session.refresh(done)
    assert lost.invoice_enqueued_at == now
    assert recent.invoice_enqueued_at == now - dt.timedelta(minutes=5)
    assert done.invoice_enqueued_at == now - dt.timedelta(hours=2)


def test_reconcile_requeues_invoices_stuck_in_generating(session, sent) -> None:
    """An invoice left in `generating` (its worker died) leaves its period uninvoiced, so
    the period is queued again."""
    now = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)
    stuck = _closed_period(session, enqueued=now - dt.timedelta(hours=2), invoiced=False)
    customer = session.get(Customer, stuck.customer_id)
    assert customer is not None
    session.add(
        Invoice(
            closed_period_id=stuck.id,
            customer_id=customer.id,
            reseller_id=customer.reseller_id,
            status="generating",
            currency="USD",
            tax_name="Tax",
            tax_rate=Decimal(0),
            period_start=stuck.period_start,
            period_end=stuck.period_end,
            covered_from=stuck.start_date,
            covered_to=stuck.start_date,
            created_at=now - dt.timedelta(hours=2),
        )
    )
    session.commit()

    summary = reconcile(session, now=now, older_than=dt.timedelta(minutes=15), batch_size=10)

    assert summary.requeued == 1
    assert sent.ids == [stuck.id]


def test_reconcile_works_through_many_in_batches(session, sent) -> None:
    """More stale periods than one batch are all re-queued, each once, in several commits."""
    now = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)
    ids = [
        _closed_period(session, enqueued=now - dt.timedelta(days=1), invoiced=False).id
        for _ in range(7)
    ]
    session.commit()

    summary = reconcile(
        session, now=now, older_than=dt.timedelta(0), batch_size=3, invoice_batch_size=2
    )

    assert summary.requeued == 7
    assert sorted(sent.ids) == sorted(ids)
    assert summary.invoice_messages == len(sent) == 5  # batches of 3, 3, 1 → 2+2+1 messages


def test_next_period_used_by_the_close_is_the_engines(session, sent) -> None:
    """For every rule, the period the customer moves to is exactly the engine's next one."""
    created_at = dt.datetime(2026, 1, 30, 15, tzinfo=UTC)
    customers = {
        rule: make_customer(
            session, billing_period=rule, billing_timezone="Asia/Kathmandu", created_at=created_at
        )
        for rule in ("daily", "weekly", "semimonthly", "monthly", "monthly_anniversary", "30_days")
    }
    firsts = {rule: (c.current_period_start, c.current_period_end) for rule, c in customers.items()}
    session.commit()
    now = max(end for _, end in firsts.values())

    close_due(session, now=now, batch_size=4)

    for rule, customer in customers.items():
        closed = _closed(session, customer)
        assert (closed[0].period_start, closed[0].period_end) == firsts[rule]
        session.refresh(customer)
        expected = period_containing(rule, customer.created_local_date, "Asia/Kathmandu", now)
        assert customer.current_period_end == expected.end, rule
        last = closed[-1]
        previous = Period(
            start=pendulum.instance(last.period_start).in_timezone("Asia/Kathmandu"),
            end=pendulum.instance(last.period_end).in_timezone("Asia/Kathmandu"),
        )
        following = next_period(rule, customer.created_local_date, "Asia/Kathmandu", previous)
        assert customer.current_period_start == following.start
        assert customer.current_period_end == following.end


def test_reconcile_does_not_resend_what_is_still_in_the_broker(session, sent) -> None:
    """Stale periods whose messages are still queued (invoicing is behind, not lost) are not
    sent again, only the lost one is; all of them count from now again."""
    now = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)
    stale = [
        _closed_period(session, enqueued=now - dt.timedelta(hours=2), invoiced=False)
        for _ in range(4)
    ]
    session.commit()
    queued = {p.id for p in stale[:3]}

    summary = reconcile(
        session, now=now, older_than=dt.timedelta(minutes=15), batch_size=10, still_queued=queued
    )

    assert (summary.requeued, summary.still_queued) == (1, 3)
    assert sent.ids == [stale[3].id]
    for period in stale:
        session.refresh(period)
        assert period.invoice_enqueued_at == now


def test_reconcile_finds_periods_never_queued_and_leaves_given_up_ones(session, sent) -> None:
    """A period the close could not queue (null queuing time) is queued at once; one whose
    generation failed MAX_INVOICE_ATTEMPTS times is left to an operator."""
    from models.closed_period import MAX_INVOICE_ATTEMPTS

    now = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)
    never = _closed_period(session, enqueued=now, invoiced=False)
    never.invoice_enqueued_at = None
    poisoned = _closed_period(session, enqueued=now - dt.timedelta(days=3), invoiced=False)
    poisoned.invoice_attempts = MAX_INVOICE_ATTEMPTS
    session.commit()

    summary = reconcile(session, now=now, older_than=dt.timedelta(minutes=15), batch_size=10)

    assert summary.requeued == 1
    assert sent.ids == [never.id]


def test_a_broker_outage_leaves_closed_periods_marked_for_reconcile(session, monkeypatch) -> None:
    """When the broker refuses the invoice messages, the committed close stays, the run
    stops, says how many periods have no message, and marks them never queued."""
    from kombu.exceptions import OperationalError

    def refuse(_signatures, _parent):
        raise OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(tasks.base, "publish", refuse)
    customers = [make_customer(session, billing_period="daily") for _ in range(5)]
    session.commit()

    summary = close_due(session, now=dt.datetime(2026, 1, 16, 1, tzinfo=UTC), batch_size=2)

    assert summary.status == "not_sent"
    assert summary.as_json()["errors"][0]["code"] == "broker_unavailable"
    closed = [p for c in customers for p in _closed(session, c)]
    assert len(closed) == summary.closed == summary.unsent == 2  # the first batch only
    assert all(p.invoice_enqueued_at is None for p in closed)
