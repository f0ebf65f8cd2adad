"""Billing period rule and timezone changes at a boundary, and cut periods: pure rules."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.period_changes import cut_end_date, end_after_switch
from models.periods import BillingPeriod, Period, day_start, first_period, next_period

D = dt.date
UTC = dt.UTC


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("rule", "anchor", "tz", "boundary", "boundary_date", "end"),
    [
        # monthly -> weekly at Wednesday April 1 in New York: to Monday April 6.
        (
            "weekly",
            D(2026, 1, 19),
            "America/New_York",
            "2026-04-01T04:00:00Z",
            D(2026, 4, 1),
            "2026-04-06T04:00:00Z",
        ),
        # monthly -> monthly_anniversary keeps the creation day (the 19th).
        (
            "monthly_anniversary",
            D(2026, 1, 19),
            "America/New_York",
            "2026-04-01T04:00:00Z",
            D(2026, 4, 1),
            "2026-04-19T04:00:00Z",
        ),
        # 30 days counted from creation: Jan 19 + 90 = Apr 19.
        (
            "30_days",
            D(2026, 1, 19),
            "America/New_York",
            "2026-04-01T04:00:00Z",
            D(2026, 4, 1),
            "2026-04-19T04:00:00Z",
        ),
        # Same rule, New York -> London: the old boundary starts it, London's May 1 ends it.
        (
            "monthly",
            D(2026, 1, 19),
            "Europe/London",
            "2026-04-01T04:00:00Z",
            D(2026, 4, 1),
            "2026-04-30T23:00:00Z",
        ),
        # London -> New York: London's April 1 is New York's March 31 evening.
        (
            "monthly",
            D(2026, 1, 19),
            "America/New_York",
            "2026-03-31T23:00:00Z",
            D(2026, 4, 1),
            "2026-05-01T04:00:00Z",
        ),
        # daily, from UTC-11 to UTC+14: the next local midnight there is already past.
        (
            "daily",
            D(2026, 1, 19),
            "Pacific/Kiritimati",
            "2026-04-01T11:00:00Z",
            D(2026, 4, 1),
            "2026-04-02T10:00:00Z",
        ),
    ],
)
def test_end_after_switch_table(
    rule: str, anchor: D, tz: str, boundary: str, boundary_date: D, end: str
) -> None:
    """The first period after a change ends at the new rule's first boundary in the new zone."""
    assert end_after_switch(rule, anchor, tz, _utc(boundary), boundary_date) == _utc(end)


ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/Santiago",
    "Asia/Kathmandu",
]


@settings(deadline=None)
@given(
    old_rule=st.sampled_from(list(BillingPeriod)),
    new_rule=st.sampled_from(list(BillingPeriod)),
    old_tz=st.sampled_from(ZONES),
    new_tz=st.sampled_from(ZONES),
    created=st.dates(D(2000, 1, 1), D(2080, 12, 31)),
    periods=st.integers(0, 4),
)
def test_switch_continues_the_engine_without_gap(
    old_rule: BillingPeriod,
    new_rule: BillingPeriod,
    old_tz: str,
    new_tz: str,
    created: D,
    periods: int,
) -> None:
    """After a switch the period is non-empty and the engine continues it by the new rule."""
    period = first_period(old_rule, created, old_tz)
    for _ in range(periods):
        period = next_period(old_rule, created, old_tz, period)
    boundary = period.end
    boundary_date = boundary.date()
    end = end_after_switch(new_rule, created, new_tz, boundary, boundary_date)
    assert end > boundary
    # The end is a boundary of the new rule in the new zone, so the closer goes on from it.
    following = next_period(new_rule, created, new_tz, Period(boundary, end.astimezone(UTC)))
    assert following.start == end
    assert following.end > following.start


@pytest.mark.parametrize(
    ("at", "tz", "end_date"),
    [
        ("2026-03-10T14:00:00-04:00", "America/New_York", D(2026, 3, 11)),
        ("2026-03-10T04:00:00Z", "America/New_York", D(2026, 3, 10)),
        # March 8, 2026: New York springs forward at 02:00; midnight exists.
        ("2026-03-08T05:00:00Z", "America/New_York", D(2026, 3, 8)),
        ("2026-03-08T05:00:01Z", "America/New_York", D(2026, 3, 9)),
    ],
)
def test_cut_end_date(at: str, tz: str, end_date: D) -> None:
    """A period cut during a day covers that day; cut at a day start, it does not."""
    assert cut_end_date(_utc(at), tz) == end_date


def test_cut_at_a_skipped_midnight_starts_the_day() -> None:
    """Where midnight is skipped the day starts at the transition; a cut there ends before it."""
    tz = "America/Santiago"  # 2024-09-08: 00:00 -> 01:00
    start = day_start(D(2024, 9, 8), tz)
    assert cut_end_date(start, tz) == D(2024, 9, 8)
