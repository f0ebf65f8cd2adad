"""Day starts and periods against the real tz database, as literal UTC instants.

The midnight-transition days are found by scanning the installed database
(``find_midnight_transitions``) rather than assumed, and a few of them are also pinned as
literal rows that were checked by hand against the tz source.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pendulum
import pytest

from models.periods import (
    Period,
    day_start,
    first_period,
    next_period,
    period_containing,
)
from tests.unit.test_periods_oracle import (
    MIDNIGHT_ZONES,
    MidnightTransition,
    all_midnight_transitions,
    find_midnight_transitions,
    instant,
    oracle_day_start,
    ts,
    utc,
)

D = dt.date
ONE_US = dt.timedelta(microseconds=1)


def seconds(value: dt.datetime) -> int:
    us = instant(value)
    assert us % 1_000_000 == 0, "boundaries are whole seconds"
    return us // 1_000_000


def span(period: Period) -> tuple[dt.datetime, dt.datetime]:
    return utc(seconds(period.start)), utc(seconds(period.end))


def walk(rule: str, created: dt.date, tz: str, count: int) -> list[Period]:
    periods = [first_period(rule, created, tz)]
    while len(periods) < count:
        periods.append(next_period(rule, created, tz, periods[-1]))
    return periods


# (zone, local date, UTC instant the day starts at, why the row is interesting)
DAY_STARTS = [
    ("UTC", D(2024, 2, 29), ts(2024, 2, 29), "leap day"),
    ("America/New_York", D(2024, 3, 10), ts(2024, 3, 10, 5), "DST starts at 02:00, midnight EST"),
    ("America/New_York", D(2024, 3, 11), ts(2024, 3, 11, 4), "first EDT midnight"),
    ("America/New_York", D(2024, 11, 3), ts(2024, 11, 3, 4), "DST ends at 02:00, midnight EDT"),
    ("America/New_York", D(2024, 11, 4), ts(2024, 11, 4, 5), "first EST midnight"),
    ("Europe/London", D(2024, 3, 31), ts(2024, 3, 31), "BST starts at 01:00 GMT"),
    ("Europe/London", D(2024, 4, 1), ts(2024, 3, 31, 23), "first BST midnight"),
    ("Europe/London", D(2024, 10, 27), ts(2024, 10, 26, 23), "BST ends at 02:00"),
    ("Europe/London", D(2024, 10, 28), ts(2024, 10, 28), "first GMT midnight"),
    ("Asia/Kolkata", D(2024, 1, 1), ts(2023, 12, 31, 18, 30), "+05:30, no DST"),
    ("Asia/Kolkata", D(2024, 7, 1), ts(2024, 6, 30, 18, 30), "+05:30, no DST"),
    ("Asia/Kathmandu", D(2024, 1, 1), ts(2023, 12, 31, 18, 15), "+05:45"),
    ("Asia/Kathmandu", D(2024, 7, 1), ts(2024, 6, 30, 18, 15), "+05:45"),
    ("Pacific/Chatham", D(2024, 1, 1), ts(2023, 12, 31, 10, 15), "+13:45 summer"),
    ("Pacific/Chatham", D(2024, 4, 7), ts(2024, 4, 6, 10, 15), "summer time ends 03:45->02:45"),
    ("Pacific/Chatham", D(2024, 4, 8), ts(2024, 4, 7, 11, 15), "first +12:45 midnight"),
    ("Pacific/Chatham", D(2024, 9, 29), ts(2024, 9, 28, 11, 15), "summer time starts 02:45->03:45"),
    ("Pacific/Chatham", D(2024, 9, 30), ts(2024, 9, 29, 10, 15), "first +13:45 midnight"),
    ("Australia/Lord_Howe", D(2024, 4, 7), ts(2024, 4, 6, 13), "+11, 30-minute DST ends 02:00"),
    ("Australia/Lord_Howe", D(2024, 4, 8), ts(2024, 4, 7, 13, 30), "first +10:30 midnight"),
    ("Australia/Lord_Howe", D(2024, 10, 6), ts(2024, 10, 5, 13, 30), "DST starts 02:00->02:30"),
    ("Australia/Lord_Howe", D(2024, 10, 7), ts(2024, 10, 6, 13), "first +11 midnight"),
    # Midnight skipped (spring forward at 00:00): the day starts at the transition, shown 01:00.
    ("America/Santiago", D(2024, 9, 8), ts(2024, 9, 8, 4), "00:00 -04 -> 01:00 -03"),
    ("America/Havana", D(2024, 3, 10), ts(2024, 3, 10, 5), "00:00 CST -> 01:00 CDT"),
    ("America/Asuncion", D(2023, 10, 1), ts(2023, 10, 1, 4), "00:00 -04 -> 01:00 -03"),
    ("America/Sao_Paulo", D(2018, 11, 4), ts(2018, 11, 4, 3), "00:00 -03 -> 01:00 -02"),
    ("Asia/Beirut", D(2024, 3, 31), ts(2024, 3, 30, 22), "00:00 EET -> 01:00 EEST"),
    ("Africa/Cairo", D(2024, 4, 26), ts(2024, 4, 25, 22), "00:00 EET -> 01:00 EEST"),
    ("Atlantic/Azores", D(2024, 3, 31), ts(2024, 3, 31, 1), "00:00 -01 -> 01:00 +00"),
    # Midnight repeated (fall back 01:00 -> 00:00): the first midnight.
    ("America/Havana", D(2024, 11, 3), ts(2024, 11, 3, 4), "first of 00:00 CDT / 00:00 CST"),
    ("Atlantic/Azores", D(2024, 10, 27), ts(2024, 10, 27), "first of 00:00 +00 / 00:00 -01"),
    ("Asia/Gaza", D(2021, 10, 29), ts(2021, 10, 28, 21), "first of 00:00 EEST / 00:00 EET"),
    # Fall back across midnight (00:01 NDT -> 23:01 NST the previous day): the first midnight.
    ("America/St_Johns", D(2010, 11, 7), ts(2010, 11, 7, 2, 30), "00:00 NDT, before 00:01->23:01"),
    ("America/St_Johns", D(2010, 11, 8), ts(2010, 11, 8, 3, 30), "first NST midnight"),
    # Whole days skipped when the zone crossed the date line: they share the next day's start.
    ("Pacific/Apia", D(2011, 12, 29), ts(2011, 12, 29, 10), "last -10 midnight"),
    ("Pacific/Apia", D(2011, 12, 30), ts(2011, 12, 30, 10), "skipped: starts with Dec 31"),
    ("Pacific/Apia", D(2011, 12, 31), ts(2011, 12, 30, 10), "first +14 midnight"),
    ("Pacific/Kwajalein", D(1993, 8, 21), ts(1993, 8, 21, 12), "skipped: starts with Aug 22"),
    # A gap that spans midnight (23:30 EST -> 00:30 EDT, 1919): the day starts at 00:30.
    ("America/Toronto", D(1919, 3, 31), ts(1919, 3, 31, 4, 30), "23:30 -> 00:30"),
]


@pytest.mark.parametrize(("tz", "day", "expected", "why"), DAY_STARTS)
def test_day_start_literal_utc_instants(tz: str, day: dt.date, expected: int, why: str) -> None:
    """day_start returns the hand-checked UTC instant for each zone and date in the table."""
    assert utc(seconds(day_start(day, tz))) == utc(expected), why


@pytest.mark.parametrize(("tz", "day", "expected", "why"), DAY_STARTS)
def test_literal_table_agrees_with_oracle(tz: str, day: dt.date, expected: int, why: str) -> None:
    """Each literal row also matches the brute-force oracle, so the table has no typos."""
    assert utc(oracle_day_start(day, tz)) == utc(expected), why


def test_day_start_reports_local_time_and_fold_of_the_first_midnight() -> None:
    """Where midnight repeats, day_start is the first 00:00 (fold=0, the earlier offset)."""
    start = day_start(D(2024, 11, 3), "America/Havana")
    assert (start.isoformat(), start.fold) == ("2024-11-03T00:00:00-04:00", 0)
    skipped = day_start(D(2024, 9, 8), "America/Santiago")
    assert skipped.isoformat() == "2024-09-08T01:00:00-03:00"
    toronto = day_start(D(1919, 3, 31), "America/Toronto")
    assert toronto.isoformat() == "1919-03-31T00:30:00-04:00"


# --------------------------------------------------------------------------------------------
# Days found by scanning the tz database


def test_scan_finds_every_kind_of_midnight_transition() -> None:
    """Scanning 1990-2100 finds skipped, repeated, across-midnight and whole-day transitions."""
    kinds = {t.kind for t in all_midnight_transitions()}
    assert kinds >= {
        "skipped-at-midnight",
        "repeated-at-midnight",
        "repeated-across-midnight",
        "skipped-days",
    }
    across = find_midnight_transitions("America/Toronto", 1919, 1919)
    assert [(t.kind, t.days) for t in across] == [("gap-across-midnight", [D(1919, 3, 31)])]


def _expected_start(transition: MidnightTransition, day: dt.date) -> int:
    """Where the day must start, read off the transition alone."""
    if transition.skipped:
        return transition.at
    midnight = int(dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC).timestamp())
    return midnight - transition.offset_before


@pytest.mark.parametrize("tz", MIDNIGHT_ZONES)
def test_day_start_on_every_midnight_transition_found(tz: str) -> None:
    """On each scanned day and its neighbours, day_start matches the transition and the oracle."""
    found = find_midnight_transitions(tz)
    assert found, f"expected {tz} to change clocks at midnight in 1990-2100"
    for transition in found:
        for day in transition.days:
            assert seconds(day_start(day, tz)) == _expected_start(transition, day), transition
        for day in (
            transition.days[0] - dt.timedelta(days=1),
            *transition.days,
            transition.days[-1] + dt.timedelta(days=1),
        ):
            assert seconds(day_start(day, tz)) == oracle_day_start(day, tz), (transition, day)


@pytest.mark.parametrize("tz", MIDNIGHT_ZONES)
def test_daily_periods_tile_across_every_midnight_transition_found(tz: str) -> None:
    """Daily periods walked across each scanned transition are non-empty and tile exactly."""
    for transition in find_midnight_transitions(tz):
        created = transition.days[0] - dt.timedelta(days=2)
        periods = walk("daily", created, tz, 5)
        for period, following in itertools.pairwise(periods):
            assert seconds(period.start) < seconds(period.end)
            assert seconds(following.start) == seconds(period.end)
        for period in periods:
            middle = utc((seconds(period.start) + seconds(period.end)) // 2)
            assert span(period_containing("daily", created, tz, middle)) == span(period)


# --------------------------------------------------------------------------------------------
# Periods on the awkward days, as literal UTC instants


def test_fall_back_across_midnight_instant_belongs_to_the_new_day() -> None:
    """03:00Z on 2010-11-07 shows 23:30 on Nov 6 in St John's but is in the Nov 7 daily period."""
    tz, created = "America/St_Johns", D(2010, 11, 1)
    at = dt.datetime(2010, 11, 7, 3, 0, tzinfo=dt.UTC)
    assert at.astimezone(pendulum.timezone(tz)).date() == D(2010, 11, 6)
    period = period_containing("daily", created, tz, at)
    assert span(period) == (utc(ts(2010, 11, 7, 2, 30)), utc(ts(2010, 11, 8, 3, 30)))
    assert period.contains(at)
    previous = period_containing("daily", created, tz, at - dt.timedelta(hours=1))
    assert span(previous) == (utc(ts(2010, 11, 6, 2, 30)), utc(ts(2010, 11, 7, 2, 30)))
    assert span(next_period("daily", created, tz, previous)) == span(period)


def test_contains_compares_instants_not_wall_clock() -> None:
    """Period.contains is right where same-zone wall-clock comparison is wrong (St John's 2010)."""
    tz = "America/St_Johns"
    nov6 = first_period("daily", D(2010, 11, 6), tz)
    repeated = dt.datetime(2010, 11, 6, 23, 30, fold=1, tzinfo=nov6.start.tzinfo)  # 03:00Z
    assert nov6.start <= repeated < nov6.end  # wall clock says inside: the trap
    assert not nov6.contains(repeated)
    assert next_period("daily", D(2010, 11, 6), tz, nov6).contains(repeated)


def test_repeated_midnight_day_lasts_25_hours() -> None:
    """Havana's 2024-11-03 runs from the first midnight (04:00Z) to 05:00Z on Nov 4."""
    periods = walk("daily", D(2024, 11, 2), "America/Havana", 2)
    assert [span(p) for p in periods] == [
        (utc(ts(2024, 11, 2, 4)), utc(ts(2024, 11, 3, 4))),
        (utc(ts(2024, 11, 3, 4)), utc(ts(2024, 11, 4, 5))),
    ]


def test_skipped_midnight_day_lasts_23_hours() -> None:
    """Santiago's 2024-09-08 starts at the 04:00Z transition and lasts 23 hours."""
    periods = walk("daily", D(2024, 9, 7), "America/Santiago", 2)
    assert [span(p) for p in periods] == [
        (utc(ts(2024, 9, 7, 4)), utc(ts(2024, 9, 8, 4))),
        (utc(ts(2024, 9, 8, 4)), utc(ts(2024, 9, 9, 3))),
    ]


def test_skipped_day_makes_no_empty_period() -> None:
    """Apia skipped 2011-12-30: the daily walk goes from Dec 29 straight to Dec 31."""
    periods = walk("daily", D(2011, 12, 28), "Pacific/Apia", 4)
    assert [span(p) for p in periods] == [
        (utc(ts(2011, 12, 28, 10)), utc(ts(2011, 12, 29, 10))),
        (utc(ts(2011, 12, 29, 10)), utc(ts(2011, 12, 30, 10))),
        (utc(ts(2011, 12, 30, 10)), utc(ts(2011, 12, 31, 10))),
        (utc(ts(2011, 12, 31, 10)), utc(ts(2012, 1, 1, 10))),
    ]
    assert [p.start.date() for p in periods] == [
        D(2011, 12, 28),
        D(2011, 12, 29),
        D(2011, 12, 31),
        D(2012, 1, 1),
    ]


@pytest.mark.parametrize(
    ("tz", "skipped", "expected"),
    [
        ("Pacific/Apia", D(2011, 12, 30), (ts(2011, 12, 30, 10), ts(2011, 12, 31, 10))),
        ("Pacific/Kwajalein", D(1993, 8, 21), (ts(1993, 8, 21, 12), ts(1993, 8, 22, 12))),
        ("Pacific/Kiritimati", D(1994, 12, 31), (ts(1994, 12, 31, 10), ts(1995, 1, 1, 10))),
    ],
)
def test_daily_customer_created_on_a_skipped_day_gets_a_full_day(
    tz: str, skipped: dt.date, expected: tuple[int, int]
) -> None:
    """Created on a date the zone never had, the first daily period is the next real day."""
    period = first_period("daily", skipped, tz)
    assert span(period) == (utc(expected[0]), utc(expected[1]))
    assert period.start.date() == skipped + dt.timedelta(days=1)


def test_instant_showing_the_day_before_created_is_in_the_first_period() -> None:
    """In St John's, 03:00Z on 2010-11-07 reads Nov 6 yet falls in a period created Nov 7."""
    tz, created = "America/St_Johns", D(2010, 11, 7)
    at = dt.datetime(2010, 11, 7, 3, 0, tzinfo=dt.UTC)
    assert at.astimezone(pendulum.timezone(tz)).date() == created - dt.timedelta(days=1)
    period = period_containing("monthly", created, tz, at)
    assert span(period) == (utc(ts(2010, 11, 7, 2, 30)), utc(ts(2010, 12, 1, 3, 30)))


def test_created_on_a_skipped_day_starts_at_the_next_existing_day() -> None:
    """A customer created on Apia's missing 2011-12-30 starts at 2011-12-31 00:00 +14."""
    period = first_period("30_days", D(2011, 12, 30), "Pacific/Apia")
    assert period.start.isoformat() == "2011-12-31T00:00:00+14:00"
    assert span(period) == (utc(ts(2011, 12, 30, 10)), utc(ts(2012, 1, 28, 10)))


def test_monthly_periods_in_havana_as_utc_instants() -> None:
    """Havana monthly periods start at local midnight in whichever offset is in force."""
    periods = walk("monthly", D(2024, 10, 15), "America/Havana", 3)
    assert [span(p) for p in periods] == [
        (utc(ts(2024, 10, 15, 4)), utc(ts(2024, 11, 1, 4))),
        (utc(ts(2024, 11, 1, 4)), utc(ts(2024, 12, 1, 5))),
        (utc(ts(2024, 12, 1, 5)), utc(ts(2025, 1, 1, 5))),
    ]


def test_weekly_periods_on_lord_howe_half_hour_dst() -> None:
    """A Lord Howe week spanning the 30-minute change lasts 7 days minus 30 minutes."""
    periods = walk("weekly", D(2024, 9, 30), "Australia/Lord_Howe", 2)
    assert [span(p) for p in periods] == [
        (utc(ts(2024, 9, 29, 13, 30)), utc(ts(2024, 10, 6, 13))),
        (utc(ts(2024, 10, 6, 13)), utc(ts(2024, 10, 13, 13))),
    ]


def test_semimonthly_periods_in_chatham_as_utc_instants() -> None:
    """Chatham semimonthly boundaries are local midnights at +13:45 and +12:45."""
    periods = walk("semimonthly", D(2024, 3, 20), "Pacific/Chatham", 3)
    assert [span(p) for p in periods] == [
        (utc(ts(2024, 3, 19, 10, 15)), utc(ts(2024, 3, 31, 10, 15))),
        (utc(ts(2024, 3, 31, 10, 15)), utc(ts(2024, 4, 15, 11, 15))),
        (utc(ts(2024, 4, 15, 11, 15)), utc(ts(2024, 4, 30, 11, 15))),
    ]


def test_period_containing_accepts_instants_in_any_zone() -> None:
    """The same instant given in UTC, Tokyo (pendulum) or Kathmandu finds the same period."""
    at_utc = dt.datetime(2024, 11, 3, 4, 30, tzinfo=dt.UTC)
    tokyo = pendulum.instance(at_utc).in_timezone("Asia/Tokyo")
    kathmandu = at_utc.astimezone(pendulum.timezone("Asia/Kathmandu"))
    found = {
        span(period_containing("daily", D(2024, 11, 1), "America/Havana", at))
        for at in (at_utc, tokyo, kathmandu)
    }
    assert found == {(utc(ts(2024, 11, 3, 4)), utc(ts(2024, 11, 4, 5)))}


def test_period_containing_at_exact_boundaries() -> None:
    """An instant equal to a boundary starts the later period; one microsecond earlier does not."""
    tz, created = "Atlantic/Azores", D(2024, 10, 1)
    boundary = dt.datetime(2024, 10, 27, 0, 0, tzinfo=dt.UTC)  # first of two midnights
    assert seconds(period_containing("daily", created, tz, boundary).start) == ts(2024, 10, 27)
    before = period_containing("daily", created, tz, boundary - ONE_US)
    assert seconds(before.end) == ts(2024, 10, 27)
    second_midnight = dt.datetime(2024, 10, 27, 1, 0, tzinfo=dt.UTC)
    assert seconds(period_containing("daily", created, tz, second_midnight).start) == ts(
        2024, 10, 27
    )
