"""Changing a customer's billing period rule or timezone, and cutting its last period.

Pure: no I/O, no clock. A change asked during a period takes effect at that period's end
(the *switch boundary*): the period still closes by the old rule and zone, and the next one
runs from the switch boundary to the first boundary of the new rule in the new zone after
it. The period anchor (the creation date) is kept, so a customer moved to
`monthly_anniversary` bills from the day of the month it was created on, and one moved to
`30_days` keeps counting 30 days from its creation:

    monthly, created Jan 19 -> weekly at Apr 1 (a Wednesday): [Apr 1, Apr 6), then Mondays
    monthly -> monthly_anniversary at Apr 1: [Apr 1, Apr 19), then the 19th to the 19th

With a new timezone the first period starts at the old zone's boundary instant (so periods
still tile time with no gap and no overlap) and ends at a day start of the new zone; every
later boundary is a day start of the new zone.
"""

from __future__ import annotations

import datetime as dt

from models.invoicing_rules import local_date
from models.periods import (
    BillingPeriod,
    day_start,
    next_boundary_date,
    period_start_date_containing,
)


def _utc(instant: dt.datetime) -> dt.datetime:
    utc = instant.astimezone(dt.UTC)
    return dt.datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, dt.UTC
    )


def end_after_switch(
    rule: BillingPeriod | str,
    anchor: dt.date,
    tz: str,
    boundary: dt.datetime,
    boundary_date: dt.date,
) -> dt.datetime:
    """End (UTC) of the first period under `rule` and `tz`, which starts at `boundary`.

    `boundary_date` is the local date the old rule's period starting at `boundary` begins
    on (in the old zone); `anchor` is the customer's period anchor.
    """
    start = period_start_date_containing(rule, anchor, max(boundary_date, anchor))
    end = next_boundary_date(rule, anchor, start)
    # A new zone far ahead of the old one can put that boundary's day start at or before the
    # switch: the period runs to the next one instead, so it is never empty.
    while day_start(end, tz) <= boundary:
        end = next_boundary_date(rule, anchor, end)
    return _utc(day_start(end, tz))


def cut_end_date(at: dt.datetime, tz: str) -> dt.date:
    """The exclusive end date of a period cut at the instant `at`: the local date of `at`
    if `at` starts that day, else the day after (the period covers part of that day)."""
    local = local_date(at, tz)
    if _utc(day_start(local, tz)) == _utc(at):
        return local
    return local + dt.timedelta(days=1)
