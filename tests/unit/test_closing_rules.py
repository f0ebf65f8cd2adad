"""Grouped period arithmetic: one engine call per group, the same answer as one per customer."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import closing_rules
from models.closing_rules import GroupedPeriods, anchor_key
from models.periods import BillingPeriod, Period, first_period, next_period

ZONES = ["UTC", "America/Havana", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Apia"]


def _utc(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC)


@pytest.mark.parametrize(
    ("rule", "created", "expected"),
    [
        ("daily", dt.date(2026, 1, 31), 0),
        ("weekly", dt.date(2026, 1, 28), 0),
        ("semimonthly", dt.date(2026, 1, 17), 0),
        ("monthly", dt.date(2026, 1, 19), 0),
        ("monthly_anniversary", dt.date(2026, 1, 19), 19),
        ("monthly_anniversary", dt.date(2026, 1, 28), 28),
        ("monthly_anniversary", dt.date(2026, 1, 31), 28),
        ("30_days", dt.date(2026, 1, 1), dt.date(2026, 1, 1).toordinal() % 30),
    ],
)
def test_anchor_key_keeps_only_what_the_rule_depends_on(
    rule: str, created: dt.date, expected: int
) -> None:
    """The anchor part of the group key is the anniversary day (capped at 28), the day
    modulo 30 for 30-day periods, and nothing for the calendar rules."""
    assert anchor_key(rule, created) == expected


def test_thirty_day_anchors_thirty_days_apart_share_a_key() -> None:
    """Two 30-day customers created 30 days apart have the same boundaries, so one key."""
    created = dt.date(2026, 2, 3)
    assert anchor_key("30_days", created) == anchor_key("30_days", created + dt.timedelta(30))
    assert anchor_key("30_days", created) != anchor_key("30_days", created + dt.timedelta(1))


def test_customers_sharing_rule_zone_and_boundary_cost_one_engine_call() -> None:
    """Monthly customers created on 28 different days, whose periods all end at the same
    local midnight, are advanced with a single period computation."""
    groups = GroupedPeriods()
    advances = set()
    for day in range(1, 29):
        period = first_period("monthly", dt.date(2026, 2, day), "Asia/Tokyo")
        step = groups.advance(
            "monthly", dt.date(2026, 2, day), "Asia/Tokyo", period.start, period.end
        )
        advances.add(step)

    assert groups.computations == 1
    (step,) = advances
    assert step.end_date == dt.date(2026, 3, 1)
    assert step.next_end == dt.datetime(2026, 3, 31, 15, 0, tzinfo=dt.UTC)  # Apr 1 00:00 JST


def test_anniversaries_on_the_29th_to_31st_share_the_28th_group() -> None:
    """Customers created on the 28th, 30th and 31st all bill from the 28th to the 28th, so
    once their periods end on the same day they share one computation and one answer."""
    groups = GroupedPeriods()
    answers = set()
    for created in (dt.date(2026, 1, 28), dt.date(2026, 1, 30), dt.date(2026, 1, 31)):
        period = first_period("monthly_anniversary", created, "UTC")
        assert period.end.date() == dt.date(2026, 2, 28)
        answers.add(groups.advance("monthly_anniversary", created, "UTC", period.start, period.end))

    assert groups.computations == 1
    (answer,) = answers
    assert answer.next_end == dt.datetime(2026, 3, 28, tzinfo=dt.UTC)


def test_advance_returns_plain_standard_library_values() -> None:
    """What goes to the database driver is a plain UTC datetime and a plain date."""
    period = first_period("daily", dt.date(2026, 3, 7), "America/Havana")
    step = GroupedPeriods().advance(
        "daily", dt.date(2026, 3, 7), "America/Havana", period.start, period.end
    )

    assert type(step.next_end) is dt.datetime
    assert step.next_end.tzinfo is dt.UTC
    assert type(step.end_date) is dt.date
    # Havana skips 00:00 on 2026-03-08: that day starts at 01:00 -04 (05:00 UTC).
    assert step.end_date == dt.date(2026, 3, 8)
    assert step.next_end == dt.datetime(2026, 3, 9, 4, 0, tzinfo=dt.UTC)


def test_an_engine_that_does_not_move_forward_is_refused(monkeypatch) -> None:
    """If the engine ever returned a period ending at or before the one closed, the closer
    would loop forever on that customer; it raises instead."""
    period = first_period("daily", dt.date(2026, 3, 7), "UTC")
    monkeypatch.setattr(
        closing_rules, "next_period", lambda *_: Period(start=period.start, end=period.end)
    )

    with pytest.raises(ValueError, match="did not move past"):
        closing_rules.advance("daily", dt.date(2026, 3, 7), "UTC", period.start, period.end)


customer_profiles = st.lists(
    st.tuples(
        st.sampled_from([rule.value for rule in BillingPeriod]),
        st.sampled_from(ZONES),
        st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2025, 3, 31)),
        st.integers(min_value=0, max_value=14),  # how many periods the customer is in
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(customer_profiles)
def test_grouped_answers_equal_the_engine_asked_customer_by_customer(profiles) -> None:
    """Whatever mix of customers shares the memo, each gets exactly the period the engine
    computes for it alone."""
    groups = GroupedPeriods()
    for rule, tz, created, periods_in in profiles:
        period = first_period(rule, created, tz)
        for _ in range(periods_in):
            period = next_period(rule, created, tz, period)
        start, end = _utc(period.start), _utc(period.end)
        expected = next_period(rule, created, tz, period)

        step = groups.advance(rule, created, tz, start, end)

        assert step.next_end == _utc(expected.end)
        assert step.end_date == expected.start.date()
        assert groups.local_date(start, tz) == period.start.date()
