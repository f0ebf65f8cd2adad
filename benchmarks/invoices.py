"""Benchmark: month-end invoicing through the worker, against a bare set-based floor.

    python benchmarks/invoices.py                          # N = 20,000 periods, 5 charges
    python benchmarks/invoices.py --n 1000000 --charges 5  # issue 14's month-end
    python benchmarks/invoices.py --n 20000 --subscriptions 2 --in-process

Seeds, with SQL, N customers of one reseller (one gapless number counter for all) spread
over 60 timezones, one closed monthly period each (March, local time) and C charges per
period, plus optionally S plan subscriptions per customer (fee lines, half billed in
advance). Then, in the same run, over the same rows:

1. the floor: one bare `INSERT … SELECT` of the issued invoice rows (numbers, totals),
   the `UPDATE` attaching the charges and the `INSERT … SELECT` of the line rows, timed,
   then undone;
2. optionally (--in-process) `tasks.invoicing.generate_invoices` in this process, one unit
   of work per batch, then undone;
3. the real thing: the batches (--batch closed period ids each) sent as
   `billing.invoices.generate` messages to Redis and run by a real `celery worker`
   (--concurrency processes), timed from the first send to the last result, with the peak
   resident memory of every worker process sampled meanwhile.

After the worker run it checks, with SQL, that every period has exactly one issued
invoice, that the numbers are exactly 1..N and follow period order per customer, that
every charge is on its period's invoice, and that each subtotal, tax and total equals an
independent sum of its lines. It prints the times, the ratio to the floor and the peak
memory. The scratch database and Redis keys are removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.close import timezones

ADMIN_URL = os.environ.get(
    "BILLING_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BILLING_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = uuid.uuid4().hex[:8]
DATABASE = f"billing_bench_invoices_{RUN}"
PREFIX = f"billing-bench-{RUN}:"
MONTH = dt.date(2026, 3, 1)
NEXT_MONTH = dt.date(2026, 4, 1)
TAX_RATE = Decimal("0.0825")


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


SEED_CUSTOMERS = """
INSERT INTO customers (
    reseller_id, name, name_key, business_model_id, customer_class_id, billing_period,
    billing_timezone, balance_control, currency, balance, custom_data, created_at,
    created_local_date, current_period_start, current_period_end
)
SELECT :reseller, 'bench customer ' || g, 'bench customer ' || g, :model, :class, 'monthly',
       z.tz, 'postpaid', 'USD', 0, '{}',
       CAST(:month AS timestamp) AT TIME ZONE z.tz, CAST(:month AS date),
       CAST(:next_month AS timestamp) AT TIME ZONE z.tz,
       CAST(:month_after AS timestamp) AT TIME ZONE z.tz
FROM generate_series(0, :n - 1) AS g
JOIN (SELECT row_number() OVER () - 1 AS k, tz FROM unnest(CAST(:zones AS text[])) AS tz) AS z
  ON z.k = g % :zone_count
"""

SEED_PERIODS = """
INSERT INTO closed_periods (
    customer_id, period_start, period_end, start_date, end_date, billing_period,
    billing_timezone, closed_at, invoice_enqueued_at
)
SELECT id, created_at, current_period_start, created_local_date, CAST(:next_month AS date),
       'monthly', billing_timezone, current_period_start, current_period_start
FROM customers ORDER BY id
"""

SEED_CHARGES = """
INSERT INTO charges (
    reseller_id, customer_id, amount, currency, occurred_at, description, idempotency_key,
    recorded_at
)
SELECT c.reseller_id, c.id, (137 + 11 * j) / 100.0, 'USD',
       c.created_at + make_interval(hours => 5 * j + 1), 'Service ' || j, c.id || '-' || j,
       c.current_period_start
FROM customers c CROSS JOIN generate_series(0, :charges - 1) AS j
ORDER BY c.id, j
"""

SUBSCRIBE = """
INSERT INTO subscriptions (customer_id, plan_id, quantity, starts_at, starts_on)
SELECT id, :plan, :quantity, created_at, created_local_date FROM customers
"""


def seed(n: int, charges: int, subscriptions: int) -> None:
    from sqlalchemy import text

    from tests.factories import get_or_create_catalog
    from tests.fees_factories import make_plan
    from worker.db import unit_of_work

    zones = timezones()
    with unit_of_work() as session:
        reseller, business_model, customer_class = get_or_create_catalog(
            session,
            tax_rate=TAX_RATE,
            grace_period_days=14,
            notification_emails=["billing@example.test"],
        )
        session.execute(
            text(SEED_CUSTOMERS),
            {
                "reseller": reseller.id,
                "model": business_model.id,
                "class": customer_class.id,
                "month": MONTH,
                "next_month": NEXT_MONTH,
                "month_after": dt.date(2026, 5, 1),
                "n": n,
                "zones": zones,
                "zone_count": len(zones),
            },
        )
        session.execute(text(SEED_PERIODS), {"next_month": NEXT_MONTH})
        if charges:
            session.execute(text(SEED_CHARGES), {"charges": charges})
        for k in range(subscriptions):
            mode = "advance" if k % 2 == 0 else "arrears"
            plan = make_plan(session, f"Plan {k}", mode, {"USD": f"{10 + k}.99"})
            session.execute(text(SUBSCRIBE), {"plan": plan.id, "quantity": k + 1})
    vacuum()


def vacuum() -> None:
    """Planner statistics and a clean heap, as a database in service has them."""
    from sqlalchemy import text

    from worker.db import engine

    with engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        conn.execute(text("CHECKPOINT"))


# The floor: the same issued invoice rows, charge attachments and line rows, set-based.
FLOOR = [
    """
    INSERT INTO invoices (
        closed_period_id, customer_id, reseller_id, number, status, currency, subtotal,
        tax_name, tax_rate, tax, total, period_start, period_end, covered_from, covered_to,
        issue_date, due_date, issued_at, created_at
    )
    SELECT p.id, c.id, c.reseller_id, row_number() OVER (ORDER BY p.period_end, p.id),
           'issued', c.currency, s.subtotal, k.tax_name, k.tax_rate,
           round(s.subtotal * k.tax_rate, 2), s.subtotal + round(s.subtotal * k.tax_rate, 2),
           p.period_start, p.period_end, p.start_date, p.end_date - 1,
           CAST(now() AT TIME ZONE p.billing_timezone AS date),
           CAST(now() AT TIME ZONE p.billing_timezone AS date) + k.grace_period_days,
           now(), now()
    FROM closed_periods p
    JOIN customers c ON c.id = p.customer_id
    JOIN customer_classes k ON k.id = c.customer_class_id
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(ch.amount), 0) AS subtotal FROM charges ch
        WHERE ch.customer_id = p.customer_id AND ch.occurred_at >= p.period_start
          AND ch.occurred_at < p.period_end
    ) AS s
    """,
    """
    UPDATE charges ch SET invoice_id = i.id FROM invoices i
    WHERE ch.customer_id = i.customer_id AND ch.occurred_at >= i.period_start
      AND ch.occurred_at < i.period_end AND ch.invoice_id IS NULL
    """,
    """
    INSERT INTO invoice_lines (invoice_id, charge_id, description, amount, occurred_at, void)
    SELECT invoice_id, id, description, amount, occurred_at, false FROM charges
    WHERE invoice_id IS NOT NULL
    """,
]

UNDO = [
    # Bulk-undo without the per-row foreign key checks (invoices.replaces_invoice_id has
    # no index: checking it row by row is quadratic); the rows go in dependency order.
    "SET LOCAL session_replication_role = replica",
    "UPDATE charges SET invoice_id = NULL WHERE invoice_id IS NOT NULL",
    "DELETE FROM invoice_applications",
    "DELETE FROM notifications",
    "DELETE FROM invoice_lines",
    "DELETE FROM subscription_fees",
    "DELETE FROM invoices",
    "UPDATE closed_periods SET invoiced = false, invoice_attempts = 0, invoice_error = NULL",
    "UPDATE resellers SET last_invoice_number = 0",
    "UPDATE customers SET balance = 0",
    "DELETE FROM ledger_entries WHERE charge_id IS NULL",
]


def run_sql(statements: list[str]) -> float:
    from sqlalchemy import text

    from worker.db import engine

    started = time.perf_counter()
    with engine().begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    return time.perf_counter() - started


def undo() -> None:
    run_sql(UNDO)
    vacuum()


def period_ids() -> list[int]:
    from sqlalchemy import text

    from worker.db import engine

    with engine().connect() as conn:
        return list(conn.scalars(text("SELECT id FROM closed_periods ORDER BY id")))


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
    assert issued == len(ids), f"issued {issued} of {len(ids)}"
    return time.perf_counter() - started


class PeakMemory(threading.Thread):
    """Samples the resident memory of a process and its children; keeps each one's peak."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.done.wait(self.interval):
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.peaks[process.pid] = max(rss, self.peaks.get(process.pid, 0))


def through_worker(ids: list[int], size: int, concurrency: int) -> tuple[float, list[int]]:
    from tasks.invoicing import generate_invoices_task
    from tests.support import WorkerProcess
    from worker import app

    worker = WorkerProcess(
        app, Path(tempfile.mkdtemp(prefix="billing-bench-")), name="bench", concurrency=concurrency
    )
    worker.start()
    assert worker.process is not None
    sampler = PeakMemory(worker.process.pid)
    sampler.start()
    try:
        started = time.perf_counter()
        sent = [generate_invoices_task.delay(batch) for batch in batches(ids, size)]
        issued = sum(result.get(timeout=3600)["issued"] for result in sent)
        elapsed = time.perf_counter() - started
    finally:
        sampler.done.set()
        worker.stop()
    assert issued == len(ids), f"issued {issued} of {len(ids)}"
    return elapsed, sorted(sampler.peaks.values(), reverse=True)


CHECKS = {
    "periods without exactly one issued invoice": """
        SELECT count(*) FROM closed_periods p WHERE NOT p.invoiced OR (
            SELECT count(*) FROM invoices i WHERE i.closed_period_id = p.id
              AND i.status = 'issued') <> 1
    """,
    "numbers that are not exactly 1..N": """
        SELECT count(*) FROM (
            SELECT number, row_number() OVER (ORDER BY number) AS expected FROM invoices
        ) AS n WHERE number IS DISTINCT FROM expected
    """,
    "invoices numbered out of a customer's period order": """
        SELECT count(*) FROM (
            SELECT number, lag(number) OVER (PARTITION BY customer_id ORDER BY period_start)
                AS before FROM invoices
        ) AS n WHERE number < before
    """,
    "charges not on their period's invoice": """
        SELECT count(*) FROM charges ch LEFT JOIN invoices i ON i.id = ch.invoice_id
        WHERE i.id IS NULL OR ch.occurred_at < i.period_start OR ch.occurred_at >= i.period_end
           OR NOT EXISTS (SELECT 1 FROM invoice_lines l WHERE l.charge_id = ch.id AND NOT l.void)
    """,
    "invoices whose totals differ from the sum of their lines": """
        SELECT count(*) FROM invoices i
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(amount), 0) AS s FROM invoice_lines l WHERE l.invoice_id = i.id
        ) AS l
        WHERE i.subtotal <> l.s OR i.tax <> round(l.s * i.tax_rate, 2)
           OR i.total <> i.subtotal + i.tax
    """,
}


def check(n: int) -> None:
    from sqlalchemy import text

    from worker.db import engine

    vacuum()  # plans for the checks' whole-table joins
    with engine().connect() as conn:
        invoices = conn.scalar(text("SELECT count(*) FROM invoices"))
        assert invoices == n, f"{invoices} invoices for {n} periods"
        for what, query in CHECKS.items():
            bad = conn.scalar(text(query))
            assert bad == 0, f"{bad} {what}"
        lines = conn.scalar(text("SELECT count(*) FROM invoice_lines"))
    print(
        f"checked: {n:,} invoices issued once, numbers 1..{n:,} in period order, "
        f"{lines:,} lines, every total equal to the SQL sum of its lines"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="closed periods (= invoices)")
    parser.add_argument("--charges", type=int, default=5, help="charges per period")
    parser.add_argument("--subscriptions", type=int, default=0, help="plans per customer")
    parser.add_argument("--batch", type=int, default=1000, help="periods per message")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--in-process", action="store_true", help="also time in-process")
    args = parser.parse_args()

    url = configure()
    from tests.support import create_database, drop_database
    from worker.db import reset_engine
    from worker.migrate import upgrade

    create_database(ADMIN_URL, DATABASE)
    try:
        upgrade(url)
        started = time.perf_counter()
        seed(args.n, args.charges, args.subscriptions)
        ids = period_ids()
        print(
            f"seeded {args.n:,} closed periods over 60 zones, {args.charges} charges and "
            f"{args.subscriptions} subscriptions each, in {time.perf_counter() - started:.1f}s"
        )
        floor = run_sql(FLOOR)
        print(
            f"floor (bare INSERT … SELECT invoices + UPDATE charges + INSERT … SELECT "
            f"lines): {floor:.1f}s = {args.n / floor:,.0f} invoices/s"
        )
        undo()
        if args.in_process:
            elapsed = in_process(ids, args.batch)
            check(args.n)
            undo()
            print(
                f"in-process generate_invoices (batches of {args.batch:,}): {elapsed:.1f}s = "
                f"{args.n / elapsed:,.0f} invoices/s, {elapsed / floor:.2f}x the floor"
            )
        elapsed, peaks = through_worker(ids, args.batch, args.concurrency)
        mib = ", ".join(f"{peak / 2**20:.0f}" for peak in peaks)
        print(
            f"through Redis + worker (-c {args.concurrency}, batches of {args.batch:,}): "
            f"{elapsed:.1f}s = {args.n / elapsed:,.0f} invoices/s, {elapsed / floor:.2f}x the "
            f"floor; peak memory per worker process (MiB): {mib}"
        )
        check(args.n)
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
