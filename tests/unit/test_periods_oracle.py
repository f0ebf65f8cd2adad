"""Independent references for the period tests, and tests that pin them to literal values.

Nothing here uses models.periods. The oracle and the scanner only ever convert UTC to local
time (``datetime.fromtimestamp(ts, ZoneInfo)``), never local to UTC, so they do not share the
fold semantics the implementation relies on.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import zoneinfo
from dataclasses import dataclass

import pytest

EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
DAY = 86_400
UTC = dt.UTC

# Every zone name the engine accepts: the installed IANA database minus host artefacts.
ALL_ZONES: tuple[str, ...] = tuple(
    sorted(zoneinfo.available_timezones() - {"localtime", "posixrules"})
)

# Zones whose clocks change at or across local midnight somewhere in 1990-2100, plus the ones
# that skipped whole days; the scanner below finds the actual days.
MIDNIGHT_ZONES: tuple[str, ...] = (
    "Africa/Cairo",
    "America/Asuncion",
    "America/Goose_Bay",
    "America/Havana",
    "America/Moncton",
    "America/Santiago",
    "America/Sao_Paulo",
    "America/St_Johns",
    "Asia/Beirut",
    "Asia/Damascus",
    "Asia/Gaza",
    "Asia/Tehran",
    "Atlantic/Azores",
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "Pacific/Kwajalein",
)


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """A literal UTC instant as whole seconds since the epoch."""
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())


def utc(seconds: int) -> dt.datetime:
    """Seconds since the epoch as an aware UTC datetime (for readable assertion messages)."""
    return dt.datetime.fromtimestamp(seconds, UTC)


def instant(value: dt.datetime) -> int:
    """Exact UTC microseconds since the epoch of an aware datetime (fold-correct).

    Rebuilt as a plain datetime first: pendulum overrides subtraction to return an Interval.
    """
    plain = dt.datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=value.tzinfo,
        fold=value.fold,
    )
    return (plain - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)


def _zone(tz: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(tz)


def offset_at(tz: str, seconds: int) -> int:
    """UTC offset in seconds in force at a UTC instant."""
    off = dt.datetime.fromtimestamp(seconds, _zone(tz)).utcoffset()
    assert off is not None
    return int(off.total_seconds())


def local_date(tz: str, seconds: int) -> dt.date:
    """Local calendar date of a UTC instant."""
    return dt.datetime.fromtimestamp(seconds, _zone(tz)).date()


def _transition_after(tz: str, lo: int, hi: int) -> int:
    """First second in (lo, hi] whose offset differs from the offset at lo (one change assumed)."""
    before = offset_at(tz, lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offset_at(tz, mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


_WINDOW = 26 * 3600  # no zone's UTC offset reaches 26 hours
_STEP = 1800  # no two transitions in the database are closer than 30 minutes


@functools.cache
def oracle_day_start(d: dt.date, tz: str) -> int:
    """Earliest UTC second whose local date in tz is d or later, from sampled UTC offsets.

    Splits the UTC window around the day into stretches of constant offset (sampling every 30
    minutes and bisecting each change to the second), then takes the first second, stretch by
    stretch, whose wall clock (UTC + offset) has reached d 00:00.
    """
    midnight = (d.toordinal() - EPOCH_ORDINAL) * DAY
    lo, hi = midnight - _WINDOW, midnight + _WINDOW
    cuts = [lo]
    previous, previous_offset = lo, offset_at(tz, lo)
    for sample in range(lo + _STEP, hi + _STEP, _STEP):
        sample_offset = offset_at(tz, sample)
        if sample_offset != previous_offset:
            cuts.append(_transition_after(tz, previous, sample))
        previous, previous_offset = sample, sample_offset
    cuts.append(hi + _STEP)
    for start, end in itertools.pairwise(cuts):
        first = max(start, midnight - offset_at(tz, start))
        if first < end:
            return first
    raise AssertionError(f"no start of {d} in {tz} within the window")


def dates_starting_at(seconds: int, tz: str) -> list[dt.date]:
    """Every local date whose day start is this instant (several where the zone skipped days)."""
    d = local_date(tz, seconds)
    found = []
    while oracle_day_start(d, tz) == seconds:
        found.append(d)
        d -= dt.timedelta(days=1)
    return found


@dataclass(frozen=True)
class MidnightTransition:
    """A real tz transition whose skipped or repeated wall-clock stretch contains a midnight."""

    tz: str
    at: int  # UTC seconds of the transition
    offset_before: int
    offset_after: int

    @property
    def wall_before(self) -> dt.datetime:
        """The naive wall-clock time the clocks were about to show when they changed."""
        return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=self.at + self.offset_before)

    @property
    def wall_after(self) -> dt.datetime:
        """The naive wall-clock time the clocks showed right after the change."""
        return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=self.at + self.offset_after)

    @property
    def skipped(self) -> bool:
        return self.offset_after > self.offset_before

    @property
    def days(self) -> list[dt.date]:
        """Local dates whose midnight lies in the skipped or repeated stretch."""
        lo, hi = sorted((self.wall_before, self.wall_after))
        first = lo.date() if lo.time() == dt.time(0) else lo.date() + dt.timedelta(days=1)
        count = (hi.date() - first).days + (hi.time() != dt.time(0))
        return [first + dt.timedelta(days=i) for i in range(count)]

    @property
    def kind(self) -> str:
        """skipped-at-midnight, skipped-days, repeated-at-midnight or repeated-across-midnight."""
        if self.skipped:
            if self.offset_after - self.offset_before >= DAY:
                return "skipped-days"
            return (
                "skipped-at-midnight"
                if self.wall_before.time() == dt.time(0)
                else "gap-across-midnight"
            )
        return (
            "repeated-at-midnight"
            if self.wall_after.time() == dt.time(0)
            else "repeated-across-midnight"
        )


def transitions(tz: str, first_year: int, last_year: int) -> list[tuple[int, int, int]]:
    """(utc_second, offset_before, offset_after) of every offset change, by daily UTC sampling."""
    found = []
    t, end = ts(first_year, 1, 1), ts(last_year + 1, 1, 1)
    while t < end:
        nxt = min(t + DAY, end)
        if offset_at(tz, nxt) != offset_at(tz, t):
            change = _transition_after(tz, t, nxt)
            found.append((change, offset_at(tz, change - 1), offset_at(tz, change)))
            nxt = change
        t = nxt
    return found


@functools.cache
def find_midnight_transitions(
    tz: str, first_year: int = 1990, last_year: int = 2100
) -> tuple[MidnightTransition, ...]:
    """Scan the real tz database for transitions that skip or repeat a local midnight."""
    found = []
    for at, before, after in transitions(tz, first_year, last_year):
        candidate = MidnightTransition(tz, at, before, after)
        if candidate.days:
            found.append(candidate)
    return tuple(found)


@functools.cache
def all_midnight_transitions() -> tuple[MidnightTransition, ...]:
    """Midnight transitions in 1990-2100 across MIDNIGHT_ZONES."""
    return tuple(
        itertools.chain.from_iterable(find_midnight_transitions(z) for z in MIDNIGHT_ZONES)
    )


# --------------------------------------------------------------------------------------------
# The references themselves, pinned to literal values checked by hand against the tz source.


@pytest.mark.parametrize(
    ("tz", "day", "expected"),
    [
        ("UTC", dt.date(2024, 1, 1), ts(2024, 1, 1)),
        ("America/New_York", dt.date(2024, 3, 10), ts(2024, 3, 10, 5)),
        ("America/New_York", dt.date(2024, 3, 11), ts(2024, 3, 11, 4)),
        ("America/Havana", dt.date(2024, 3, 10), ts(2024, 3, 10, 5)),
        ("America/Havana", dt.date(2024, 11, 3), ts(2024, 11, 3, 4)),
        ("America/St_Johns", dt.date(2010, 11, 7), ts(2010, 11, 7, 2, 30)),
        ("America/Toronto", dt.date(1919, 3, 31), ts(1919, 3, 31, 4, 30)),
        ("Pacific/Apia", dt.date(2011, 12, 30), ts(2011, 12, 30, 10)),
    ],
)
def test_oracle_matches_hand_checked_day_starts(tz: str, day: dt.date, expected: int) -> None:
    """The brute-force oracle reproduces day starts worked out by hand from the tz source."""
    assert utc(oracle_day_start(day, tz)) == utc(expected)


def test_scanner_finds_known_transitions() -> None:
    """The scanner reports the known Havana 2024 transitions with their offsets and kinds."""
    found = {(t.days[0], t.kind) for t in find_midnight_transitions("America/Havana", 2024, 2024)}
    assert found == {
        (dt.date(2024, 3, 10), "skipped-at-midnight"),
        (dt.date(2024, 11, 3), "repeated-at-midnight"),
    }


def test_dates_starting_at_lists_skipped_days() -> None:
    """Both Apia dates that begin at the 2011 date-line jump are reported, latest first."""
    assert dates_starting_at(ts(2011, 12, 30, 10), "Pacific/Apia") == [
        dt.date(2011, 12, 31),
        dt.date(2011, 12, 30),
    ]
