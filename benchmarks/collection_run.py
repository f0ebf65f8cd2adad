"""Benchmark: the collection run and payment application over N open invoices.

    python benchmarks/collection_run.py              # N = 5000 customers, one open invoice each
    python benchmarks/collection_run.py --n 20000

Seeds N postpaid customers of a class with a collection policy (reminders 7 and 1 days
before the due date, an overdue notice, suspension 10 days overdue), one closed period with
two charges each, and issues their invoices in-process (benchmarks/invoices.py's seed), in a
scratch PostgreSQL database. Then it times, in-process:

1. the run at a day where every invoice is due its 7-day reminder (N steps and e-mails);
2. the same run again (nothing due: the cost of a run that has nothing to do);
3. the run after an outage of three weeks (obsolete reminder, notice and suspension: 3N
   steps, 2N e-mails, N blocks);
4. one payment per customer for 1,000 customers (`record_payment`, one unit of work each:
   the payment, its ledger row, its application and the resume of the suspension).

It prints the figures and checks that every step exists exactly once. The scratch
database and Redis keys are removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from decimal import Decimal
from pathlib import Path

ISSUED = dt.datetime(2026, 4, 1, 1, tzinfo=dt.UTC)  # due April 15 (grace 14 days)
REMINDER_DAY = dt.datetime(2026, 4, 8, 12, tzinfo=dt.UTC)
AFTER_OUTAGE = dt.datetime(2026, 4, 28, 12, tzinfo=dt.UTC)


def issue(ids: list[int], batch: int) -> None:
    from tasks.invoicing import generate_invoices
    from worker.db import unit_of_work

    for start in range(0, len(ids), batch):
        with unit_of_work() as session:
            generate_invoices(session, ids[start : start + batch], now=ISSUED)


def timed_run(now: dt.datetime) -> tuple[float, dict[str, object]]:
    from tasks.collections import run_collections
    from worker.db import unit_of_work

    started = time.perf_counter()
    with unit_of_work() as session:
        summary = run_collections(session, now=now).as_json()
    return time.perf_counter() - started, summary


def pay(count: int) -> float:
    from sqlalchemy import select

    from models import Customer
    from tasks.charges import record_payment
    from worker.db import unit_of_work

    with unit_of_work() as session:
        customers = session.execute(select(Customer.id, Customer.name).limit(count)).all()
    started = time.perf_counter()
    for customer_id, name in customers:
        with unit_of_work() as session:
            result = record_payment(
                session,
                {
                    "customer_id": customer_id,
                    "amount": "100.00",
                    "currency": "USD",
                    "received_at": AFTER_OUTAGE.isoformat(),
                    "idempotency_key": f"pay-{name}",
                },
                now=AFTER_OUTAGE,
            )
            assert result["status"] == "recorded", result
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="customers (= open invoices)")
    parser.add_argument("--batch", type=int, default=500, help="periods per invoicing batch")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import invoices as bench

    url = bench.configure()
    from sqlalchemy import func, select

    from models import CollectionStep, CustomerBlock, Notification
    from tests.factories import get_or_create_catalog
    from tests.support import create_database, drop_database
    from worker.db import reset_engine, unit_of_work
    from worker.migrate import upgrade

    create_database(bench.ADMIN_URL, bench.DATABASE)
    try:
        upgrade(url)
        with unit_of_work() as session:  # the class the seed finds by name, with a policy
            get_or_create_catalog(
                session,
                tax_rate=Decimal("0.0825"),
                grace_period_days=14,
                notification_emails=["billing@example.test"],
                reminder_days=[7, 1],
                overdue_notice=True,
                suspend_after_days=10,
            )
        ids = bench.seed(args.n, 2, "collections")
        issue(ids, args.batch)
        bench.analyze()
        print(f"{args.n} open invoices, one per customer")
        for label, now in (
            ("reminders due", REMINDER_DAY),
            ("nothing due", REMINDER_DAY),
            ("after a 3-week outage", AFTER_OUTAGE),
        ):
            elapsed, summary = timed_run(now)
            print(
                f"run, {label}: {elapsed:.2f}s, steps {summary['steps']}, "
                f"{summary['notifications']} e-mails, {summary['suspended']} suspended"
            )
        with unit_of_work() as session:
            steps = session.scalar(select(func.count()).select_from(CollectionStep))
            mails = session.scalar(
                select(func.count())
                .select_from(Notification)
                .where(Notification.topic != "invoice")
            )
            blocks = session.scalar(select(func.count()).select_from(CustomerBlock))
        assert (steps, mails, blocks) == (4 * args.n, 3 * args.n, args.n), (steps, mails, blocks)
        count = min(1000, args.n)
        elapsed = pay(count)
        print(
            f"record_payment in-process: {count} payments in {elapsed:.2f}s = "
            f"{count / elapsed:,.0f}/s (each applied to its invoice and resuming its customer)"
        )
    finally:
        reset_engine()
        drop_database(bench.ADMIN_URL, bench.DATABASE)


if __name__ == "__main__":
    main()
