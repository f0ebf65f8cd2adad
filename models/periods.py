"""Billing periods: pure, clock-free period arithmetic in a customer's billing timezone.

Implements the billing-periods design contract. Every period is a half-open interval
``[start, end)`` whose ends are *day starts*:

    boundary(D) = the earliest instant whose local date, in the billing timezone, is D or later.

The module is split in two layers on purpose. The rules (which local dates are boundaries)
are pure date arithmetic with no timezone: ``next_boundary_date`` and
``period_start_date_containing``. The only timezone-aware step is ``day_start``, which turns
a local date into its boundary instant and is cached. The period-closing job can therefore do
the date arithmetic once per group of customers and convert each distinct (date, zone) once,
and ``first_period``/``next_period``/``period_containing`` are thin compositions of the same
two layers, so each rule has exactly one implementation.

Instants are compared as UTC microseconds, never as wall-clock datetimes: two aware datetimes
that share a tzinfo compare by wall time and ignore ``fold``, which is wrong exactly on the
repeated-midnight days this module exists to get right.
"""

from __future__ import annotations

import datetime as _dt
import functools
import zoneinfo
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, assert_never

import pendulum

__all__ = [
    "BeforeFirstPeriod",
    "BillingPeriod",
    "InvalidDate",
    "InvalidTimezone",
    "NaiveDatetime",
    "NotABoundary",
    "OutOfRange",
    "Period",
    "PeriodError",
    "UnknownBillingPeriod",
    "day_start",
    "first_period",
    "next_boundary_date",
    "next_period",
    "parse_rule",
    "period_containing",
    "period_start_date_containing",
    "period_starting_on",
    "validate_timezone",
]


_ONE_DAY: Final = _dt.timedelta(days=1)
_THIRTY_DAYS: Final = _dt.timedelta(days=30)
_ONE_SECOND: Final = _dt.timedelta(seconds=1)
_ONE_US: Final = _dt.timedelta(microseconds=1)
_US_PER_SECOND: Final = 1_000_000
_MIDNIGHT: Final = _dt.time(0)
_EPOCH_ORDINAL: Final = _dt.date(1970, 1, 1).toordinal()
_SECONDS_PER_DAY: Final = 86_400
_EPOCH_UTC: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class BillingPeriod(StrEnum):
    """How often a customer is invoiced; the values are the strings stored in the database."""

    DAILY = "daily"
    WEEKLY = "weekly"
    SEMIMONTHLY = "semimonthly"
    MONTHLY = "monthly"
    MONTHLY_ANNIVERSARY = "monthly_anniversary"
    THIRTY_DAYS = "30_days"


class PeriodError(ValueError):
    """Any input the period engine refuses; a ValueError so callers validating input catch it."""


class UnknownBillingPeriod(PeriodError):
    """The rule is not one of the BillingPeriod values (exact spelling only)."""


class InvalidTimezone(PeriodError):
    """The billing timezone is not an exact IANA zone name."""


class InvalidDate(PeriodError):
    """A local date argument is not a plain date (a datetime would carry a time of day)."""


class NaiveDatetime(PeriodError):
    """An instant was given without a UTC offset, so it names no point in time."""


class BeforeFirstPeriod(PeriodError):
    """The instant or local date precedes the start of the customer's first period."""


class NotABoundary(PeriodError):
    """A date or instant that should be a period boundary for this rule and anchor is not."""


class OutOfRange(PeriodError):
    """The computation would leave the range of dates Python can represent."""


@dataclass(frozen=True)
class Period:
    """A billing period ``[start, end)``: aware instants in the billing timezone, end exclusive.

    Compare these instants through ``contains`` (or after converting to UTC) rather than with
    ``<`` against datetimes in the same zone: same-tzinfo comparisons use wall time and ignore
    ``fold``, which misorders instants on days whose clocks fall back across midnight.
    """

    start: pendulum.DateTime
    end: pendulum.DateTime

    def contains(self, at: _dt.datetime) -> bool:
        """Whether the aware instant ``at`` lies in ``[start, end)``, compared as UTC instants."""
        us = _instant_us(at)
        return _instant_us(self.start) <= us < _instant_us(self.end)


# --------------------------------------------------------------------------------------------
# Input validation

# Host artefacts that zoneinfo.available_timezones() reports from /usr/share/zoneinfo but that
# are not IANA zone names: "localtime" follows the machine's /etc/localtime, so accepting it
# would make a customer's invoices depend on which host ran the job.
_NOT_IANA_NAMES: Final = frozenset({"localtime", "posixrules"})


@functools.cache
def _iana_names() -> frozenset[str]:
    """The accepted zone names, computed once: listing them walks the tz database on disk."""
    return frozenset(zoneinfo.available_timezones()) - _NOT_IANA_NAMES


def validate_timezone(tz: str) -> str:
    """Return ``tz`` if it is an exact IANA zone name, else raise InvalidTimezone.

    Names are matched exactly against the installed tz database, with no case folding or
    trimming: the name is stored with the customer and must mean one zone everywhere, and
    an exact whitelist also keeps path-like input away from the tz file loader.
    """
    if not isinstance(tz, str):
        raise InvalidTimezone(
            f"billing timezone must be an IANA zone name (a str such as 'Europe/London'), "
            f"got {type(tz).__name__} {tz!r}"
        )
    if tz not in _iana_names():
        raise InvalidTimezone(
            f"unknown billing timezone {tz!r}: expected an exact IANA zone name such as "
            f"'America/New_York' or 'UTC' (case-sensitive, no surrounding spaces)"
        )
    return tz


_RULE_VALUES: Final = ", ".join(repr(r.value) for r in BillingPeriod)


def parse_rule(rule: BillingPeriod | str) -> BillingPeriod:
    """Return the BillingPeriod for ``rule``, else raise UnknownBillingPeriod.

    Only the exact stored values are accepted (no case folding), for the same reason as zone
    names: a rule string that needs normalising is a data bug worth surfacing.
    """
    if isinstance(rule, BillingPeriod):
        return rule
    if isinstance(rule, str):
        try:
            return BillingPeriod(rule)
        except ValueError:
            pass
    raise UnknownBillingPeriod(f"unknown billing period {rule!r}: expected one of {_RULE_VALUES}")


def _as_date(value: _dt.date, name: str) -> _dt.date:
    """Normalise a local-date argument to a plain date; datetimes are refused, not truncated."""
    if type(value) is _dt.date:
        return value
    if isinstance(value, _dt.datetime) or not isinstance(value, _dt.date):
        raise InvalidDate(f"{name} must be a local date (datetime.date), got {value!r}")
    return _dt.date(value.year, value.month, value.day)


# --------------------------------------------------------------------------------------------
# The rules, as pure local-date arithmetic


def _anniversary_day(created: _dt.date) -> int:
    """Day of month of every anniversary boundary after the first: N, or the 28th for N > 28.

    The 28th is the product rule (not "last day of the month"), so later periods stay
    28th-to-28th instead of drifting with month lengths.
    """
    return created.day if created.day <= 28 else 28


def _months_between(created: _dt.date, d: _dt.date) -> int:
    return (d.year - created.year) * 12 + (d.month - created.month)


def _anniversary(created: _dt.date, k: int) -> _dt.date:
    """The k-th anniversary boundary, computed from the anchor, never from the previous one."""
    if k == 0:
        return created
    month_index = created.month - 1 + k
    return _dt.date(
        created.year + month_index // 12, month_index % 12 + 1, _anniversary_day(created)
    )


def _first_of_next_month(d: _dt.date) -> _dt.date:
    return _dt.date(d.year + 1, 1, 1) if d.month == 12 else _dt.date(d.year, d.month + 1, 1)


def _is_boundary_date(rule: BillingPeriod, created: _dt.date, d: _dt.date) -> bool:
    if d < created:
        return False
    if d == created:
        return True
    match rule:
        case BillingPeriod.DAILY:
            return True
        case BillingPeriod.WEEKLY:
            return d.weekday() == 0
        case BillingPeriod.SEMIMONTHLY:
            return d.day in (1, 16)
        case BillingPeriod.MONTHLY:
            return d.day == 1
        case BillingPeriod.MONTHLY_ANNIVERSARY:
            return d.day == _anniversary_day(created)
        case BillingPeriod.THIRTY_DAYS:
            return (d - created).days % 30 == 0
        case _:
            assert_never(rule)


def _next_date(rule: BillingPeriod, created: _dt.date, boundary: _dt.date) -> _dt.date:
    """Next boundary date after a known boundary date (unchecked: callers guarantee it)."""
    try:
        match rule:
            case BillingPeriod.DAILY:
                return boundary + _ONE_DAY
            case BillingPeriod.WEEKLY:
                return boundary + _dt.timedelta(days=7 - boundary.weekday())
            case BillingPeriod.SEMIMONTHLY:
                if boundary.day < 16:
                    return boundary.replace(day=16)
                return _first_of_next_month(boundary)
            case BillingPeriod.MONTHLY:
                return _first_of_next_month(boundary)
            case BillingPeriod.MONTHLY_ANNIVERSARY:
                return _anniversary(created, _months_between(created, boundary) + 1)
            case BillingPeriod.THIRTY_DAYS:
                return boundary + _THIRTY_DAYS
            case _:
                assert_never(rule)
    except (OverflowError, ValueError) as exc:
        raise OutOfRange(f"the {rule} boundary after {boundary} is past {_dt.date.max}") from exc


def _start_date_containing(rule: BillingPeriod, created: _dt.date, d: _dt.date) -> _dt.date:
    """Latest boundary date <= d, computed directly (O(1)) rather than by walking from created."""
    match rule:
        case BillingPeriod.DAILY:
            return d
        case BillingPeriod.WEEKLY:
            return max(created, d - _dt.timedelta(days=d.weekday()))
        case BillingPeriod.SEMIMONTHLY:
            return max(created, d.replace(day=1 if d.day < 16 else 16))
        case BillingPeriod.MONTHLY:
            return max(created, d.replace(day=1))
        case BillingPeriod.MONTHLY_ANNIVERSARY:
            k = _months_between(created, d)
            if k > 0 and d.day < _anniversary_day(created):
                k -= 1
            return _anniversary(created, k)
        case BillingPeriod.THIRTY_DAYS:
            return created + _THIRTY_DAYS * ((d - created).days // 30)
        case _:
            assert_never(rule)


def next_boundary_date(
    rule: BillingPeriod | str, created: _dt.date, boundary: _dt.date
) -> _dt.date:
    """Local date of the period start that follows the period starting on ``boundary``.

    ``boundary`` must itself be a boundary date for this rule and anchor (``created``, or a
    later date the rule puts a boundary on), else NotABoundary: a wrong date would otherwise
    silently produce a misaligned schedule. This is date arithmetic only; when a zone skipped
    whole days (Pacific/Apia 2011-12-30) two consecutive boundary dates can share one
    ``day_start`` instant, which ``period_starting_on`` resolves.
    """
    parsed = parse_rule(rule)
    anchor = _as_date(created, "created")
    start = _as_date(boundary, "boundary")
    if not _is_boundary_date(parsed, anchor, start):
        raise NotABoundary(
            f"{start} is not a {parsed} period start for created={anchor}"
            + (" (it is before created)" if start < anchor else "")
        )
    return _next_date(parsed, anchor, start)


def period_start_date_containing(
    rule: BillingPeriod | str, created: _dt.date, local_date: _dt.date
) -> _dt.date:
    """Local date of the start of the period that covers the local date ``local_date``.

    Computed directly from the anchor, so cost does not grow with the customer's age.
    Raises BeforeFirstPeriod for dates before ``created``.
    """
    parsed = parse_rule(rule)
    anchor = _as_date(created, "created")
    d = _as_date(local_date, "local_date")
    if d < anchor:
        raise BeforeFirstPeriod(f"{d} is before the first period, which starts on {anchor}")
    return _start_date_containing(parsed, anchor, d)


# --------------------------------------------------------------------------------------------
# Day starts: the only timezone-aware step


@functools.cache
def _zone(tz: str) -> pendulum.Timezone:
    """The zone object, loaded once; pendulum's Timezone is a zoneinfo.ZoneInfo subclass."""
    return pendulum.timezone(tz)


def _offset_seconds(offset: _dt.timedelta | None) -> int:
    assert offset is not None  # a ZoneInfo always has an offset
    return offset // _ONE_SECOND


@functools.lru_cache(maxsize=1 << 16)
def _day_start_ts(d: _dt.date, tz: str) -> int:
    """boundary(d) as whole UTC seconds since the epoch (tz transitions are whole seconds).

    Local-to-UTC is done with the standard library's PEP 495 semantics, taking both folds of
    local midnight: fold=0 uses the offset in force before a transition and fold=1 the one
    after. If midnight exists (once or twice) the earlier offset gives its first occurrence.
    If midnight is skipped, the day starts at the transition itself, found by bisecting the
    UTC interval between the two readings of midnight (fold=0 alone would say 01:00 where a
    23:30->00:30 gap means the day starts at 00:30). pendulum's local-to-UTC step is not
    used: it defaults to fold=1, so it returns the second of two midnights (Havana
    2024-11-03), and its start_of("day") can land on the previous day (Santiago 2024-09-08).
    Checked against a transition-by-transition reference around every offset change of
    every installed zone from 1800 to 2100; the unit tests re-check it with their own oracle.
    """
    zone = _zone(tz)
    midnight = _dt.datetime.combine(d, _MIDNIGHT, tzinfo=zone)
    before = _offset_seconds(midnight.utcoffset())
    after = _offset_seconds(midnight.replace(fold=1).utcoffset())
    local_s = (d.toordinal() - _EPOCH_ORDINAL) * _SECONDS_PER_DAY
    if before >= after:
        return local_s - before
    # Midnight falls in a gap: the transition instant t lies in (local - after, local - before],
    # and it is the first instant whose wall clock reads midnight or later.
    lo, hi = local_s - after, local_s - before
    try:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            wall = mid + _offset_seconds(_dt.datetime.fromtimestamp(mid, zone).utcoffset())
            if wall >= local_s:
                hi = mid
            else:
                lo = mid
    except (OverflowError, ValueError, OSError) as exc:
        raise OutOfRange(f"the start of {d} in {tz} is outside the supported range") from exc
    return hi


@functools.lru_cache(maxsize=1 << 16)
def _day_start_dt(d: _dt.date, tz: str) -> pendulum.DateTime:
    """boundary(d) as a pendulum DateTime in tz, built from the UTC instant (fold included)."""
    zone = _zone(tz)
    try:
        local = _dt.datetime.fromtimestamp(_day_start_ts(d, tz), zone)
    except (OverflowError, ValueError, OSError) as exc:
        raise OutOfRange(f"the start of {d} in {tz} is outside the supported range") from exc
    return pendulum.DateTime(
        local.year,
        local.month,
        local.day,
        local.hour,
        local.minute,
        local.second,
        tzinfo=zone,
        fold=local.fold,
    )


def day_start(d: _dt.date, tz: str) -> pendulum.DateTime:
    """boundary(d): the earliest instant whose local date in ``tz`` is ``d`` or later.

    That is local midnight on ordinary days; the first of two midnights where clocks fall back
    to 00:00; the transition instant where midnight is skipped (including gaps that span
    midnight, and days a zone skipped entirely, which share their start with the next day).
    Cached: boundaries repeat heavily across customers and periods.
    """
    return _day_start_dt(_as_date(d, "d"), validate_timezone(tz))


# --------------------------------------------------------------------------------------------
# Instants


def _instant_us(at: _dt.datetime) -> int:
    """UTC microseconds since the epoch for an aware datetime, in exact integer arithmetic."""
    if not isinstance(at, _dt.datetime):
        raise NaiveDatetime(f"expected an aware datetime, got {at!r}")
    offset = at.utcoffset()
    if offset is None:
        raise NaiveDatetime(
            f"{at!r} is naive: pass an aware datetime (with tzinfo) so it names one instant"
        )
    wall_s = (
        (at.toordinal() - _EPOCH_ORDINAL) * _SECONDS_PER_DAY
        + at.hour * 3600
        + at.minute * 60
        + at.second
    )
    return wall_s * _US_PER_SECOND + at.microsecond - offset // _ONE_US


def _local_date(us: int, tz: str) -> _dt.date:
    try:
        return (_EPOCH_UTC + _dt.timedelta(microseconds=us)).astimezone(_zone(tz)).date()
    except (OverflowError, ValueError) as exc:
        raise OutOfRange(f"instant {us} us since the epoch is outside the supported range") from exc


# --------------------------------------------------------------------------------------------
# Periods


def _end_date_after(rule: BillingPeriod, created: _dt.date, tz: str, start: _dt.date) -> _dt.date:
    """First boundary date after ``start`` whose instant is later than ``start``'s.

    Boundary dates the zone skipped entirely share the next day's instant; dropping them keeps
    every period non-empty while the instants still tile.
    """
    start_ts = _day_start_ts(start, tz)
    end = _next_date(rule, created, start)
    while _day_start_ts(end, tz) <= start_ts:
        end = _next_date(rule, created, end)
    return end


def period_starting_on(
    rule: BillingPeriod | str, created: _dt.date, tz: str, start: _dt.date
) -> Period:
    """The period that starts on the boundary date ``start`` (NotABoundary otherwise)."""
    parsed = parse_rule(rule)
    anchor = _as_date(created, "created")
    zone_name = validate_timezone(tz)
    first = _as_date(start, "start")
    if not _is_boundary_date(parsed, anchor, first):
        raise NotABoundary(f"{first} is not a {parsed} period start for created={anchor}")
    end = _end_date_after(parsed, anchor, zone_name, first)
    return Period(_day_start_dt(first, zone_name), _day_start_dt(end, zone_name))


def first_period(rule: BillingPeriod | str, created: _dt.date, tz: str) -> Period:
    """The customer's first period: from the start of ``created`` to the rule's next boundary."""
    return period_starting_on(rule, created, tz, created)


def next_period(rule: BillingPeriod | str, created: _dt.date, tz: str, period: Period) -> Period:
    """The period that starts at ``period.end``.

    Only ``period.end`` is used, and it must be a boundary instant of this rule, anchor and
    zone (else NotABoundary), so a period from another customer or zone is not silently
    continued. Its local date locates the boundary date without walking from ``created``.
    """
    parsed = parse_rule(rule)
    anchor = _as_date(created, "created")
    zone_name = validate_timezone(tz)
    end_us = _instant_us(period.end)
    local = _local_date(end_us, zone_name)
    start = _start_date_containing(parsed, anchor, local) if local >= anchor else None
    if start is None or _day_start_ts(start, zone_name) * _US_PER_SECOND != end_us:
        raise NotABoundary(
            f"{period.end.isoformat()} is not a {parsed} period boundary for "
            f"created={anchor} in {zone_name}"
        )
    end = _end_date_after(parsed, anchor, zone_name, start)
    return Period(_day_start_dt(start, zone_name), _day_start_dt(end, zone_name))


def period_containing(
    rule: BillingPeriod | str, created: _dt.date, tz: str, at: _dt.datetime
) -> Period:
    """The period ``[start, end)`` that contains the aware instant ``at``.

    The candidate comes from ``at``'s local date in O(1). Membership is then decided on
    instants: where clocks fall back across midnight (America/St_Johns until 2010: 00:01 ->
    23:01) an instant just after the new day started can show the previous local date, and
    belongs to the later period.
    """
    parsed = parse_rule(rule)
    anchor = _as_date(created, "created")
    zone_name = validate_timezone(tz)
    at_us = _instant_us(at)
    first_us = _day_start_ts(anchor, zone_name) * _US_PER_SECOND
    if at_us < first_us:
        raise BeforeFirstPeriod(
            f"{at.isoformat()} is before the first period, which starts at "
            f"{_day_start_dt(anchor, zone_name).isoformat()}"
        )
    local = max(_local_date(at_us, zone_name), anchor)
    start = _start_date_containing(parsed, anchor, local)
    end = _end_date_after(parsed, anchor, zone_name, start)
    while _day_start_ts(end, zone_name) * _US_PER_SECOND <= at_us:
        start = end
        end = _end_date_after(parsed, anchor, zone_name, start)
    return Period(_day_start_dt(start, zone_name), _day_start_dt(end, zone_name))
