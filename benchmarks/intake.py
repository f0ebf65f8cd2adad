"""Customers created per second through the real broker and workers, beside a no-op task.

    python benchmarks/intake.py [--n 2000] [--workers 2] [--import-n 100000] [--chunk-size 1000]

Creates its own PostgreSQL database (on BILLING_BENCH_ADMIN_URL, default the local server)
unless BILLING_DATABASE_URL is set, and uses its own Redis key prefix on BILLING_BROKER_URL
(default redis://127.0.0.1:6379/0), so it never touches another run's rows or queues. It
loads examples/catalog.yaml, starts `--workers` worker processes (separate `celery worker`
instances with one pool process each, consuming the intake queue), and for each task:

1. stops the workers consuming (`cancel_consumer`), queues N messages,
2. resumes consuming (`add_consumer`) and waits for every result,
3. reports N / (last result's `date_done` - the moment consuming resumed).

So the figures are the workers' drain rate, not the producer's send rate: `billing.ping`
(tasks/health.py, a task that does nothing) first, then N `billing.customers.create` jobs
with distinct names across rules, timezones and prepaid/postpaid (the one-message-per-
customer "before"); then `--import-n` customers of the same kinds as
`billing.customers.import` chunks of `--chunk-size` lines (the bulk path, issue 14); then,
in the same database, the floor: one bare set-based `INSERT … SELECT` of as many customer
rows (with their period columns) and the prepaid ledger openings. Ratios are printed
between figures of this one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUN_ID = uuid.uuid4().hex[:8]
ADMIN_URL = os.environ.get(
    "BILLING_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
OWN_DATABASE = not os.environ.get("BILLING_DATABASE_URL")
DATABASE_NAME = f"billing_bench_{RUN_ID}"
PREFIX = f"billing-bench-{RUN_ID}:"


def configure_environment() -> None:
    """Settings are read once, at first use: set them before importing the worker."""
    from sqlalchemy.engine import make_url

    if OWN_DATABASE:
        url = make_url(ADMIN_URL).set(database=DATABASE_NAME)
        os.environ["BILLING_DATABASE_URL"] = url.render_as_string(hide_password=False)
    os.environ.setdefault("BILLING_BROKER_URL", "redis://127.0.0.1:6379/0")
    os.environ["BILLING_REDIS_KEY_PREFIX"] = PREFIX
    os.environ["BILLING_DATA_DIR"] = tempfile.mkdtemp(prefix=f"billing-bench-{RUN_ID}-")


RULES = ["monthly", "monthly_anniversary", "30_days", "weekly", "semimonthly", "daily"]
ZONES = ["America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Sydney", "UTC"]


def customer(i: int, kind: str = "Customer") -> dict[str, Any]:
    body: dict[str, Any] = {
        "reseller": "acme" if i % 2 else "northwind",
        "name": f"Bench {RUN_ID} {kind} {i}",
        "business_model": "Hosted IP PBX",
        "customer_class": "Business",
        "billing_period": RULES[i % len(RULES)],
        "billing_timezone": ZONES[i % len(ZONES)],
        "currency": "USD",
        "custom_data": {"tax_code": f"T{i}", "seats": i % 50},
        "idempotency_key": f"bench-{RUN_ID}-{kind}-{i}",
    }
    if i % 3 == 0:
        body.update(balance_control="prepaid", available_funds="100.00")
    else:
        body.update(balance_control="postpaid", credit_limit="500.00")
    return body


def remove_bench_customers() -> None:
    """On a database we did not create, delete only this run's customers (and ledger)."""
    from sqlalchemy import delete, select

    from models import Customer, LedgerEntry
    from worker.db import unit_of_work

    with unit_of_work() as session:
        ours = select(Customer.id).where(Customer.name.like(f"Bench {RUN_ID} %"))
        session.execute(delete(LedgerEntry).where(LedgerEntry.customer_id.in_(ours)))
        session.execute(delete(Customer).where(Customer.name.like(f"Bench {RUN_ID} %")))


def bare_insert(n: int) -> float:
    """Seconds for one set-based INSERT … SELECT of n customer rows like the import's (the
    same columns, period instants, custom data), plus the prepaid third's ledger rows."""
    from sqlalchemy import text

    from worker.db import engine

    rules = "ARRAY[" + ",".join(f"'{r}'" for r in RULES) + "]"
    zones = "ARRAY[" + ",".join(f"'{z}'" for z in ZONES) + "]"
    customers = f"""
        INSERT INTO customers (reseller_id, name, name_key, business_model_id,
            customer_class_id, billing_period, billing_timezone, balance_control, currency,
            credit_limit, balance, blocked, status, custom_data, created_at,
            created_local_date, current_period_start, current_period_end, intake_key)
        SELECT bm.reseller_id, 'Bench {RUN_ID} Floor ' || i, 'bench {RUN_ID} floor ' || i,
            bm.id, cc.id, ({rules})[i % 6 + 1], ({zones})[i % 5 + 1],
            CASE WHEN i % 3 = 0 THEN 'prepaid' ELSE 'postpaid' END, 'USD',
            CASE WHEN i % 3 = 0 THEN NULL ELSE 500 END,
            CASE WHEN i % 3 = 0 THEN 100 ELSE 0 END, false, 'active',
            json_build_object('tax_code', 'T' || i, 'seats', i % 50),
            now(), current_date, date_trunc('month', now()),
            date_trunc('month', now()) + interval '1 month', 'floor-{RUN_ID}-' || i
        FROM generate_series(0, :n - 1) AS i
        JOIN business_models bm ON bm.name = 'Hosted IP PBX'
        JOIN resellers r ON r.id = bm.reseller_id
            AND r.name = CASE WHEN i % 2 = 1 THEN 'acme' ELSE 'northwind' END
        JOIN customer_classes cc ON cc.reseller_id = r.id AND cc.name = 'Business'
    """
    ledger = f"""
        INSERT INTO ledger_entries (customer_id, entry_type, amount, balance_after, created_at)
        SELECT id, 'opening', balance, balance, created_at FROM customers
        WHERE intake_key LIKE 'floor-{RUN_ID}-%' AND balance_control = 'prepaid'
    """
    with engine().begin() as connection:
        started = time.perf_counter()
        connection.execute(text(customers), {"n": n})
        connection.execute(text(ledger))
        return time.perf_counter() - started


def drain(app: Any, nodes: list[str], task: Any, payloads: list[Any]) -> tuple[float, list[Any]]:
    """Queue every payload while the workers are paused, then time how fast they drain."""
    app.control.cancel_consumer("intake", destination=nodes, reply=True)
    results = [task.apply_async(args=[p]) for p in payloads]
    started = dt.datetime.now(dt.UTC)
    app.control.add_consumer("intake", destination=nodes, reply=True)
    values = [r.get(timeout=600) for r in results]
    finished = max(r.date_done for r in results)
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=dt.UTC)
    return (finished - started).total_seconds(), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="jobs of each kind (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--import-n", type=int, default=100_000, help="customers imported in chunks (100000)"
    )
    parser.add_argument("--chunk-size", type=int, default=1000, help="lines a chunk (1000)")
    args = parser.parse_args()

    configure_environment()
    from tests.support import WorkerProcess, create_database, drop_database

    if OWN_DATABASE:
        create_database(ADMIN_URL, DATABASE_NAME)
    workers: list[WorkerProcess] = []
    log_dir = Path(tempfile.mkdtemp(prefix=f"billing-bench-logs-{RUN_ID}-"))
    try:
        from models.catalog_file import parse_catalog
        from tasks.catalog import load_catalog
        from tasks.health import ping
        from tasks.intake import create_customer_task
        from tasks.intake_batch import import_customers_task
        from worker.celery_app import app
        from worker.config import settings
        from worker.db import engine, unit_of_work
        from worker.migrate import upgrade

        upgrade(settings().database_url)
        with unit_of_work() as session:
            load_catalog(session, parse_catalog((REPO / "examples" / "catalog.yaml").read_text()))
        for k in range(args.workers):
            worker = WorkerProcess(app, log_dir, name=f"bench{k}", queues=["intake"], concurrency=1)
            worker.start()
            workers.append(worker)
        nodes = [w.nodename for w in workers]
        # Warm up: imports, connection pools, the catalog's first reads.
        for r in [ping.delay(i) for i in range(50)]:
            r.get(timeout=60)
        warm = drain(app, nodes, create_customer_task, [customer(-i) for i in range(1, 21)])[1]
        assert all(v["status"] == "created" for v in warm), warm

        ping_seconds, pongs = drain(app, nodes, ping, list(range(args.n)))
        assert all(v["status"] == "pong" for v in pongs)
        intake_seconds, outcomes = drain(
            app, nodes, create_customer_task, [customer(i) for i in range(args.n)]
        )
        created = sum(1 for v in outcomes if v["status"] == "created" and not v.get("replayed"))
        assert created == args.n, [v for v in outcomes if v["status"] != "created"][:3]

        size = args.chunk_size
        warm_chunk = [
            [[i, customer(i, "Warm")] for i in range(size * k, size * (k + 1))] for k in range(2)
        ]
        drain(app, nodes, import_customers_task, warm_chunk)
        chunks = [
            [[i + 1, customer(i, "Import")] for i in range(start, min(start + size, args.import_n))]
            for start in range(0, args.import_n, size)
        ]
        import_seconds, chunk_outcomes = drain(app, nodes, import_customers_task, chunks)
        imported = sum(
            1
            for chunk in chunk_outcomes
            for v in chunk["results"]
            if v["status"] == "created" and not v.get("replayed")
        )
        assert imported == args.import_n, chunk_outcomes[0]
        floor_seconds = bare_insert(args.import_n)

        ping_rate = args.n / ping_seconds
        import_rate = args.import_n / import_seconds
        floor_rate = args.import_n / floor_seconds
        intake_rate = args.n / intake_seconds
        print(
            f"workers: {args.workers} processes (celery worker -c 1 each, prefork), "
            f"queue intake, broker {settings().broker_url}, database "
            f"{engine().url.render_as_string(hide_password=True)}"
        )
        print(
            f"billing.ping             {args.n:5d} jobs in {ping_seconds:7.2f} s: "
            f"{ping_rate:8.1f} /s"
        )
        print(
            f"billing.customers.create {args.n:5d} jobs in {intake_seconds:7.2f} s: "
            f"{intake_rate:8.1f} /s ({created} customers created)"
        )
        print(
            f"billing.customers.import {args.import_n:7d} customers in {len(chunks)} chunks of "
            f"{size} in {import_seconds:7.2f} s: {import_rate:8.1f} customers/s"
        )
        print(
            f"bare INSERT … SELECT     {args.import_n:7d} customers + ledger in "
            f"{floor_seconds:7.2f} s: {floor_rate:8.1f} customers/s"
        )
        print(f"ratio intake / no-op: {intake_rate / ping_rate:.2f}")
        print(
            f"ratio import customers/s / no-op messages/s: {import_rate / ping_rate:.2f}; "
            f"import / per-message intake: {import_rate / intake_rate:.1f}x; "
            f"import / bare insert: {import_rate / floor_rate:.3f} "
            f"(bare insert is {floor_seconds / import_seconds:.3f} of the import's time)"
        )
        if not OWN_DATABASE:
            remove_bench_customers()
    finally:
        for worker in workers:
            worker.stop()
        try:
            import redis

            client = redis.Redis.from_url(os.environ["BILLING_BROKER_URL"])
            for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
                client.delete(key)
            client.close()
        finally:
            from worker.db import reset_engine

            if OWN_DATABASE:
                from worker.db import engine as app_engine

                if app_engine.cache_info().currsize:
                    app_engine().dispose()
                reset_engine()
                drop_database(ADMIN_URL, DATABASE_NAME)


if __name__ == "__main__":
    main()
