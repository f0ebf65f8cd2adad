"""Period arithmetic for the closer, done once per group of customers that share it.

A million customers whose periods end at the same local midnight under the same rule
share one next boundary, so the closer asks the period engine once per distinct
(rule, timezone, anchor, boundary) and reuses the answer for every customer in the group.
The anchor is only the part of the creation date the rule depends on: nothing for the
calendar rules, the anniversary day for `monthly_anniversary`, the day modulo 30 for
`30_days`. Every customer in a group therefore gets the answer the engine would have
given them alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pendulum

from models.invoicing_rules import local_date
from models.periods import BillingPeriod, Period, next_period

# An anniversary on the 29th, 30th or 31st bills from the 28th to the 28th after the
# first period (see the period contract).
_LAST_ANNIVERSARY_DAY = 28


def anchor_key(rule: str, created: dt.date) -> int:
    """The part of the creation date that decides `rule`'s boundaries (0 if none does)."""
    if rule == BillingPeriod.MONTHLY_ANNIVERSARY:
        return min(created.day, _LAST_ANNIVERSARY_DAY)
    if rule == BillingPeriod.THIRTY_DAYS:
        return created.toordinal() % 30
    return 0


@dataclass(frozen=True)
class Advance:
    """What closing a period at `end` means for every customer of one group."""

    end_date: dt.date  # local date of the closing boundary (the period's exclusive end)
    next_end: dt.datetime  # UTC instant at which the following period ends


def advance(rule: str, created: dt.date, tz: str, start: dt.datetime, end: dt.datetime) -> Advance:
    """Ask the period engine for the period that follows `[start, end)`."""
    current = Period(
        start=pendulum.instance(start).in_timezone(tz), end=pendulum.instance(end).in_timezone(tz)
    )
    # Compared in UTC: aware times in a repeated hour never compare equal across zones.
    next_end = _plain_utc(next_period(rule, created, tz, current).end)
    if next_end <= end.astimezone(dt.UTC):
        raise ValueError(
            f"the period engine did not move past {end.isoformat()} "
            f"for rule {rule!r} in {tz!r} (anchor {created.isoformat()})"
        )
    return Advance(end_date=_plain_date(current.end), next_end=next_end)


@dataclass
class GroupedPeriods:
    """Memo of `advance` per (rule, timezone, anchor, boundary), kept across batches."""

    computations: int = 0
    _advances: dict[tuple[str, str, int, dt.datetime], Advance] = field(default_factory=dict)
    _dates: dict[tuple[dt.datetime, str], dt.date] = field(default_factory=dict)

    def advance(
        self, rule: str, created: dt.date, tz: str, start: dt.datetime, end: dt.datetime
    ) -> Advance:
        key = (rule, tz, anchor_key(rule, created), end)
        found = self._advances.get(key)
        if found is None:
            found = self._advances[key] = advance(rule, created, tz, start, end)
            self.computations += 1
        return found

    def local_date(self, instant: dt.datetime, tz: str) -> dt.date:
        """The local date of a boundary instant in `tz`."""
        key = (instant, tz)
        found = self._dates.get(key)
        if found is None:
            found = self._dates[key] = local_date(instant, tz)
        return found


# Plain standard-library values, so database drivers never meet pendulum's subclasses.
def _plain_date(local: dt.datetime) -> dt.date:
    return dt.date(local.year, local.month, local.day)


def _plain_utc(instant: dt.datetime) -> dt.datetime:
    utc = instant.astimezone(dt.UTC)
    return dt.datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, dt.UTC
    )
