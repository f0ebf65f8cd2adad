"""How many billing periods per second the period engine computes.

    python benchmarks/periods.py [--n 2000] [--repeat 5] [--seed 1]

(a) walks: first_period then next_period, n periods per rule and zone;
(b) period_containing for n random instants (1990-2100) per rule and zone.

Each is timed cold (the engine's day-start caches cleared first, as for a fresh worker) and
warm (the same work again with the caches full), and beside a baseline that does only the
standard library's date-to-instant conversion,
``datetime.combine(d, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)``, for the same boundary
dates. The ratio cold / baseline is what the rules, the exact day-start handling and pendulum
objects cost on top of the bare conversion.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import platform
import random
import time
from collections.abc import Callable
from importlib.metadata import version
from zoneinfo import ZoneInfo

from models import periods
from models.periods import (
    BillingPeriod,
    first_period,
    next_boundary_date,
    next_period,
    period_containing,
    period_start_date_containing,
)

ZONES = (
    "UTC",
    "America/New_York",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "America/Havana",
    "America/Santiago",
    "Pacific/Apia",
)
UTC = dt.UTC
MIDNIGHT = dt.time(0)


def clear_engine_caches() -> None:
    # Private caches, cleared so "cold" means a fresh process would do this much work.
    periods._day_start_ts.cache_clear()
    periods._day_start_dt.cache_clear()


def best_of(repeat: int, run: Callable[[], None], cold: bool) -> float:
    best = float("inf")
    for _ in range(repeat):
        if cold:
            clear_engine_caches()
        gc.collect()
        gc.disable()
        try:
            began = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - began)
        finally:
            gc.enable()
    return best


def stdlib_convert(dates: list[tuple[str, list[dt.date]]]) -> None:
    for tz, sequence in dates:
        for d in sequence:
            dt.datetime.combine(d, MIDNIGHT, tzinfo=ZoneInfo(tz)).astimezone(UTC)


Job = tuple[BillingPeriod, str, dt.date]


def walk_jobs(rule: BillingPeriod, rng: random.Random) -> list[Job]:
    return [
        (rule, tz, dt.date(1990, 1, 1) + dt.timedelta(days=rng.randrange(25_000))) for tz in ZONES
    ]


def run_walks(jobs: list[Job], n: int) -> None:
    for rule, tz, created in jobs:
        period = first_period(rule, created, tz)
        for _ in range(n - 1):
            period = next_period(rule, created, tz, period)


def walk_dates(jobs: list[Job], n: int) -> list[tuple[str, list[dt.date]]]:
    """The n + 1 boundary dates each walk converts (start of the first, then each end)."""
    out = []
    for rule, tz, created in jobs:
        sequence = [created]
        for _ in range(n):
            sequence.append(next_boundary_date(rule, created, sequence[-1]))
        out.append((tz, sequence))
    return out


Lookup = tuple[BillingPeriod, str, dt.date, list[dt.datetime]]


def containing_jobs(rule: BillingPeriod, n: int, rng: random.Random) -> list[Lookup]:
    jobs = []
    horizon = dt.datetime(2100, 12, 31, tzinfo=UTC).timestamp()
    for tz in ZONES:
        created = dt.date(1990, 1, 1) + dt.timedelta(days=rng.randrange(3650))
        first = first_period(rule, created, tz).start.timestamp()
        instants = [dt.datetime.fromtimestamp(rng.uniform(first, horizon), UTC) for _ in range(n)]
        jobs.append((rule, tz, created, instants))
    return jobs


def run_containing(jobs: list[Lookup]) -> None:
    for rule, tz, created, instants in jobs:
        for at in instants:
            period_containing(rule, created, tz, at)


def containing_dates(jobs: list[Lookup]) -> list[tuple[str, list[dt.date]]]:
    """Start and end boundary dates of each looked-up period, in lookup order."""
    out = []
    for rule, tz, created, instants in jobs:
        zone = ZoneInfo(tz)
        sequence = []
        for at in instants:
            local = max(at.astimezone(zone).date(), created)
            start = period_start_date_containing(rule, created, local)
            sequence += [start, next_boundary_date(rule, created, start)]
        out.append((tz, sequence))
    return out


def row(name: str, count: int, cold: float, warm: float, base: float) -> str:
    return (
        f"{name:<20} {count:>8} {count / cold:>13,.0f} {count / warm:>13,.0f}"
        f" {count / base:>15,.0f} {cold / base:>9.1f}x"
    )


HEADER = (
    f"{'rule':<20} {'periods':>8} {'engine cold/s':>13} {'engine warm/s':>13}"
    f" {'zoneinfo only/s':>15} {'cold cost':>10}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="periods or lookups per rule per zone")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best is reported")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    print(
        f"period engine benchmark: Python {platform.python_version()}, pendulum "
        f"{version('pendulum')}, {len(ZONES)} zones, n={args.n} per rule per zone, "
        f"best of {args.repeat}"
    )
    print("zones: " + ", ".join(ZONES))

    sections = (
        ("(a) walks: first_period, then next_period", "walks"),
        ("(b) period_containing at random instants 1990-2100", "containing"),
    )
    for title, kind in sections:
        print(f"\n{title}")
        print(HEADER)
        totals = [0, 0.0, 0.0, 0.0]
        for rule in BillingPeriod:
            engine: Callable[[], None]
            if kind == "walks":
                jobs = walk_jobs(rule, rng)
                dates = walk_dates(jobs, args.n)
                engine = functools.partial(run_walks, jobs, args.n)
            else:
                lookups = containing_jobs(rule, args.n, rng)
                dates = containing_dates(lookups)
                engine = functools.partial(run_containing, lookups)
            count = args.n * len(ZONES)
            cold = best_of(args.repeat, engine, cold=True)
            warm = best_of(args.repeat, engine, cold=False)
            base = best_of(args.repeat, functools.partial(stdlib_convert, dates), cold=False)
            print(row(rule.value, count, cold, warm, base))
            for i, value in enumerate((count, cold, warm, base)):
                totals[i] += value
        print(row("all rules", int(totals[0]), totals[1], totals[2], totals[3]))


if __name__ == "__main__":
    main()
