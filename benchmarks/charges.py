"""Charges per second through `billing charges load` (batches), beside a bare COPY.

    python benchmarks/charges.py [--n 200000] [--customers 5000] [--single 2000] [--workers 2]

Uses its own PostgreSQL database and Redis key prefix, as `benchmarks/intake.py` does (and
its settings). Seeds `--customers` customers (postpaid with a credit limit and prepaid with
funds, alternating, in several zones), writes a file of `--n` charges in random customer
order, then, in the same run:

1. before: `--single` single `billing.charges.record` messages drained by the worker
   (paused while queued, as in intake.py): today's one-message-per-charge rate;
2. after: `billing charges load FILE --wait --json` as a subprocess (the real command:
   read, sort by customer on disk, send batches, collect every line's result) against one
   `celery worker -c WORKERS`, timed end to end;
3. the floor: a bare `COPY` of the same rows into `charges` and `ledger_entries` (ids given,
   nothing judged), rolled back;

and prints the rates and the ratios, then checks every balance against an independent SQL
sum of its charges (and `billing balances check`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from intake import (  # noqa: E402
    ADMIN_URL,
    DATABASE_NAME,
    OWN_DATABASE,
    PREFIX,
    RUN_ID,
    configure_environment,
)

ZONES = ["America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Sydney", "UTC"]
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
FUNDS = Decimal("100000.00")


def seed(count: int) -> list[tuple[int, str]]:
    """`count` customers of one reseller, alternately postpaid and prepaid."""
    from tests.invoicing_factories import billing_customer
    from worker.db import unit_of_work

    with unit_of_work() as session:
        customers = [
            billing_customer(
                session,
                name=f"Bench {RUN_ID} {i}",
                billing_timezone=ZONES[i % len(ZONES)],
                **(
                    {"balance_control": "prepaid", "funds": FUNDS}
                    if i % 2
                    else {"credit_limit": Decimal("1000000.00")}
                ),
            )
            for i in range(count)
        ]
        return [(c.id, c.name) for c in customers]


def charges(customers: list[tuple[int, str]], n: int, prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(14)
    return [
        {
            "customer": customers[rng.randrange(len(customers))][1],
            "amount": f"{rng.randint(1, 500) / 100:.2f}",
            "currency": "USD",
            "occurred_at": (START + dt.timedelta(seconds=rng.randrange(86400 * 20))).isoformat(),
            "description": "Calls",
            "idempotency_key": f"{prefix}-{i}",
        }
        for i in range(n)
    ]


def copy_floor(lines: list[dict[str, Any]], ids: dict[str, int]) -> float:
    """Seconds for a bare COPY of the rows into charges + ledger_entries (rolled back)."""
    from worker.db import engine

    now = dt.datetime.now(dt.UTC).isoformat()
    base = 10**12
    charge_rows = io.StringIO()
    ledger_rows = io.StringIO()
    for i, line in enumerate(lines):
        charge_rows.write(
            f"{base + i}\t1\t{ids[line['customer']]}\t{line['amount']}\tUSD\t"
            f"{line['occurred_at']}\tCalls\tcopy-{i}\t{now}\n"
        )
        ledger_rows.write(
            f"{ids[line['customer']]}\tcharge\t{line['amount']}\t{line['amount']}\t"
            f"{base + i}\t{now}\n"
        )
    raw = engine().raw_connection()
    try:
        cursor = raw.cursor()
        started = time.perf_counter()
        with cursor.copy(
            "COPY charges (id, reseller_id, customer_id, amount, currency, occurred_at, "
            "description, idempotency_key, recorded_at) FROM STDIN"
        ) as copy:
            copy.write(charge_rows.getvalue())
        with cursor.copy(
            "COPY ledger_entries (customer_id, entry_type, amount, balance_after, charge_id, "
            "created_at) FROM STDIN"
        ) as copy:
            copy.write(ledger_rows.getvalue())
        seconds = time.perf_counter() - started
        raw.rollback()
    finally:
        raw.close()
    return seconds


def check_balances() -> int:
    """Customers whose balance differs from an independent SQL sum of their charges."""
    from sqlalchemy import text

    from worker.db import unit_of_work

    with unit_of_work() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM customers c LEFT JOIN ("
                    "  SELECT customer_id, sum(amount) AS used FROM charges GROUP BY customer_id"
                    ") s ON s.customer_id = c.id "
                    "WHERE c.balance <> CASE c.balance_control WHEN 'prepaid' "
                    "  THEN :funds - coalesce(s.used, 0) ELSE coalesce(s.used, 0) END"
                ),
                {"funds": FUNDS},
            ).scalar_one()
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="charges in the file")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--single", type=int, default=2000, help="single charges (before)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    args = parser.parse_args()

    configure_environment()
    from tests.support import WorkerProcess, create_database, drop_database

    if OWN_DATABASE:
        create_database(ADMIN_URL, DATABASE_NAME)
    worker = None
    folder = Path(tempfile.mkdtemp(prefix=f"billing-bench-{RUN_ID}-"))
    try:
        from tasks.charges import record_charge_task
        from worker.celery_app import app
        from worker.config import settings
        from worker.db import unit_of_work
        from worker.migrate import upgrade

        upgrade(settings().database_url)
        customers = seed(args.customers)
        ids = {name: cid for cid, name in customers}
        lines = charges(customers, args.n, "bulk")
        path = folder / "usage.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))

        worker = WorkerProcess(
            app, folder, name="bench-charges", queues=["charges"], concurrency=args.workers
        )
        worker.start()
        single_seconds, singles = drain_charges(
            app, worker.nodename, record_charge_task, charges(customers, args.single, "one")
        )
        assert all(v["status"] == "recorded" for v in singles), singles[:3]

        started = time.perf_counter()
        loaded = subprocess.run(
            [
                sys.executable,
                "-c",
                "from worker.cli import main; main()",
                "charges",
                "load",
                str(path),
                "--wait",
                "--json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        load_seconds = time.perf_counter() - started
        summary = json.loads(loaded.stdout)
        copy_seconds = copy_floor(lines, ids)

        single_rate = args.single / single_seconds
        load_rate = args.n / load_seconds
        copy_rate = args.n / copy_seconds
        print(
            f"{args.customers} customers, worker -c {args.workers} on queue charges, "
            f"broker {settings().broker_url}"
        )
        print(
            f"before: billing.charges.record  {args.single:8d} in {single_seconds:7.2f} s: "
            f"{single_rate:9.0f} charges/s"
        )
        print(
            f"after:  billing charges load    {args.n:8d} in {load_seconds:7.2f} s: "
            f"{load_rate:9.0f} charges/s ({summary['recorded']} recorded, "
            f"{summary['refused']} refused)"
        )
        print(
            f"floor:  COPY charges + ledger   {args.n:8d} in {copy_seconds:7.2f} s: "
            f"{copy_rate:9.0f} rows/s"
        )
        print(
            f"ratios: load / single {load_rate / single_rate:.1f}x; "
            f"load time / COPY time {load_seconds / copy_seconds:.1f}x"
        )
        assert summary["recorded"] + summary["refused"] == args.n, summary
        with unit_of_work() as session:
            from tasks.charges import balance_mismatches

            mismatches = balance_mismatches(session)
        wrong = check_balances()
        print(
            f"balances: {wrong} differ from the SQL sum of charges; "
            f"{len(mismatches)} differ from their ledger"
        )
    finally:
        if worker is not None:
            worker.stop()
        import redis

        client = redis.Redis.from_url(os.environ["BILLING_BROKER_URL"])
        for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
            client.delete(key)
        client.close()
        from worker.db import engine as app_engine
        from worker.db import reset_engine

        if app_engine.cache_info().currsize:
            app_engine().dispose()
        reset_engine()
        if OWN_DATABASE:
            drop_database(ADMIN_URL, DATABASE_NAME)


def drain_charges(app: Any, node: str, task: Any, payloads: list[Any]) -> tuple[float, list[Any]]:
    """`intake.drain` on the charges queue."""
    app.control.cancel_consumer("charges", destination=[node], reply=True)
    results = [task.apply_async(args=[p]) for p in payloads]
    started = dt.datetime.now(dt.UTC)
    app.control.add_consumer("charges", destination=[node], reply=True)
    values = [r.get(timeout=600) for r in results]
    finished = max(r.date_done for r in results)
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=dt.UTC)
    return (finished - started).total_seconds(), values


if __name__ == "__main__":
    main()
