"""Benchmark: close N due billing periods, against a bare PostgreSQL INSERT … SELECT.

    python benchmarks/close.py                 # N = 1,000,000
    python benchmarks/close.py --n 200000 --batch 10000

Seeds N active customers in a scratch PostgreSQL database, spread over all six billing
rules, 60 timezones and 30 creation dates, each with exactly one period that has ended.
Then, in the same run:

1. the baseline: one bare `INSERT INTO closed_periods SELECT … FROM customers` of the same
   N rows (same table, same indexes), timed, then emptied again;
2. the real close (`tasks.closing.close_due`, the code the beat task runs) in a fresh child
   process, which also advances every customer and queues the invoice messages (to Redis,
   under a scratch key prefix); its peak resident memory is measured there;
3. for scale, a bare set-based `UPDATE` advancing the same customers (rolled back): the
   close must do both writes, so bare INSERT + UPDATE is the floor it is measured against.

It prints closed periods per second for both, their ratio and the close's peak memory.
The scratch database and Redis keys are removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
import uuid
import zoneinfo

ADMIN_URL = os.environ.get(
    "BILLING_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BILLING_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RULES = ("daily", "weekly", "semimonthly", "monthly", "monthly_anniversary", "30_days")
AS_OF = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
CREATED_DAYS = 30


def timezones(count: int = 60) -> list[str]:
    """`count` zones from every region of the tz database (deterministic), UTC included."""
    zones = sorted(
        z
        for z in zoneinfo.available_timezones()
        if "/" in z and not z.startswith(("Etc/", "SystemV/", "US/", "posix/", "right/"))
    )
    step = len(zones) / (count - 1)
    return ["UTC", *(zones[int(i * step)] for i in range(count - 1))]


Profile = tuple[str, str, dt.date, dt.datetime, dt.datetime]


def seed_profiles(as_of: dt.datetime, *, due: bool = True) -> list[Profile]:
    """(rule, tz, created, start, end): the last period [start, end) to end by as_of, or
    (`due=False`) the one that follows it, which ends after as_of."""
    from models.periods import first_period, next_period

    profiles = []
    for tz in timezones():
        for rule in RULES:
            for back in range(CREATED_DAYS):
                created = (as_of - dt.timedelta(days=40 + back)).date()
                period = first_period(rule, created, tz)
                following = next_period(rule, created, tz, period)
                while following.end <= as_of:
                    period, following = following, next_period(rule, created, tz, following)
                current = period if due else following
                profiles.append((rule, tz, created, _utc(current.start), _utc(current.end)))
    return profiles


# A daily customer imported with its creation date at the epoch: one period behind for
# every day since (issue 14).
FAR_BEHIND_CREATED = dt.date(1970, 1, 1)


def far_behind_profile() -> Profile:
    from models.periods import first_period

    first = first_period("daily", FAR_BEHIND_CREATED, "UTC")
    return ("daily", "UTC", FAR_BEHIND_CREATED, _utc(first.start), _utc(first.end))


def far_behind_periods(as_of: dt.datetime) -> int:
    """How many daily periods a far-behind customer has ended by as_of (UTC days)."""
    return (as_of.date() - FAR_BEHIND_CREATED).days


def _utc(instant: dt.datetime) -> dt.datetime:
    u = instant.astimezone(dt.UTC)
    return dt.datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, tzinfo=dt.UTC)


def seed(
    engine, n: int, as_of: dt.datetime, *, total: int | None = None, far_behind: int = 0
) -> int:  # type: ignore[no-untyped-def]
    """Seed `total` customers (default `n`), of whom `n` are due at as_of, spread evenly
    through the table (every total/n-th row), plus `far_behind` daily customers created on
    1970-01-01 that have never been closed. Returns the number of profiles."""
    from sqlalchemy import text

    total = n if total is None else total
    if n < 1 or total % n:
        raise ValueError(f"the customers in total ({total}) must be a multiple of the due ({n})")
    profiles = seed_profiles(as_of)
    later = seed_profiles(as_of, due=False) if total > n else []
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO resellers (id, name, name_key, display_name)"
                " VALUES (1, 'bench', 'bench', 'Bench');"
                "INSERT INTO business_models (id, reseller_id, name, name_key, service_type,"
                " description) VALUES (1, 1, 'Bench', 'bench', 'voice', '');"
                "INSERT INTO customer_classes (id, reseller_id, name, name_key, invoice_template,"
                " tax_name, tax_rate, notification_emails, custom_fields, reminder_days)"
                " VALUES (1, 1, 'Bench', 'bench', 'default.html', 'VAT', 0, '[]', '[]', '[]')"
            )
        )
        # Row g is due when g is a multiple of total/n; the others' period ends after as_of.
        _insert_customers(conn, profiles, later, count=total, every=total // n, first=0)
        if far_behind:
            _insert_customers(
                conn, [far_behind_profile()], [], count=far_behind, every=1, first=total
            )
    vacuum(engine)
    return len(profiles)


def _insert_customers(
    conn, due: list[Profile], later: list[Profile], *, count: int, every: int, first: int
) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    rows = [(True, *p) for p in due] + [(False, *p) for p in later]
    columns = [list(column) for column in zip(*rows, strict=True)]
    conn.execute(
        text(
            """
            WITH p AS (
                SELECT row_number() OVER (PARTITION BY due) - 1 AS k, * FROM unnest(
                    CAST(:due AS boolean[]), CAST(:rules AS text[]), CAST(:tzs AS text[]),
                    CAST(:created AS date[]), CAST(:starts AS timestamptz[]),
                    CAST(:ends AS timestamptz[])
                ) AS p(due, rule, tz, created, start_at, end_at)
            )
            INSERT INTO customers (
                reseller_id, name, name_key, business_model_id, customer_class_id,
                billing_period, billing_timezone, balance_control, currency, custom_data,
                created_at, created_local_date, current_period_start, current_period_end
            )
            SELECT 1, 'bench customer ' || g, 'bench customer ' || g, 1, 1, p.rule, p.tz,
                   'prepaid', 'USD', '{}',
                   p.created::timestamp AT TIME ZONE p.tz, p.created, p.start_at, p.end_at
            FROM generate_series(:first, :first + :count - 1) AS g
            JOIN p ON p.due = ((g - :first) % :every = 0) AND p.k = g % :profiles
            """
        ),
        {
            "due": columns[0],
            "rules": columns[1],
            "tzs": columns[2],
            "created": columns[3],
            "starts": columns[4],
            "ends": columns[5],
            "count": count,
            "every": every,
            "first": first,
            "profiles": len(due),
        },
    )


def vacuum(engine) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE customers"))
        conn.execute(text("VACUUM ANALYZE closed_periods"))
        conn.execute(text("CHECKPOINT"))


BARE_INSERT = """
INSERT INTO closed_periods (
    customer_id, period_start, period_end, start_date, end_date,
    billing_period, billing_timezone, closed_at, invoice_enqueued_at
)
SELECT id, current_period_start, current_period_end,
       (current_period_start AT TIME ZONE billing_timezone)::date,
       (current_period_end AT TIME ZONE billing_timezone)::date,
       billing_period, billing_timezone, now(), now()
FROM customers
"""


def bare_insert(engine) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    started = time.perf_counter()
    with engine.begin() as conn:
        rows = conn.execute(text(BARE_INSERT)).rowcount
    elapsed = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE closed_periods RESTART IDENTITY CASCADE"))
    vacuum(engine)
    return rows, elapsed


# The other half of the floor: advancing the same customers set-based, in physical order
# (rolled back; measured after the close so its dead rows cannot slow the close down).
BARE_UPDATE = """
UPDATE customers
SET current_period_start = current_period_end,
    current_period_end = current_period_end + interval '1 day'
"""


def bare_update(engine) -> float:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with engine.connect() as conn:
        started = time.perf_counter()
        conn.execute(text(BARE_UPDATE))
        elapsed = time.perf_counter() - started
        conn.rollback()
    return elapsed


def run_close(as_of: str, batch: int) -> None:
    """Child process: the close itself, as the task runs it; prints figures as JSON."""
    import psutil

    from tasks.closing import close_due
    from worker.db import unit_of_work

    now = dt.datetime.fromisoformat(as_of)
    baseline_rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    with unit_of_work() as session:
        summary = close_due(session, now=now, batch_size=batch)
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                **summary.as_json(),
                "seconds": elapsed,
                "peak_rss_mib": peak_kib / 1024,
                "rss_before_close_mib": baseline_rss / 2**20,
            }
        )
    )


def create_scratch() -> tuple[str, str, str, dict[str, str]]:
    """A new scratch database (`bench_close_…`): (its name, its URL, a scratch Redis key
    prefix, the environment that points the worker package at both)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    run = uuid.uuid4().hex[:8]
    database = f"bench_close_{run}"
    url = make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    prefix = f"bench-close-{run}:"
    env = {
        **os.environ,
        "BILLING_DATABASE_URL": url,
        "BILLING_BROKER_URL": REDIS_URL,
        "BILLING_RESULT_BACKEND": REDIS_URL,
        "BILLING_REDIS_KEY_PREFIX": prefix,
    }
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    return database, url, prefix, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="due customers to close")
    parser.add_argument("--batch", type=int, default=10_000, help="customers per transaction")
    parser.add_argument(
        "--far-behind",
        type=int,
        default=0,
        help="also seed this many daily customers created 1970-01-01, never closed",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--_close", dest="close_as_of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.close_as_of:
        run_close(args.close_as_of, args.batch)
        return

    from sqlalchemy import create_engine, text

    database, url, prefix, env = create_scratch()
    os.environ.update(env)
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        from worker.migrate import upgrade

        upgrade(url)
        engine = create_engine(url)
        print(f"seeding {args.n:,} due customers ...", flush=True)
        started = time.perf_counter()
        profiles = seed(engine, args.n, AS_OF, far_behind=args.far_behind)
        customers = args.n + args.far_behind
        expected = args.n + args.far_behind * far_behind_periods(AS_OF)
        with engine.connect() as conn:
            zones, rules = conn.execute(
                text(
                    "SELECT count(DISTINCT billing_timezone), count(DISTINCT billing_period)"
                    " FROM customers"
                )
            ).one()
        print(
            f"seeded in {time.perf_counter() - started:.1f}s: {profiles} (rule, zone, creation"
            f" date) profiles, {rules} rules, {zones} timezones, all due at {AS_OF.isoformat()}"
        )
        if args.far_behind:
            print(
                f"plus {args.far_behind:,} daily customer(s) created {FAR_BEHIND_CREATED}, "
                f"{far_behind_periods(AS_OF):,} periods behind each: {expected:,} periods due"
            )

        rows, bare_seconds = bare_insert(engine)
        assert rows == customers, rows
        child = subprocess.run(
            [sys.executable, __file__, "--_close", AS_OF.isoformat(), "--batch", str(args.batch)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        close = json.loads(child.stdout.strip().splitlines()[-1])
        with engine.connect() as conn:
            closed, distinct, still_due = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM closed_periods),"
                    " (SELECT count(DISTINCT customer_id) FROM closed_periods),"
                    " (SELECT count(*) FROM customers WHERE current_period_end <= :now)"
                ),
                {"now": AS_OF},
            ).one()
        update_seconds = bare_update(engine)
        engine.dispose()
        queued = _queued_invoice_ids(prefix)
        assert (closed, distinct) == (expected, customers), (closed, distinct)
        assert still_due == 0, still_due
        assert queued == expected, queued

        bare_rate = rows / bare_seconds
        close_rate = close["closed"] / close["seconds"]
        print(
            f"bare INSERT … SELECT : {rows:>10,} rows   {bare_seconds:8.2f}s  "
            f"{bare_rate:>10,.0f} rows/s"
        )
        print(
            f"close_due (batch {args.batch:,}): {close['closed']:>10,} closed "
            f"{close['seconds']:8.2f}s  "
            f"{close_rate:>10,.0f} closed/s  ({close['batches']} batches, "
            f"{close['period_computations']:,} period computations, "
            f"{close['invoice_messages']:,} invoice messages)"
        )
        print(f"ratio (close time / bare insert time): {close['seconds'] / bare_seconds:.2f}x")
        floor = bare_seconds + update_seconds
        print(
            f"for scale: bare UPDATE advancing the same {rows:,} customers {update_seconds:.2f}s;"
            f" bare INSERT + UPDATE {floor:.2f}s = {floor / bare_seconds:.2f}x the insert;"
            f" close / (INSERT + UPDATE) = {close['seconds'] / floor:.2f}x"
        )
        print(
            f"peak memory of the closing process: {close['peak_rss_mib']:.0f} MiB "
            f"(of which {close['rss_before_close_mib']:.0f} MiB before the close started)"
        )
        print(
            f"check: {closed:,} closed periods for {distinct:,} customers, "
            f"none still due, {queued:,} closed-period ids in the invoicing queue"
        )
    finally:
        if args.keep:
            print("kept", url)
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        _delete_keys(prefix)


def _queued_invoice_ids(prefix: str) -> int:
    """How many closed-period ids the invoice messages waiting in Redis carry."""
    import base64

    import redis

    client = redis.Redis.from_url(REDIS_URL)
    total = 0
    for raw in client.lrange(f"{prefix}invoicing", 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        total += len(body[0][0])
    client.close()
    return total


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


if __name__ == "__main__":
    main()
