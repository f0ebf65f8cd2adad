"""The six rules as literal examples, the local-date helpers, and input validation."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pendulum
import pytest

from models.periods import (
    BeforeFirstPeriod,
    BillingPeriod,
    InvalidDate,
    InvalidTimezone,
    NaiveDatetime,
    NotABoundary,
    OutOfRange,
    Period,
    PeriodError,
    UnknownBillingPeriod,
    day_start,
    first_period,
    next_boundary_date,
    next_period,
    parse_rule,
    period_containing,
    period_start_date_containing,
    period_starting_on,
    validate_timezone,
)
from tests.unit.test_periods_oracle import instant, ts, utc

D = dt.date


def walk(rule: str, created: dt.date, tz: str, count: int) -> list[Period]:
    periods = [first_period(rule, created, tz)]
    while len(periods) < count:
        periods.append(next_period(rule, created, tz, periods[-1]))
    return periods


def local_spans(periods: list[Period]) -> list[tuple[dt.date, dt.date]]:
    return [(p.start.date(), p.end.date()) for p in periods]


def utc_spans(periods: list[Period]) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(utc(instant(p.start) // 10**6), utc(instant(p.end) // 10**6)) for p in periods]


# --------------------------------------------------------------------------------------------
# Worked examples from the contract (2025: March has 31 days, February 28).


def test_worked_example_anniversary_mid_month() -> None:
    """monthly_anniversary created March 19 runs [Mar 19, Apr 19), [Apr 19, May 19), ..."""
    assert local_spans(walk("monthly_anniversary", D(2025, 3, 19), "UTC", 3)) == [
        (D(2025, 3, 19), D(2025, 4, 19)),
        (D(2025, 4, 19), D(2025, 5, 19)),
        (D(2025, 5, 19), D(2025, 6, 19)),
    ]


def test_worked_example_anniversary_created_on_30th() -> None:
    """monthly_anniversary created January 30 runs [Jan 30, Feb 28), then 28th to 28th."""
    assert local_spans(walk("monthly_anniversary", D(2025, 1, 30), "UTC", 4)) == [
        (D(2025, 1, 30), D(2025, 2, 28)),
        (D(2025, 2, 28), D(2025, 3, 28)),
        (D(2025, 3, 28), D(2025, 4, 28)),
        (D(2025, 4, 28), D(2025, 5, 28)),
    ]


def test_worked_example_thirty_days() -> None:
    """30_days created March 20 runs [Mar 20, Apr 19), [Apr 19, May 19), [May 19, Jun 18)."""
    assert local_spans(walk("30_days", D(2025, 3, 20), "UTC", 3)) == [
        (D(2025, 3, 20), D(2025, 4, 19)),
        (D(2025, 4, 19), D(2025, 5, 19)),
        (D(2025, 5, 19), D(2025, 6, 18)),
    ]


def test_worked_example_monthly() -> None:
    """monthly created March 19 runs [Mar 19, Apr 1), [Apr 1, May 1), ..."""
    assert local_spans(walk("monthly", D(2025, 3, 19), "UTC", 3)) == [
        (D(2025, 3, 19), D(2025, 4, 1)),
        (D(2025, 4, 1), D(2025, 5, 1)),
        (D(2025, 5, 1), D(2025, 6, 1)),
    ]


def test_worked_example_weekly_created_wednesday() -> None:
    """weekly created on a Wednesday runs to the next Monday, then Monday to Monday."""
    wednesday = D(2025, 3, 19)
    assert wednesday.weekday() == 2
    assert local_spans(walk("weekly", wednesday, "UTC", 3)) == [
        (D(2025, 3, 19), D(2025, 3, 24)),
        (D(2025, 3, 24), D(2025, 3, 31)),
        (D(2025, 3, 31), D(2025, 4, 7)),
    ]


def test_worked_examples_hold_as_utc_instants_in_new_york() -> None:
    """The 30-day example in America/New_York ends at literal UTC instants across the DST change."""
    assert utc_spans(walk("30_days", D(2025, 2, 20), "America/New_York", 2)) == [
        (utc(ts(2025, 2, 20, 5)), utc(ts(2025, 3, 22, 4))),
        (utc(ts(2025, 3, 22, 4)), utc(ts(2025, 4, 21, 4))),
    ]


# --------------------------------------------------------------------------------------------
# The other rules and edge dates, as literal tables.


@pytest.mark.parametrize(
    ("rule", "created", "expected"),
    [
        (
            "daily",
            D(2024, 2, 28),
            [(D(2024, 2, 28), D(2024, 2, 29)), (D(2024, 2, 29), D(2024, 3, 1))],
        ),
        (
            "weekly",
            D(2025, 3, 17),
            [(D(2025, 3, 17), D(2025, 3, 24)), (D(2025, 3, 24), D(2025, 3, 31))],
        ),
        (
            "weekly",
            D(2025, 3, 23),
            [(D(2025, 3, 23), D(2025, 3, 24)), (D(2025, 3, 24), D(2025, 3, 31))],
        ),
        (
            "semimonthly",
            D(2025, 3, 10),
            [
                (D(2025, 3, 10), D(2025, 3, 16)),
                (D(2025, 3, 16), D(2025, 4, 1)),
                (D(2025, 4, 1), D(2025, 4, 16)),
            ],
        ),
        (
            "semimonthly",
            D(2025, 3, 16),
            [(D(2025, 3, 16), D(2025, 4, 1)), (D(2025, 4, 1), D(2025, 4, 16))],
        ),
        (
            "semimonthly",
            D(2025, 12, 31),
            [(D(2025, 12, 31), D(2026, 1, 1)), (D(2026, 1, 1), D(2026, 1, 16))],
        ),
        (
            "monthly",
            D(2025, 12, 1),
            [(D(2025, 12, 1), D(2026, 1, 1)), (D(2026, 1, 1), D(2026, 2, 1))],
        ),
        (
            "monthly_anniversary",
            D(2023, 12, 31),
            [
                (D(2023, 12, 31), D(2024, 1, 28)),
                (D(2024, 1, 28), D(2024, 2, 28)),
                (D(2024, 2, 28), D(2024, 3, 28)),
            ],
        ),
        (
            "monthly_anniversary",
            D(2024, 1, 29),
            [(D(2024, 1, 29), D(2024, 2, 28)), (D(2024, 2, 28), D(2024, 3, 28))],
        ),
        (
            "monthly_anniversary",
            D(2025, 11, 28),
            [(D(2025, 11, 28), D(2025, 12, 28)), (D(2025, 12, 28), D(2026, 1, 28))],
        ),
        (
            "monthly_anniversary",
            D(2025, 12, 15),
            [(D(2025, 12, 15), D(2026, 1, 15)), (D(2026, 1, 15), D(2026, 2, 15))],
        ),
        (
            "30_days",
            D(2024, 2, 1),
            [(D(2024, 2, 1), D(2024, 3, 2)), (D(2024, 3, 2), D(2024, 4, 1))],
        ),
    ],
)
def test_rule_tables(rule: str, created: dt.date, expected: list[tuple[dt.date, dt.date]]) -> None:
    """Each rule produces the listed local-date spans, including month, year and leap edges."""
    assert local_spans(walk(rule, created, "UTC", len(expected))) == expected


def test_anniversary_is_anchored_to_created_not_previous_boundary() -> None:
    """An anniversary on the 31st stays on the 28th after February instead of drifting."""
    periods = walk("monthly_anniversary", D(2025, 1, 31), "UTC", 14)
    assert [p.end.date().day for p in periods] == [28] * 14
    assert periods[-1].end.date() == D(2026, 3, 28)


@pytest.mark.parametrize(
    ("rule", "created", "boundary", "expected"),
    [
        ("daily", D(2025, 1, 1), D(2025, 12, 31), D(2026, 1, 1)),
        ("weekly", D(2025, 3, 19), D(2025, 3, 19), D(2025, 3, 24)),
        ("weekly", D(2025, 3, 19), D(2025, 3, 24), D(2025, 3, 31)),
        ("semimonthly", D(2025, 3, 19), D(2025, 4, 16), D(2025, 5, 1)),
        ("monthly", D(2025, 3, 19), D(2025, 3, 19), D(2025, 4, 1)),
        ("monthly_anniversary", D(2025, 1, 30), D(2025, 1, 30), D(2025, 2, 28)),
        ("monthly_anniversary", D(2025, 1, 30), D(2026, 2, 28), D(2026, 3, 28)),
        ("monthly_anniversary", D(2025, 3, 19), D(2027, 11, 19), D(2027, 12, 19)),
        ("30_days", D(2025, 3, 20), D(2025, 5, 19), D(2025, 6, 18)),
    ],
)
def test_next_boundary_date_table(
    rule: str, created: dt.date, boundary: dt.date, expected: dt.date
) -> None:
    """next_boundary_date returns the listed next period start from any boundary date."""
    assert next_boundary_date(rule, created, boundary) == expected


@pytest.mark.parametrize(
    ("rule", "created", "local", "expected"),
    [
        ("daily", D(2025, 1, 1), D(2025, 7, 4), D(2025, 7, 4)),
        ("weekly", D(2025, 3, 19), D(2025, 3, 23), D(2025, 3, 19)),
        ("weekly", D(2025, 3, 19), D(2025, 6, 1), D(2025, 5, 26)),
        ("semimonthly", D(2025, 3, 19), D(2025, 3, 31), D(2025, 3, 19)),
        ("semimonthly", D(2025, 3, 19), D(2025, 4, 15), D(2025, 4, 1)),
        ("semimonthly", D(2025, 3, 19), D(2025, 4, 16), D(2025, 4, 16)),
        ("monthly", D(2025, 3, 19), D(2025, 3, 31), D(2025, 3, 19)),
        ("monthly", D(2025, 3, 19), D(2030, 2, 28), D(2030, 2, 1)),
        ("monthly_anniversary", D(2025, 1, 30), D(2025, 2, 27), D(2025, 1, 30)),
        ("monthly_anniversary", D(2025, 1, 30), D(2025, 3, 1), D(2025, 2, 28)),
        ("monthly_anniversary", D(2025, 1, 30), D(2025, 3, 31), D(2025, 3, 28)),
        ("monthly_anniversary", D(2025, 3, 19), D(2026, 1, 18), D(2025, 12, 19)),
        ("30_days", D(2025, 3, 20), D(2025, 4, 18), D(2025, 3, 20)),
        ("30_days", D(2025, 3, 20), D(2025, 4, 19), D(2025, 4, 19)),
        ("30_days", D(2025, 3, 20), D(2125, 3, 20), D(2125, 3, 6)),
    ],
)
def test_period_start_date_containing_table(
    rule: str, created: dt.date, local: dt.date, expected: dt.date
) -> None:
    """period_start_date_containing finds the listed period start directly from the anchor."""
    assert period_start_date_containing(rule, created, local) == expected


@pytest.mark.parametrize(
    ("rule", "created", "boundary"),
    [
        ("weekly", D(2025, 3, 19), D(2025, 3, 25)),
        ("semimonthly", D(2025, 3, 19), D(2025, 3, 20)),
        ("monthly", D(2025, 3, 19), D(2025, 4, 2)),
        ("monthly_anniversary", D(2025, 1, 30), D(2025, 3, 30)),
        ("30_days", D(2025, 3, 20), D(2025, 4, 20)),
        ("daily", D(2025, 3, 20), D(2025, 3, 19)),
    ],
)
def test_next_boundary_date_rejects_non_boundaries(
    rule: str, created: dt.date, boundary: dt.date
) -> None:
    """A date that is not a period start for the rule and anchor raises NotABoundary."""
    with pytest.raises(NotABoundary, match=str(boundary)):
        next_boundary_date(rule, created, boundary)


def test_period_start_date_containing_rejects_dates_before_created() -> None:
    """Local dates before the anchor raise BeforeFirstPeriod."""
    with pytest.raises(BeforeFirstPeriod, match="2025-03-18"):
        period_start_date_containing("monthly", D(2025, 3, 19), D(2025, 3, 18))


def test_period_starting_on_matches_walk() -> None:
    """period_starting_on a boundary date gives the same period as walking to it."""
    periods = walk("semimonthly", D(2025, 3, 19), "Europe/London", 4)
    assert (
        period_starting_on("semimonthly", D(2025, 3, 19), "Europe/London", D(2025, 4, 16))
        == periods[2]
    )


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("rule", list(BillingPeriod))
def test_parse_rule_accepts_every_enum_member_and_value(rule: BillingPeriod) -> None:
    """Each BillingPeriod and its exact string value parse to the same member."""
    assert parse_rule(rule) is rule
    assert parse_rule(str(rule.value)) is rule


@pytest.mark.parametrize(
    "bad", ["", "Monthly", "MONTHLY", " monthly", "monthly ", "yearly", "30days", "30"]
)
def test_parse_rule_rejects_unknown_strings(bad: str) -> None:
    """Unknown or misspelled rules raise UnknownBillingPeriod naming the value and the options."""
    with pytest.raises(UnknownBillingPeriod) as caught:
        parse_rule(bad)
    message = str(caught.value)
    assert repr(bad) in message
    assert "'monthly_anniversary'" in message
    assert "'30_days'" in message


@pytest.mark.parametrize("bad", [None, 30, b"monthly", ["monthly"]])
def test_parse_rule_rejects_non_strings_with_the_same_error(bad: object) -> None:
    """Non-str rules raise UnknownBillingPeriod, not TypeError."""
    with pytest.raises(UnknownBillingPeriod, match="unknown billing period"):
        parse_rule(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tz", ["UTC", "America/New_York", "Asia/Kathmandu", "Etc/GMT+5", "Pacific/Chatham"]
)
def test_validate_timezone_accepts_iana_names(tz: str) -> None:
    """Exact IANA names are returned unchanged."""
    assert validate_timezone(tz) == tz


@pytest.mark.parametrize(
    "bad",
    [
        "Mars/Olympus",
        "",
        "../etc/passwd",
        "america/new_york",
        "AMERICA/NEW_YORK",
        " UTC",
        "UTC ",
        "utc",
        "localtime",
        "/usr/share/zoneinfo/UTC",
        "EST5EDT ",
    ],
)
def test_validate_timezone_rejects_non_iana_names(bad: str) -> None:
    """Anything but an exact IANA name raises InvalidTimezone naming the value and the options."""
    with pytest.raises(InvalidTimezone) as caught:
        validate_timezone(bad)
    assert repr(bad) in str(caught.value)
    assert "IANA" in str(caught.value)


@pytest.mark.parametrize("bad", [None, 0, b"UTC", pendulum.timezone("UTC")])
def test_validate_timezone_rejects_non_strings_with_the_same_error(bad: object) -> None:
    """Non-str timezones (including tzinfo objects) raise InvalidTimezone, not TypeError."""
    with pytest.raises(InvalidTimezone, match="IANA zone name"):
        validate_timezone(bad)  # type: ignore[arg-type]


def test_public_functions_reject_bad_rule_and_zone() -> None:
    """Every period function refuses an unknown rule or zone with a PeriodError."""
    at = dt.datetime(2025, 5, 1, tzinfo=dt.UTC)
    with pytest.raises(UnknownBillingPeriod):
        first_period("fortnightly", D(2025, 1, 1), "UTC")
    with pytest.raises(InvalidTimezone):
        first_period("monthly", D(2025, 1, 1), "Europe/Atlantis")
    with pytest.raises(UnknownBillingPeriod):
        period_containing("quarterly", D(2025, 1, 1), "UTC", at)
    with pytest.raises(InvalidTimezone):
        period_containing("monthly", D(2025, 1, 1), "utc", at)
    with pytest.raises(InvalidTimezone):
        day_start(D(2025, 1, 1), "Mars/Olympus")
    period = first_period("monthly", D(2025, 1, 1), "UTC")
    with pytest.raises(UnknownBillingPeriod):
        next_period("Monthly", D(2025, 1, 1), "UTC", period)


def test_errors_are_value_errors() -> None:
    """Every error class is a PeriodError and therefore a ValueError."""
    for error in (
        UnknownBillingPeriod,
        InvalidTimezone,
        InvalidDate,
        NaiveDatetime,
        BeforeFirstPeriod,
        NotABoundary,
        OutOfRange,
    ):
        assert issubclass(error, PeriodError)
    assert issubclass(PeriodError, ValueError)


def test_period_containing_rejects_naive_datetimes() -> None:
    """A naive instant raises NaiveDatetime instead of being guessed into a zone."""
    with pytest.raises(NaiveDatetime, match="naive"):
        period_containing("daily", D(2025, 1, 1), "UTC", dt.datetime(2025, 2, 1))


def test_period_containing_rejects_instants_before_the_first_period() -> None:
    """One microsecond before the first period's start raises; the start itself is accepted."""
    start = dt.datetime(2025, 1, 1, 5, tzinfo=dt.UTC)  # midnight in New York
    first = first_period("monthly", D(2025, 1, 1), "America/New_York")
    assert period_containing("monthly", D(2025, 1, 1), "America/New_York", start) == first
    with pytest.raises(BeforeFirstPeriod, match="before the first period"):
        period_containing(
            "monthly", D(2025, 1, 1), "America/New_York", start - dt.timedelta(microseconds=1)
        )


def test_created_must_be_a_date_not_a_datetime() -> None:
    """A datetime passed as created raises InvalidDate rather than being silently truncated."""
    with pytest.raises(InvalidDate, match="created"):
        first_period("daily", dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "UTC")


def test_pendulum_dates_are_accepted_as_local_dates() -> None:
    """A pendulum Date works as created and gives the same period as a plain date."""
    assert first_period("weekly", pendulum.date(2025, 3, 19), "UTC") == first_period(
        "weekly", D(2025, 3, 19), "UTC"
    )


def test_next_period_rejects_a_period_that_does_not_end_on_a_boundary() -> None:
    """next_period refuses a period whose end is not a boundary of this rule, anchor and zone."""
    london = first_period("monthly", D(2025, 3, 19), "Europe/London")
    with pytest.raises(NotABoundary, match="not a monthly period boundary"):
        next_period("monthly", D(2025, 3, 19), "America/New_York", london)
    with pytest.raises(NotABoundary):
        next_period("weekly", D(2025, 3, 19), "Europe/London", london)


def test_out_of_range_dates_raise_a_period_error() -> None:
    """Boundaries past the representable range raise OutOfRange, not OverflowError."""
    with pytest.raises(OutOfRange):
        first_period("30_days", D(9999, 12, 20), "UTC")
    with pytest.raises(OutOfRange):
        first_period("monthly", D(9999, 12, 20), "UTC")
    with pytest.raises(OutOfRange):
        period_containing("daily", D(9999, 1, 1), "UTC", dt.datetime.max.replace(tzinfo=dt.UTC))
    with pytest.raises(OutOfRange):
        day_start(D(1, 1, 1), "Asia/Tokyo")


def test_period_is_frozen_and_in_the_billing_zone() -> None:
    """Periods are immutable and their instants carry the billing timezone."""
    period = first_period("daily", D(2025, 3, 19), "Asia/Kathmandu")
    assert isinstance(period.start, pendulum.DateTime)
    assert period.start.timezone_name == "Asia/Kathmandu"
    assert period.end.timezone_name == "Asia/Kathmandu"
    assert period.start.isoformat() == "2025-03-19T00:00:00+05:45"
    with pytest.raises(dataclasses.FrozenInstanceError):
        period.start = period.end  # type: ignore[misc]
