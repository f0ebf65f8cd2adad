"""Property-based tests: every rule, any IANA zone, created dates 1990-2100.

Half of the generated customers are placed just before a real midnight transition found by
scanning the tz database (one kind of transition at a time, so the rare whole-day skips are
drawn as often as the common DST days); the other half are uniform over zones and dates.
Expected periods come from a brute-force model of the rules (day-by-day scanning) and the
independent day-start oracle, never from the engine.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from collections.abc import Callable, Iterator

import pendulum
from hypothesis import given, settings
from hypothesis import strategies as st

from models.periods import (
    BillingPeriod,
    Period,
    day_start,
    first_period,
    next_boundary_date,
    next_period,
    period_containing,
    period_start_date_containing,
)
from tests.unit.test_periods_oracle import (
    ALL_ZONES,
    MidnightTransition,
    all_midnight_transitions,
    dates_starting_at,
    instant,
    local_date,
    oracle_day_start,
    utc,
)

D = dt.date
ONE_DAY = dt.timedelta(days=1)
FIRST, LAST = D(1990, 1, 1), D(2100, 12, 31)

# tz loading and the oracle make single examples slow-ish; timing is not what is tested.
SETTINGS = settings(deadline=None)

# How far before a transition day a customer may be created so a short walk still reaches it.
REACH_DAYS = {
    BillingPeriod.DAILY: 8,
    BillingPeriod.WEEKLY: 50,
    BillingPeriod.SEMIMONTHLY: 120,
    BillingPeriod.MONTHLY: 240,
    BillingPeriod.MONTHLY_ANNIVERSARY: 240,
    BillingPeriod.THIRTY_DAYS: 240,
}
WALK = 10


def _by_kind() -> dict[str, list[MidnightTransition]]:
    kinds: dict[str, list[MidnightTransition]] = {}
    for transition in all_midnight_transitions():
        kinds.setdefault(transition.kind, []).append(transition)
    return kinds


TRANSITIONS_BY_KIND = _by_kind()


@st.composite
def customers(
    draw: st.DrawFn, rules: tuple[BillingPeriod, ...] = tuple(BillingPeriod)
) -> tuple[BillingPeriod, str, dt.date]:
    """(rule, zone, created): near a real midnight transition, or anywhere in 1990-2100."""
    rule = draw(st.sampled_from(rules))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(sorted(TRANSITIONS_BY_KIND)))
        transition = draw(st.sampled_from(TRANSITIONS_BY_KIND[kind]))
        before = draw(st.one_of(st.just(0), st.integers(0, REACH_DAYS[rule])))
        created = transition.days[0] - dt.timedelta(days=before)
        return rule, transition.tz, created
    return rule, draw(st.sampled_from(ALL_ZONES)), draw(st.dates(FIRST, LAST))


# --------------------------------------------------------------------------------------------
# Brute-force model of the rules


def _anniversary(created: dt.date, months: int) -> dt.date:
    """created + months by pendulum's calendar arithmetic, then the 28th for days after 28."""
    shifted = pendulum.date(created.year, created.month, created.day).add(months=months)
    day = created.day if created.day <= 28 else 28
    return D(shifted.year, shifted.month, day)


def is_rule_boundary(rule: BillingPeriod, created: dt.date) -> Callable[[dt.date], bool]:
    """The contract's table, read literally: is local date d a period start?"""

    def check(d: dt.date) -> bool:
        if d == created:
            return True
        if d < created:
            return False
        if rule is BillingPeriod.DAILY:
            return True
        if rule is BillingPeriod.WEEKLY:
            return d.weekday() == 0
        if rule is BillingPeriod.SEMIMONTHLY:
            return d.day in (1, 16)
        if rule is BillingPeriod.MONTHLY:
            return d.day == 1
        if rule is BillingPeriod.MONTHLY_ANNIVERSARY:
            months = (d.year - created.year) * 12 + d.month - created.month
            return months >= 1 and d == _anniversary(created, months)
        return (d - created).days % 30 == 0

    return check


def brute_boundary_dates(rule: BillingPeriod, created: dt.date) -> Iterator[dt.date]:
    """Every boundary date from created on, found by testing each calendar day in turn."""
    check = is_rule_boundary(rule, created)
    d = created
    while True:
        if check(d):
            yield d
        d += ONE_DAY


def expected_spans(
    rule: BillingPeriod, created: dt.date, tz: str, count: int
) -> list[tuple[int, int]]:
    """The first count periods as UTC seconds: oracle day starts of the brute-force dates."""
    starts: list[int] = []
    for d in brute_boundary_dates(rule, created):
        start = oracle_day_start(d, tz)
        if starts and start == starts[-1]:
            continue  # the zone skipped this whole day; it starts with the next one
        assert not starts or start > starts[-1]
        starts.append(start)
        if len(starts) == count + 1:
            return list(itertools.pairwise(starts))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Helpers on engine output


def seconds(value: dt.datetime) -> int:
    us = instant(value)
    assert us % 1_000_000 == 0, f"boundary {value!r} is not a whole second"
    return us // 1_000_000


def spans(periods: list[Period]) -> list[tuple[int, int]]:
    return [(seconds(p.start), seconds(p.end)) for p in periods]


def walk(rule: BillingPeriod, created: dt.date, tz: str, count: int = WALK) -> list[Period]:
    periods = [first_period(rule, created, tz)]
    while len(periods) < count:
        periods.append(next_period(rule, created, tz, periods[-1]))
    return periods


def boundary_dates(periods: list[Period], tz: str) -> list[list[dt.date]]:
    """For each boundary after the first start, the local dates that begin at that instant."""
    return [dates_starting_at(seconds(p.end), tz) for p in periods]


# --------------------------------------------------------------------------------------------
# Properties


@SETTINGS
@given(customers())
def test_periods_tile_and_are_non_empty(customer: tuple[BillingPeriod, str, dt.date]) -> None:
    """Walked periods satisfy start < end and next.start == prev.end, compared as instants."""
    rule, tz, created = customer
    periods = walk(rule, created, tz)
    assert seconds(periods[0].start) == oracle_day_start(created, tz)
    for period, following in itertools.pairwise(periods):
        assert seconds(period.start) < seconds(period.end)
        assert seconds(following.start) == seconds(period.end)
    assert seconds(periods[-1].start) < seconds(periods[-1].end)


@SETTINGS
@given(customers())
def test_every_boundary_matches_brute_force_rule_and_oracle(
    customer: tuple[BillingPeriod, str, dt.date],
) -> None:
    """Each walked boundary equals the oracle's day start of the brute-force rule date."""
    rule, tz, created = customer
    assert spans(walk(rule, created, tz)) == expected_spans(rule, created, tz, WALK)


@SETTINGS
@given(st.sampled_from(ALL_ZONES), st.dates(FIRST, LAST))
def test_day_start_matches_oracle_anywhere(tz: str, day: dt.date) -> None:
    """day_start equals the earliest instant whose local date is the day or later, in any zone."""
    start = day_start(day, tz)
    assert utc(seconds(start)) == utc(oracle_day_start(day, tz))
    assert start.timezone_name == tz


@SETTINGS
@given(
    customers(),
    st.integers(0, WALK - 1),
    st.sampled_from(["start", "start+1us", "middle", "end-1us", "random"]),
    st.floats(0, 1, exclude_max=True),
    st.sampled_from(["UTC", "Asia/Tokyo", "America/St_Johns", "Pacific/Chatham"]),
)
def test_period_containing_agrees_with_walking(
    customer: tuple[BillingPeriod, str, dt.date],
    index: int,
    where: str,
    fraction: float,
    shown_in: str,
) -> None:
    """period_containing(at) is the walked period that contains at, whatever zone at is in."""
    rule, tz, created = customer
    periods = walk(rule, created, tz)
    target = periods[index]
    start_us, end_us = instant(target.start), instant(target.end)
    offset_us = {
        "start": 0,
        "start+1us": 1,
        "middle": (end_us - start_us) // 2,
        "end-1us": end_us - start_us - 1,
        "random": int((end_us - start_us) * fraction),
    }[where]
    at_utc = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        microseconds=start_us + offset_us
    )
    at = at_utc.astimezone(zoneinfo.ZoneInfo(shown_in))
    found = period_containing(rule, created, tz, at)
    assert spans([found]) == spans([target])
    assert found.contains(at)
    assert found.contains(found.start)
    assert not found.contains(found.end)


@SETTINGS
@given(customers(), st.integers(0, 10**6))
def test_period_containing_far_from_created(
    customer: tuple[BillingPeriod, str, dt.date], permille: int
) -> None:
    """Anywhere up to 2100, the found period contains at and fits its neighbours exactly."""
    rule, tz, created = customer
    first = first_period(rule, created, tz)
    first_s = seconds(first.start)
    horizon = int(dt.datetime(2101, 1, 1, tzinfo=dt.UTC).timestamp())
    at_s = first_s + (max(horizon - first_s, 1) * permille) // 10**6
    at = utc(at_s) + dt.timedelta(microseconds=permille % 1_000_000)
    found = period_containing(rule, created, tz, at)
    assert found.contains(at)
    check = is_rule_boundary(rule, created)
    assert any(check(d) for d in dates_starting_at(seconds(found.start), tz))
    assert any(check(d) for d in dates_starting_at(seconds(found.end), tz))
    assert spans([next_period(rule, created, tz, found)])[0][0] == seconds(found.end)
    after = period_containing(rule, created, tz, found.end)
    assert seconds(after.start) == seconds(found.end)
    if seconds(found.start) > first_s:
        before = period_containing(rule, created, tz, utc(seconds(found.start) - 1))
        assert seconds(before.end) == seconds(found.start)
        assert spans([next_period(rule, created, tz, before)]) == spans([found])


@SETTINGS
@given(customers(rules=(BillingPeriod.DAILY,)))
def test_daily_periods_are_one_local_day(customer: tuple[BillingPeriod, str, dt.date]) -> None:
    """A daily period runs from the start of its local date to the start of the next date."""
    rule, tz, created = customer
    for period in walk(rule, created, tz, 15):
        day = local_date(tz, seconds(period.start))
        assert seconds(period.end) == oracle_day_start(day + ONE_DAY, tz)


@SETTINGS
@given(customers(rules=(BillingPeriod.THIRTY_DAYS,)))
def test_thirty_day_periods_are_thirty_local_days(
    customer: tuple[BillingPeriod, str, dt.date],
) -> None:
    """The k-th 30_days period runs from the start of created + 30k to that of created + 30(k+1)."""
    rule, tz, created = customer
    for k, period in enumerate(walk(rule, created, tz)):
        begins = dates_starting_at(seconds(period.start), tz)
        ends = dates_starting_at(seconds(period.end), tz)
        assert created + dt.timedelta(days=30 * k) in begins
        assert created + dt.timedelta(days=30 * (k + 1)) in ends
        assert any((e - b).days == 30 for b in begins for e in ends)


@SETTINGS
@given(customers(rules=(BillingPeriod.WEEKLY,)))
def test_weekly_boundaries_after_the_first_are_mondays(
    customer: tuple[BillingPeriod, str, dt.date],
) -> None:
    """Every weekly boundary after created begins a Monday, and periods span at most 7 days."""
    rule, tz, created = customer
    periods = walk(rule, created, tz)
    for dates in boundary_dates(periods, tz):
        assert any(d.weekday() == 0 for d in dates), dates
    for period in periods:
        assert seconds(period.end) <= oracle_day_start(
            local_date(tz, seconds(period.start)) + dt.timedelta(days=7), tz
        )


@SETTINGS
@given(customers(rules=(BillingPeriod.MONTHLY_ANNIVERSARY,)))
def test_anniversary_boundaries_never_drift(customer: tuple[BillingPeriod, str, dt.date]) -> None:
    """The k-th anniversary boundary is in month created+k on day N, or the 28th for N > 28."""
    rule, tz, created = customer
    day = created.day if created.day <= 28 else 28
    for k, dates in enumerate(boundary_dates(walk(rule, created, tz, 15), tz), start=1):
        month_index = created.month - 1 + k
        expected = D(created.year + month_index // 12, month_index % 12 + 1, day)
        assert expected in dates, (k, expected, dates)


@SETTINGS
@given(customers(rules=(BillingPeriod.SEMIMONTHLY, BillingPeriod.MONTHLY)))
def test_semimonthly_and_monthly_boundaries_fall_on_their_days(
    customer: tuple[BillingPeriod, str, dt.date],
) -> None:
    """Semimonthly boundaries after created begin a 1st or 16th; monthly ones begin a 1st."""
    rule, tz, created = customer
    days = (1, 16) if rule is BillingPeriod.SEMIMONTHLY else (1,)
    for dates in boundary_dates(walk(rule, created, tz), tz):
        assert any(d.day in days for d in dates), dates


@settings(max_examples=300)
@given(
    st.sampled_from(tuple(BillingPeriod)),
    st.dates(FIRST, LAST),
    st.integers(0, 4000),
)
def test_date_helpers_match_brute_force(rule: BillingPeriod, created: dt.date, later: int) -> None:
    """The local-date helpers find the same starts as scanning the calendar day by day."""
    local = created + dt.timedelta(days=later)
    check = is_rule_boundary(rule, created)
    start = local
    while not check(start):
        start -= ONE_DAY
    assert period_start_date_containing(rule, created, local) == start
    following = start + ONE_DAY
    while not check(following):
        following += ONE_DAY
    assert next_boundary_date(rule, created, start) == following
