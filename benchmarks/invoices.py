"""Benchmark: invoices generated per second for a batch of closed periods with charges.

    python benchmarks/invoices.py                       # N = 2000 periods, 5 charges each
    python benchmarks/invoices.py --n 5000 --charges 20 --batch 200 --no-worker
    python benchmarks/invoices.py --subscriptions 2   # plus two recurring fees per customer

Seeds N customers (one reseller, so every invoice takes a number from the same gapless
counter), one closed period each and C charges per period, in a scratch PostgreSQL
database, then generates their invoices twice over fresh copies of the data:

1. in-process: `tasks.invoicing.generate_invoices` (the service the task runs), one unit
   of work per batch, one after the other;
2. through the broker (unless --no-worker): the batches are sent as
   `billing.invoices.generate` messages to Redis and run by a real `celery worker` with
   --concurrency processes, timed from the first send to the last result.

It also times recording charges (`tasks.charges.record_charge`, one unit of work each,
which locks the customer row and writes charge + ledger row) in-process. It prints the
figures and checks that the numbers are exactly 1..N. The scratch database and Redis keys
are removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

ADMIN_URL = os.environ.get(
    "BILLING_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BILLING_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = uuid.uuid4().hex[:8]
DATABASE = f"billing_bench_invoices_{RUN}"
PREFIX = f"billing-bench-{RUN}:"
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)


def configure() -> str:
    """Point the worker package at the scratch database and Redis prefix before import."""
    from sqlalchemy.engine import make_url

    url = make_url(ADMIN_URL).set(database=DATABASE).render_as_string(hide_password=False)
    os.environ["BILLING_DATABASE_URL"] = url
    os.environ["BILLING_BROKER_URL"] = REDIS_URL
    os.environ["BILLING_RESULT_BACKEND"] = REDIS_URL
    os.environ["BILLING_REDIS_KEY_PREFIX"] = PREFIX
    os.environ["BILLING_DATA_DIR"] = tempfile.mkdtemp(prefix="billing-bench-")
    return url


def seed(n: int, charges: int, tag: str) -> list[int]:
    """N customers with one closed period [START, END) and `charges` charges each."""
    from sqlalchemy import insert, select

    from models import Charge, ClosedPeriod, Customer
    from models.names import name_key
    from tests.factories import get_or_create_catalog
    from worker.db import unit_of_work

    with unit_of_work() as session:
        reseller, business_model, customer_class = get_or_create_catalog(
            session,
            tax_rate=Decimal("0.0825"),
            grace_period_days=14,
            notification_emails=["billing@example.test"],
        )
        session.execute(
            insert(Customer),
            [
                {
                    "reseller_id": reseller.id,
                    "name": f"{tag} customer {i}",
                    "name_key": name_key(f"{tag} customer {i}"),
                    "business_model_id": business_model.id,
                    "customer_class_id": customer_class.id,
                    "billing_period": "monthly",
                    "billing_timezone": "UTC",
                    "balance_control": "postpaid",
                    "currency": "USD",
                    "balance": Decimal(0),
                    "created_at": START,
                    "created_local_date": START.date(),
                    "current_period_start": END,
                    "current_period_end": END + dt.timedelta(days=30),
                }
                for i in range(n)
            ],
        )
        customer_ids = session.scalars(
            select(Customer.id).where(Customer.name.like(f"{tag} customer %"))
        ).all()
        session.execute(
            insert(Charge),
            [
                {
                    "reseller_id": reseller.id,
                    "customer_id": cid,
                    "amount": Decimal(137 + 11 * j).scaleb(-2),
                    "currency": "USD",
                    "occurred_at": START + dt.timedelta(hours=5 * j + 1),
                    "description": f"Service {j}",
                    "idempotency_key": f"{tag}-{cid}-{j}",
                    "recorded_at": END,
                }
                for cid in customer_ids
                for j in range(charges)
            ],
        )
        session.execute(
            insert(ClosedPeriod),
            [
                {
                    "customer_id": cid,
                    "period_start": START,
                    "period_end": END,
                    "start_date": START.date(),
                    "end_date": END.date(),
                    "billing_period": "monthly",
                    "billing_timezone": "UTC",
                    "closed_at": END,
                }
                for cid in customer_ids
            ],
        )
        return list(
            session.scalars(
                select(ClosedPeriod.id).where(ClosedPeriod.customer_id.in_(customer_ids))
            )
        )


def subscribe_all(per_customer: int) -> None:
    """`per_customer` plan subscriptions for every customer, alternately billed in advance
    and in arrears, from the period start: each invoice bills that many fee lines (and the
    advance ones for the next period too)."""
    from sqlalchemy import text

    from tests.fees_factories import make_plan
    from worker.db import unit_of_work

    with unit_of_work() as session:
        for k in range(per_customer):
            mode = "advance" if k % 2 == 0 else "arrears"
            plan = make_plan(session, f"Plan {k}", mode, {"USD": f"{10 + k}.99"})
            session.execute(
                text(
                    "INSERT INTO subscriptions (customer_id, plan_id, quantity, starts_at, "
                    "starts_on) SELECT id, :plan, :quantity, :start, CAST(:start AS date) "
                    "FROM customers"
                ),
                {"plan": plan.id, "quantity": k + 1, "start": START},
            )


def analyze() -> None:
    """Planner statistics, as a database in service has them (autovacuum is not instant)."""
    from sqlalchemy import text

    from worker.db import engine

    with engine().connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def reset_invoices() -> None:
    from sqlalchemy import text

    from worker.db import engine

    with engine().begin() as conn:
        conn.execute(text("TRUNCATE notifications, invoice_lines, invoices CASCADE"))
        conn.execute(text("UPDATE charges SET invoice_id = NULL"))
        conn.execute(text("UPDATE closed_periods SET invoiced = false"))
        conn.execute(text("UPDATE resellers SET last_invoice_number = 0"))
    analyze()


def check_numbers(n: int) -> None:
    from sqlalchemy import select

    from models import Invoice
    from worker.db import unit_of_work

    with unit_of_work() as session:
        numbers = sorted(session.scalars(select(Invoice.number)))
    assert numbers == list(range(1, n + 1)), "invoice numbers are not exactly 1..N"


def batches(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def in_process(ids: list[int], size: int) -> float:
    from tasks.invoicing import generate_invoices
    from worker.db import unit_of_work

    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    issued = 0
    for batch in batches(ids, size):
        with unit_of_work() as session:
            issued += generate_invoices(session, batch, now=now).issued
    elapsed = time.perf_counter() - started
    assert issued == len(ids)
    return elapsed


def through_worker(ids: list[int], size: int, concurrency: int) -> float:
    from tasks.invoicing import generate_invoices_task
    from tests.support import WorkerProcess
    from worker import app

    worker = WorkerProcess(
        app,
        Path(tempfile.mkdtemp(prefix="billing-bench-")),
        name="bench",
        concurrency=concurrency,
    )
    worker.start()
    try:
        started = time.perf_counter()
        sent = [generate_invoices_task.delay(b) for b in batches(ids, size)]
        issued = sum(r.get(timeout=600)["issued"] for r in sent)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
    assert issued == len(ids)
    return elapsed


def record_charges(count: int) -> float:
    from tasks.charges import record_charge
    from worker.db import unit_of_work

    with unit_of_work() as session:
        from sqlalchemy import select

        from models import Customer

        names = session.scalars(select(Customer.name).limit(100)).all()
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    for i in range(count):
        with unit_of_work() as session:
            result = record_charge(
                session,
                {
                    "customer": names[i % len(names)],
                    "amount": "0.25",
                    "currency": "USD",
                    "occurred_at": (END + dt.timedelta(seconds=i)).isoformat(),
                    "description": "Calls",
                    "idempotency_key": f"bench-{i}",
                },
                now=now,
            )
        assert result["status"] == "recorded", result
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="closed periods (= invoices)")
    parser.add_argument("--charges", type=int, default=5, help="charges per period")
    parser.add_argument("--batch", type=int, default=200, help="periods per task/unit of work")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--no-worker", action="store_true", help="skip the broker run")
    parser.add_argument(
        "--subscriptions", type=int, default=0, help="plan subscriptions per customer (fees)"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    url = configure()
    from tests.support import create_database, drop_database
    from worker.db import reset_engine
    from worker.migrate import upgrade

    create_database(ADMIN_URL, DATABASE)
    try:
        upgrade(url)
        seeding = time.perf_counter()
        ids = seed(args.n, args.charges, "bench")
        subscribe_all(args.subscriptions)
        analyze()
        print(
            f"seeded {args.n} closed periods with {args.charges} charges and "
            f"{args.subscriptions} subscriptions each in {time.perf_counter() - seeding:.1f}s"
        )
        elapsed = in_process(ids, args.batch)
        check_numbers(args.n)
        print(
            f"in-process service: {args.n} invoices in {elapsed:.2f}s = "
            f"{args.n / elapsed:,.0f} invoices/s (batches of {args.batch})"
        )
        if not args.no_worker:
            reset_invoices()
            elapsed = through_worker(ids, args.batch, args.concurrency)
            check_numbers(args.n)
            print(
                f"through Redis + worker (-c {args.concurrency}): {args.n} invoices in "
                f"{elapsed:.2f}s = {args.n / elapsed:,.0f} invoices/s"
            )
        count = 1000
        elapsed = record_charges(count)
        print(
            f"record_charge in-process: {count} charges in {elapsed:.2f}s = "
            f"{count / elapsed:,.0f} charges/s (one transaction each)"
        )
    finally:
        reset_engine()
        drop_database(ADMIN_URL, DATABASE)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    main()
