"""Benchmark: the close and invoicing of N due customers cost the same among M customers.

    python benchmarks/due_work.py                                # N = 20,000 due among 100,000
    python benchmarks/due_work.py --n 1000000 --total 5000000 --invoice 50000

Two scratch PostgreSQL databases are seeded with SQL (`benchmarks/close.py`'s seeding):
first M customers of whom N are due (every M/N-th row; the others' current period ends
after the close's instant, as a customer base between two month-ends has it), then N
customers who are all due, with the same (rule, zone, creation date) profiles. In each, in
the same run and in fresh child processes:

1. the close (`tasks.closing.close_due`, the code the beat task runs, through
   `benchmarks/close.py --_close`), which also queues invoice messages to Redis under a
   scratch key prefix;
2. the invoicing of the periods it closed: `tasks.invoicing.generate_invoices` in process,
   one unit of work per 1,000 closed-period ids in id order (`--invoice K` invoices the first
   K of them, so a 1M run does not take hours; every one by default).

It prints both times for both databases and the ratio (M customers / N customers), the
aim being at most 1.2, and the plan of the close's due-customer claim, which must walk the
partial index `ix_customers_due` rather than scan the customers table. Disk: a 5M-customer
database takes about 3 GB; check `df -h` first. The scratch databases (`bench_close_…`)
and Redis keys (`bench-close-…`) are removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from close import ADMIN_URL, AS_OF, _delete_keys, create_scratch, seed

CLOSE = str(Path(__file__).with_name("close.py"))
INVOICE_BATCH = 1000


def run_invoicing(as_of: str, limit: int | None) -> None:
    """Child process: invoice the closed periods in id order, 1,000 a unit of work."""
    from sqlalchemy import select

    from models import ClosedPeriod
    from tasks.invoicing import generate_invoices
    from worker.db import unit_of_work

    now = dt.datetime.fromisoformat(as_of)
    with unit_of_work() as session:
        query = select(ClosedPeriod.id).order_by(ClosedPeriod.id)
        ids = list(session.scalars(query if limit is None else query.limit(limit)))
    started = time.perf_counter()
    issued = 0
    for offset in range(0, len(ids), INVOICE_BATCH):
        with unit_of_work() as session:
            result = generate_invoices(session, ids[offset : offset + INVOICE_BATCH], now=now)
            assert not result.failures, result.as_json()
            issued += result.issued
    print(json.dumps({"issued": issued, "seconds": time.perf_counter() - started}))


def claim_plan(engine: Any, batch: int) -> list[str]:
    """EXPLAIN of the close's claim of due customers, as the close sends it."""
    from sqlalchemy import text
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.orm import Session

    from tasks.closing import _claim_due, _plan_batch

    with Session(engine) as session:
        _plan_batch(session)  # as each close transaction does before its claim
        query = _claim_due(session, AS_OF, batch, set())
        sql = str(
            query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
        plan = [row[0] for row in session.execute(text(f"EXPLAIN {sql}"))]
        session.rollback()
    return plan


def measure(
    total: int, due: int, batch: int, invoice: int | None, show_plan: bool
) -> dict[str, Any]:
    """Seed `total` customers, `due` of them due, in a scratch database; close and invoice."""
    from sqlalchemy import create_engine, text

    from worker.migrate import upgrade

    database, url, prefix, env = create_scratch()
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        upgrade(url)
        engine = create_engine(url)
        started = time.perf_counter()
        seed(engine, due, AS_OF, total=total)
        seeded = time.perf_counter() - started
        plan = claim_plan(engine, batch)
        if show_plan:
            print(f"  claim plan ({total:,} customers):")
            for line in plan:
                print(f"    {line}")
        assert "Index Scan using ix_customers_due" in "\n".join(plan), "the claim scans"
        closing = _child(env, [CLOSE, "--_close", AS_OF.isoformat(), "--batch", str(batch)])
        assert closing["closed"] == due, closing
        invoicing = _child(
            env,
            [__file__, "--_invoice", AS_OF.isoformat()]
            + ([] if invoice is None else ["--invoice", str(invoice)]),
        )
        assert invoicing["issued"] == min(due, invoice or due), invoicing
        with engine.connect() as conn:
            still_due = conn.scalar(
                text("SELECT count(*) FROM customers WHERE current_period_end <= :now"),
                {"now": AS_OF},
            )
        assert still_due == 0, still_due
        engine.dispose()
        return {
            "seeded": seeded,
            "close": closing["seconds"],
            "batches": closing["batches"],
            "invoice": invoicing["seconds"],
            "issued": invoicing["issued"],
        }
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        _delete_keys(prefix)


def _child(env: dict[str, str], args: list[str]) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, *args], env=env, check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="due customers")
    parser.add_argument(
        "--total", type=int, help="customers in all, a multiple of --n (default 5 x --n)"
    )
    parser.add_argument("--batch", type=int, default=10_000, help="customers per close batch")
    parser.add_argument(
        "--invoice", type=int, help="invoice only the first K closed periods (default: all)"
    )
    parser.add_argument("--_invoice", dest="invoice_as_of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.invoice_as_of:
        run_invoicing(args.invoice_as_of, args.invoice)
        return
    total = args.total or 5 * args.n
    invoiced = args.n if args.invoice is None else min(args.invoice, args.n)
    print(f"{args.n:,} due among {total:,} customers, then {args.n:,} due among {args.n:,}")
    big = measure(total, args.n, args.batch, args.invoice, show_plan=True)
    small = measure(args.n, args.n, args.batch, args.invoice, show_plan=False)
    for label, m, figures in (("among", total, big), ("among", args.n, small)):
        print(
            f"{args.n:>10,} due {label} {m:>10,}: seeded {figures['seeded']:7.1f}s, "
            f"close {figures['close']:7.2f}s ({figures['batches']} batches), "
            f"invoicing {invoiced:,} periods {figures['invoice']:7.2f}s "
            f"({invoiced / figures['invoice']:,.0f}/s)"
        )
    both_big, both_small = big["close"] + big["invoice"], small["close"] + small["invoice"]
    print(
        f"ratio ({total:,} customers / {args.n:,}): close {big['close'] / small['close']:.2f}x, "
        f"invoicing {big['invoice'] / small['invoice']:.2f}x, "
        f"close + invoicing {both_big / both_small:.2f}x (aim: at most 1.2x)"
    )


if __name__ == "__main__":
    main()
