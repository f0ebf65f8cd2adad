"""Period arithmetic for the closer, done once per group of customers that share it.

A million customers whose periods end at the same local midnight under the same rule
share one next boundary, so the closer asks the period engine once per distinct
(rule, timezone, anchor, boundary) and reuses the answer for every customer in the group.
The anchor is only the part of the creation date the rule depends on: nothing for the
calendar rules, the anniversary day for `monthly_anniversary`, the day modulo 30 for
`30_days`. Every customer in a group therefore gets the answer the engine would have
given them alone.

A customer far behind (imported with an old creation date, or a worker down for days)
closes every ended period in one pass: `GroupedPeriods.catch_up` walks the engine from the
customer's current period to the first one that has not ended, step by step through the
same memo, so the periods are exactly those one-period-at-a-time closes would have
recorded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pendulum

from models.invoicing_rules import local_date
from models.periods import BillingPeriod, Period, next_period

# Memo entries kept before the memo starts over: plenty for the distinct boundaries of a
# normal run (rules x zones x anchors x boundaries), and a bound on memory when many
# far-behind customers in different zones walk thousands of boundaries each.
_MEMO_LIMIT = 1 << 17

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


@dataclass(frozen=True)
class EndedPeriod:
    """One period to record as closed: UTC instants and their local dates."""

    start: dt.datetime
    end: dt.datetime
    start_date: dt.date
    end_date: dt.date  # exclusive


@dataclass(frozen=True)
class CatchUp:
    """The ended periods one group of customers closes now, oldest first, and the period
    they move to (the first that has not ended, or the next one to close in a later pass)."""

    periods: tuple[EndedPeriod, ...]
    next_start: dt.datetime
    next_end: dt.datetime


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
            if len(self._advances) >= _MEMO_LIMIT:
                self._advances.clear()
            found = self._advances[key] = advance(rule, created, tz, start, end)
            self.computations += 1
        return found

    def catch_up(
        self,
        rule: str,
        created: dt.date,
        tz: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        until: dt.datetime,
        stop: dt.datetime | None,
        limit: int,
    ) -> CatchUp:
        """The periods from `[start, end)` on that have ended by `until`, at most `limit`
        of them, none ending at `stop` (a waiting rule or zone change: that period closes
        one by one, see tasks.period_changes). Raises ValueError when the engine refuses
        the first period; a refusal further on ends the walk there, so the periods before
        it still close (the next pass reports the refusal)."""
        periods: list[EndedPeriod] = []
        while end <= until and end != stop and len(periods) < limit:
            try:
                step = self.advance(rule, created, tz, start, end)
            except ValueError:
                if not periods:
                    raise
                break
            periods.append(EndedPeriod(start, end, self.local_date(start, tz), step.end_date))
            start, end = end, step.next_end
        return CatchUp(periods=tuple(periods), next_start=start, next_end=end)

    def local_date(self, instant: dt.datetime, tz: str) -> dt.date:
        """The local date of a boundary instant in `tz`."""
        key = (instant, tz)
        found = self._dates.get(key)
        if found is None:
            if len(self._dates) >= _MEMO_LIMIT:
                self._dates.clear()
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
