"""Period close through the real broker, a real worker process and PostgreSQL.

The closing workers here consume only the `closing` queue and run under their own Redis key
prefix (inside this run's prefix), so the invoice messages they queue stay in Redis for the
tests to read: no other worker of the run consumes them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from models import ClosedPeriod, Customer
from tests.conftest import REDIS_PREFIX
from tests.factories import get_or_create_catalog, make_customer
from tests.support import WorkerProcess, wait_for

pytestmark = pytest.mark.functional

UTC = dt.UTC
PREFIX = f"{REDIS_PREFIX}closing:"
INVOICING_KEY = f"{PREFIX}invoicing"
KILL_PREFIX = f"{REDIS_PREFIX}closing-kill:"


@contextmanager
def prefixed_app(run_app: Any, prefix: str) -> Iterator[Any]:
    """A Celery app like the worker's, under its own Redis key prefix."""
    from worker.celery_app import create_app
    from worker.config import settings

    app = create_app(dataclasses.replace(settings(), redis_key_prefix=prefix))
    run_app.set_current()  # a new app makes itself current; the run's app stays so
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def closing_app(celery_app) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    with prefixed_app(celery_app, PREFIX) as app:
        yield app


def _closing_worker(app: Any, log_dir: Any, name: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        app,
        log_dir,
        name=name,
        queues=["closing"],
        concurrency=int(env.pop("concurrency", "2")),
        env={
            "BILLING_REDIS_KEY_PREFIX": app.conf.broker_transport_options["global_keyprefix"],
            **env,
        },
    )


@pytest.fixture(scope="module")
def closing_worker(closing_app, tmp_path_factory) -> Iterator[WorkerProcess]:  # type: ignore[no-untyped-def]
    """Two closers in one worker (prefork, 2 children), 100 customers per batch."""
    process = _closing_worker(
        closing_app, tmp_path_factory.mktemp("closing"), "closing", BILLING_CLOSE_BATCH="100"
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def invoicing_queue(redis_client) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    redis_client.delete(INVOICING_KEY)
    yield redis_client
    redis_client.delete(INVOICING_KEY)


def queued_invoice_ids(redis_client: Any, key: str = INVOICING_KEY) -> list[int]:
    """Every closed-period id carried by the `billing.invoices.generate` messages waiting."""
    ids: list[int] = []
    for raw in redis_client.lrange(key, 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "billing.invoices.generate"
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.extend(args[0])
    return ids


def run(app: Any, task: str, timeout: float = 60, **kwargs: Any) -> dict[str, int]:
    result: dict[str, int] = app.send_task(task, kwargs=kwargs, queue="closing").get(
        timeout=timeout
    )
    return result


def boundary(day: dt.date, tz: str) -> dt.datetime:
    """Independent oracle: the earliest instant whose local date in `tz` is `day` or later,
    found by bisection over UTC seconds with nothing but the tz database."""
    zone = ZoneInfo(tz)
    lo = dt.datetime(day.year, day.month, day.day, tzinfo=UTC) - dt.timedelta(days=2)
    hi = lo + dt.timedelta(days=4)
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).date() >= day:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def seed_due(engine: Engine, n: int, *, start: dt.datetime, end: dt.datetime) -> None:
    """`n` active daily UTC customers whose current period [start, end) has ended."""
    with Session(engine) as session:
        reseller, business_model, customer_class = get_or_create_catalog(session)
        session.execute(
            text(
                """
                INSERT INTO customers (
                    reseller_id, name, name_key, business_model_id, customer_class_id,
                    billing_period, billing_timezone, balance_control, currency, custom_data,
                    created_at, created_local_date, current_period_start, current_period_end
                )
                SELECT :reseller, 'due customer ' || g, 'due customer ' || g, :model, :class,
                       'daily', 'UTC', 'prepaid', 'USD', '{}', :start, CAST(:start AS date),
                       :start, :end
                FROM generate_series(1, :n) AS g
                """
            ),
            {
                "reseller": reseller.id,
                "model": business_model.id,
                "class": customer_class.id,
                "start": start,
                "end": end,
                "n": n,
            },
        )
        session.commit()


def count_closed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(ClosedPeriod)) or 0)


def test_periods_close_at_their_local_midnight_in_several_timezones(
    clean_db, closing_app, closing_worker, invoicing_queue
) -> None:
    """Each daily period closes at its zone's local midnight and not a second earlier,
    including in Havana, where 2026-03-08 has no 00:00 (the day starts at 01:00) and
    2026-11-01 has two (the day starts at the first)."""
    havana = ZoneInfo("America/Havana")
    skipped = dt.datetime(2026, 3, 8, 0, 0, tzinfo=havana)
    assert skipped.astimezone(UTC).astimezone(havana).hour == 1, "tz database changed?"
    repeated = dt.datetime(2026, 11, 1, 0, 0, tzinfo=havana)
    assert repeated.replace(fold=1).astimezone(UTC) - repeated.astimezone(UTC) == dt.timedelta(
        hours=1
    ), "tz database changed?"
    cases = [
        ("Asia/Tokyo", dt.date(2026, 3, 8)),
        ("America/New_York", dt.date(2026, 3, 8)),  # springs forward at 02:00 that day
        ("Australia/Lord_Howe", dt.date(2026, 3, 8)),
        ("America/Havana", dt.date(2026, 3, 8)),
        ("Pacific/Kiritimati", dt.date(2026, 11, 1)),
        ("America/Havana", dt.date(2026, 11, 1)),
    ]
    with Session(clean_db) as session:
        customers = []
        for tz, day in cases:
            created_at = boundary(day - dt.timedelta(days=1), tz) + dt.timedelta(hours=3)
            customer = make_customer(
                session, billing_period="daily", billing_timezone=tz, created_at=created_at
            )
            # In UTC: an aware time in a repeated hour never compares equal across zones.
            assert customer.current_period_end.astimezone(UTC) == boundary(day, tz), tz
            customers.append((customer.id, tz, day))
        session.commit()
    assert boundary(dt.date(2026, 3, 8), "America/Havana") == dt.datetime(2026, 3, 8, 5, tzinfo=UTC)
    assert boundary(dt.date(2026, 11, 1), "America/Havana") == dt.datetime(
        2026, 11, 1, 4, tzinfo=UTC
    )

    # Step the clock through the boundaries (New York and Havana share 05:00 UTC on Mar 8).
    by_end: dict[dt.datetime, list[tuple[int, str, dt.date]]] = {}
    for customer_id, tz, day in customers:
        by_end.setdefault(boundary(day, tz), []).append((customer_id, tz, day))
    for end, due in sorted(by_end.items()):
        ids = [customer_id for customer_id, _, _ in due]
        run(
            closing_app,
            "billing.periods.close_due",
            as_of=(end - dt.timedelta(seconds=1)).isoformat(),
        )
        with Session(clean_db) as session:
            early = session.scalars(
                select(ClosedPeriod.billing_timezone).where(ClosedPeriod.customer_id.in_(ids))
            ).all()
        assert early == [], f"closed before {end}"

        run(closing_app, "billing.periods.close_due", as_of=end.isoformat())
        with Session(clean_db) as session:
            for customer_id, tz, day in due:
                first = session.scalars(
                    select(ClosedPeriod)
                    .where(ClosedPeriod.customer_id == customer_id)
                    .order_by(ClosedPeriod.period_start)
                ).first()
                assert first is not None, f"{tz} not closed at {end}"
                assert (first.period_end, first.end_date, first.billing_timezone) == (end, day, tz)


def test_a_worker_down_for_three_days_closes_each_missed_period(
    clean_db, closing_app, closing_worker, invoicing_queue
) -> None:
    """Catch-up: three daily periods missed are closed separately and in order, and each
    one's invoice generation is queued."""
    with Session(clean_db) as session:
        customer = make_customer(
            session,
            billing_period="daily",
            billing_timezone="America/Sao_Paulo",
            created_at=dt.datetime(2026, 5, 10, 15, tzinfo=UTC),
        )
        session.commit()
        customer_id = customer.id

    summary = run(
        closing_app, "billing.periods.close_due", as_of="2026-05-13T04:00:00+00:00"
    )  # 01:00 on May 13 in São Paulo

    with Session(clean_db) as session:
        closed = session.scalars(
            select(ClosedPeriod)
            .where(ClosedPeriod.customer_id == customer_id)
            .order_by(ClosedPeriod.period_start)
        ).all()
        current = session.get(Customer, customer_id)
    assert [(c.start_date.day, c.end_date.day) for c in closed] == [(10, 11), (11, 12), (12, 13)]
    assert summary["closed"] == 3
    assert current is not None
    assert current.current_period_start == dt.datetime(2026, 5, 13, 3, tzinfo=UTC)
    assert sorted(queued_invoice_ids(invoicing_queue)) == [c.id for c in closed]


def test_a_customer_created_in_1970_closes_in_one_run_of_a_few_batches(
    clean_db, closing_app, closing_worker, invoicing_queue
) -> None:
    """A daily customer imported with created_at 1970-01-01 has every day since closed by
    one close_due through the worker, in one batch, and its invoice messages carry the
    periods in order, BILLING_INVOICE_BATCH to a message (issue 14: one each before)."""
    with Session(clean_db) as session:
        customer = make_customer(
            session,
            billing_period="daily",
            billing_timezone="Europe/Lisbon",
            created_at=dt.datetime(1970, 1, 1, 12, tzinfo=UTC),
        )
        session.commit()
        customer_id = customer.id

    summary = run(
        closing_app, "billing.periods.close_due", timeout=120, as_of="2026-06-01T12:00:00Z"
    )

    with Session(clean_db) as session:
        closed = session.scalars(
            select(ClosedPeriod)
            .where(ClosedPeriod.customer_id == customer_id)
            .order_by(ClosedPeriod.period_start)
        ).all()
        current = session.get(Customer, customer_id)
    days = (dt.date(2026, 6, 1) - dt.date(1970, 1, 1)).days
    assert len(closed) == summary["closed"] == days
    assert [c.start_date for c in closed[:2]] == [dt.date(1970, 1, 1), dt.date(1970, 1, 2)]
    assert closed[-1].end_date == dt.date(2026, 6, 1)
    assert all(a.period_end == b.period_start for a, b in itertools.pairwise(closed))
    assert current is not None
    assert current.current_period_start == closed[-1].period_end
    assert summary["batches"] == 1
    # The list's head is the newest message: oldest first, the ids are the periods in order.
    messages = [
        json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
        for raw in reversed(invoicing_queue.lrange(INVOICING_KEY, 0, -1))
    ]
    assert [i for ids in messages for i in ids] == [c.id for c in closed]
    from worker.config import settings

    per_message = settings().invoice_batch_size
    assert summary["invoice_messages"] == invoicing_queue.llen(INVOICING_KEY)
    assert summary["invoice_messages"] == -(-days // per_message)


def test_a_closer_skips_customers_another_closer_holds_and_never_duplicates(
    clean_db, closing_app, closing_worker, invoicing_queue
) -> None:
    """While one closer holds a batch (row locks), another closes everything else instead
    of waiting or closing the same rows; once the first rolls back, the next run closes
    the rest. Each period is closed exactly once."""
    start = dt.datetime(2026, 4, 1, tzinfo=UTC)
    seed_due(clean_db, 500, start=start, end=start + dt.timedelta(days=1))
    now = start + dt.timedelta(days=1, hours=1)

    with Session(clean_db) as holder:
        held = (
            holder.execute(
                select(Customer.id)
                .where(Customer.current_period_end <= now)
                .order_by(Customer.id)
                .limit(40)
                .with_for_update(skip_locked=True)
            )
            .scalars()
            .all()
        )
        first = run(closing_app, "billing.periods.close_due", as_of=now.isoformat())
        with Session(clean_db) as session:
            closed_held = session.scalar(
                select(func.count()).where(ClosedPeriod.customer_id.in_(held))
            )
        holder.rollback()
    second = run(closing_app, "billing.periods.close_due", as_of=now.isoformat())

    assert len(held) == 40
    assert first["closed"] == 460
    assert closed_held == 0
    assert second["closed"] == 40
    assert first["already_closed"] == second["already_closed"] == 0
    assert count_closed(clean_db) == 500
    assert sorted(queued_invoice_ids(invoicing_queue)) == list(range(1, 501))


def test_two_closers_at_once_split_the_work_without_duplicates(
    clean_db, closing_app, closing_worker, invoicing_queue
) -> None:
    """Two close tasks running at the same time in two worker processes (a duplicate beat)
    together close every due period exactly once and queue each invoice once."""
    start = dt.datetime(2026, 4, 1, tzinfo=UTC)
    seed_due(clean_db, 3000, start=start, end=start + dt.timedelta(days=1))
    as_of = (start + dt.timedelta(days=1)).isoformat()

    pending = [
        closing_app.send_task("billing.periods.close_due", kwargs={"as_of": as_of}, queue="closing")
        for _ in range(2)
    ]
    results = [p.get(timeout=120) for p in pending]

    assert sum(r["closed"] for r in results) == 3000
    assert sum(r["already_closed"] for r in results) == 0
    with clean_db.connect() as conn:
        per_customer = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT customer_id) FROM closed_periods"
                " WHERE period_start = :start"
            ),
            {"start": start},
        ).one()
        advanced = conn.scalar(
            text("SELECT count(*) FROM customers WHERE current_period_start = :end"),
            {"end": start + dt.timedelta(days=1)},
        )
    assert tuple(per_customer) == (3000, 3000)
    assert advanced == 3000
    ids = queued_invoice_ids(invoicing_queue)
    assert len(ids) == len(set(ids)) == 3000


@pytest.fixture
def kill_app(celery_app, redis_client) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """An app of its own, so no other closing worker of the run takes its close tasks."""
    with prefixed_app(celery_app, KILL_PREFIX) as app:
        yield app
    for key in redis_client.scan_iter(match=f"{KILL_PREFIX}*"):
        redis_client.delete(key)


def test_killing_the_worker_mid_close_then_restarting_closes_everything_once(
    clean_db, kill_app, redis_client, tmp_path
) -> None:
    """SIGKILL in the middle of a large close loses at most the batch in flight: a new
    worker's close finishes the rest, every period is closed exactly once, and with the
    reconcile step every closed period's invoice generation is queued."""
    closing_app, invoicing_key = kill_app, f"{KILL_PREFIX}invoicing"
    total, batch = 40_000, 250
    start = dt.datetime(2026, 4, 1, tzinfo=UTC)
    end = start + dt.timedelta(days=1)
    seed_due(clean_db, total, start=start, end=end)
    env = {"BILLING_CLOSE_BATCH": str(batch), "concurrency": "1"}
    doomed = _closing_worker(closing_app, tmp_path, "doomed", **env)
    doomed.start()
    try:
        closing_app.send_task(
            "billing.periods.close_due", kwargs={"as_of": end.isoformat()}, queue="closing"
        )
        wait_for(lambda: count_closed(clean_db) >= 10 * batch, timeout=60, what="close started")
    finally:
        doomed.kill()
    closed_before_restart = count_closed(clean_db)
    assert 0 < closed_before_restart < total

    survivor = _closing_worker(closing_app, tmp_path, "survivor", **env)
    survivor.start()
    try:
        summary = run(closing_app, "billing.periods.close_due", timeout=120, as_of=end.isoformat())
        queued_before_reconcile = set(queued_invoice_ids(redis_client, invoicing_key))
        with clean_db.connect() as conn:
            first_run_enqueued = conn.scalar(
                text("SELECT min(invoice_enqueued_at) FROM closed_periods")
            )
        # The next reconcile beat after BILLING_RECONCILE_AFTER: it re-queues the first
        # run's periods (none is invoiced here), healing a message lost in the kill.
        reconcile = run(
            closing_app,
            "billing.periods.reconcile",
            as_of=(first_run_enqueued + dt.timedelta(seconds=901)).isoformat(),
            older_than=900,
        )
    finally:
        survivor.stop()

    assert summary["closed"] == total - closed_before_restart
    assert summary["already_closed"] == 0
    with clean_db.connect() as conn:
        rows, customers, unenqueued = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT customer_id),"
                " count(*) FILTER (WHERE invoice_enqueued_at IS NULL) FROM closed_periods"
            )
        ).one()
        still_due = conn.scalar(
            text("SELECT count(*) FROM customers WHERE current_period_end <= :end"), {"end": end}
        )
        all_ids = set(conn.scalars(text("SELECT id FROM closed_periods")))
    assert (rows, customers, unenqueued, still_due) == (total, total, 0, 0)
    # Without reconcile, at most the batch committed just before the kill lacks a message.
    assert len(all_ids - queued_before_reconcile) <= batch
    # Reconcile re-queues only what no message in the broker carries any more.
    assert reconcile["requeued"] == len(all_ids - queued_before_reconcile)
    assert reconcile["still_queued"] == len(all_ids & queued_before_reconcile)
    assert set(queued_invoice_ids(redis_client, invoicing_key)) == all_ids


def test_reconcile_resends_only_messages_no_longer_in_the_broker(
    clean_db, closing_app, closing_worker, invoicing_queue
) -> None:
    """Invoicing merely behind (every message still queued): reconcile sends nothing again.
    Once the queue is lost (a Redis restart without persistence), it sends them all."""
    start = dt.datetime(2026, 4, 1, tzinfo=UTC)
    seed_due(clean_db, 30, start=start, end=start + dt.timedelta(days=1))
    closed = run(closing_app, "billing.periods.close_due", as_of="2026-04-02T00:00:00Z")
    queued = queued_invoice_ids(invoicing_queue)
    assert closed["closed"] == len(queued) == 30

    behind = run(closing_app, "billing.periods.reconcile", older_than=0)
    invoicing_queue.delete(INVOICING_KEY)
    lost = run(closing_app, "billing.periods.reconcile", older_than=0)

    assert (behind["requeued"], behind["still_queued"]) == (0, 30)
    assert (lost["requeued"], lost["still_queued"]) == (30, 0)
    assert sorted(queued_invoice_ids(invoicing_queue)) == sorted(queued)


def test_billing_close_with_the_broker_down_says_so_and_reconcile_finds_the_periods(
    clean_db, closing_app, closing_worker, invoicing_queue
) -> None:
    """`billing close` with Redis unreachable commits what it closed, exits 1 with one
    line saying those periods have no invoice message, and the next reconcile queues them."""
    import os
    import subprocess
    import sys

    from tests.support import REPO_ROOT

    start = dt.datetime(2026, 4, 1, tzinfo=UTC)
    seed_due(clean_db, 20, start=start, end=start + dt.timedelta(days=1))
    env = {**os.environ, "BILLING_BROKER_URL": "redis://127.0.0.1:1/0"}
    env.pop("BILLING_RESULT_BACKEND", None)

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from worker.cli import main; main()",
            "close",
            "--as-of",
            "2026-04-02T00:00:00Z",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "have no invoice message" in done.stderr
    assert "Traceback" not in done.stderr
    closed = count_closed(clean_db)
    assert 0 < closed <= 20
    with clean_db.connect() as conn:
        never_queued = conn.scalar(
            text("SELECT count(*) FROM closed_periods WHERE invoice_enqueued_at IS NULL")
        )
    assert never_queued == closed
    healed = run(closing_app, "billing.periods.reconcile")
    assert healed["requeued"] == closed
    assert len(queued_invoice_ids(invoicing_queue)) == closed
