"""Recurring fees: which fee lines a closed period's invoice carries. Pure: no I/O, no clock.

A plan charges a fee per billing period (per unit of quantity), in advance (for the period
about to start) or in arrears (for the period that just ended).

**Proration.** A fee is prorated by local days of the billing timezone:

    amount = fee x quantity x days covered / days of the whole period

*Days covered* are the local dates the subscription and the billed period have in common.
A subscription covers its first day (a customer created on March 19 at 15:00 pays for March
19) but not the day it ends (a plan ended on the 10th covers the 1st to the 9th: 9 days);
a quantity change on a day bills the old quantity up to that day and the new one from it.
*The whole period* is the rule's regular period that the billed period belongs to (the one
holding its last day): the calendar month for `monthly`, so the first period of a customer
created on March 19 covers 13 of 31 days; the Monday-to-Sunday week for `weekly`; the half
month for `semimonthly`; the period from the anchor for `monthly_anniversary` and `30_days`
(whose first period is whole). A full period bills exactly fee x quantity.

**Rounding.** Each line is rounded to the currency's minor units, half-up, *at its ends*:
a line covering day offsets `[i, j)` of an `n`-day period is
`round(fee x quantity x j / n) - round(fee x quantity x i / n)`. Rounding every line on its
own could bill more than the whole fee when a period is cut in several pieces (seven 5-day
pieces of a 0.10 fee would each round 0.016 up to 0.02); rounding the cumulative share at
each end makes consecutive pieces add up to exactly the share of the days they cover, so
partial periods never bill more than the full fee. A line differs from its own rounded
share by at most one minor unit.

**Which invoice.** An in-advance fee for a period is billed on the invoice of the period
before it when the subscription began before that period did; a subscription that began
during a period (the customer's first period included) has that period's fee on the
period's own invoice. When an advance-billed subscription covers fewer days than were
billed (ended, quantity changed, customer closed mid-period), that period's invoice
carries a credit line for the days not used. Each fee thus has one invoice, whatever order
invoices are generated in.

**Exactly once.** The caller records every fee billed per (subscription, period start,
kind), unique in the database, and never bills a recorded one again.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final

from models.invoicing_rules import covered_dates_text
from models.money import round_money
from models.periods import (
    BillingPeriod,
    next_boundary_date,
    parse_rule,
    period_start_date_containing,
)

# Calendar rules do not depend on the customer's anchor, so their regular periods are those
# of a customer created on a day that is a boundary of all of them: 0001-01-01 is a Monday
# and the first of a month.
_CALENDAR_ANCHOR: Final = dt.date(1, 1, 1)
_ANCHORED_RULES: Final = frozenset({BillingPeriod.MONTHLY_ANNIVERSARY, BillingPeriod.THIRTY_DAYS})
_ONE_DAY: Final = dt.timedelta(days=1)
# Enough digits that fee x quantity x days is exact before the one rounding step.
_EXACT: Final = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)


class BillingMode(StrEnum):
    """When a plan's fee for a period is billed."""

    ADVANCE = "advance"  # on the invoice of the period before (for the period that starts)
    ARREARS = "arrears"  # on the invoice of the period itself (for the period that ended)


class FeeKind(StrEnum):
    """What a recorded fee is; one of each per (subscription, period start) at most."""

    ADVANCE = "advance"
    ARREARS = "arrears"
    CREDIT = "credit"  # advance-billed days the subscription did not use


@dataclass(frozen=True, order=True)
class Days:
    """Local dates `[start, end)` (end exclusive); `end` None means open-ended."""

    start: dt.date
    end: dt.date | None

    @property
    def count(self) -> int:
        if self.end is None:
            raise ValueError("an open-ended span has no day count")
        return (self.end - self.start).days


def whole_period(rule: BillingPeriod | str, anchor: dt.date, period: Days) -> Days:
    """The rule's regular period that `period` (whole, or cut short) belongs to.

    It is the one holding the period's last day; `anchor` (the customer's period anchor,
    its creation date) matters only for `monthly_anniversary` and `30_days`.
    """
    parsed = parse_rule(rule)
    if period.end is None or period.end <= period.start:
        raise ValueError(f"a billed period has at least one day, got {period}")
    base = anchor if parsed in _ANCHORED_RULES else _CALENDAR_ANCHOR
    last = max(period.end - _ONE_DAY, base)
    start = period_start_date_containing(parsed, base, last)
    return Days(start, next_boundary_date(parsed, base, start))


@dataclass(frozen=True)
class Coverage:
    """Which days of a whole period a line bills: day offsets `[first, end)` of `period_days`."""

    first: int
    end: int
    period_days: int

    @property
    def days(self) -> int:
        return self.end - self.first

    @property
    def whole(self) -> bool:
        return self.first == 0 and self.end == self.period_days


def coverage(subscription: Days, period: Days, whole: Days) -> Coverage | None:
    """The days `subscription` covers of `period` (within its whole period), or None."""
    assert period.end is not None
    assert whole.end is not None
    first = max(subscription.start, period.start, whole.start)
    end = min(subscription.end or dt.date.max, period.end, whole.end)
    if end <= first:
        return None
    return Coverage(
        (first - whole.start).days, (end - whole.start).days, (whole.end - whole.start).days
    )


def prorate(full_amount: Decimal, covered: Coverage, currency: str) -> Decimal:
    """`full_amount` (fee x quantity) for the covered days, rounded at both ends (see module)."""
    if full_amount < 0:
        raise ValueError(f"a fee cannot be negative, got {full_amount}")
    if covered.whole:
        return round_money(full_amount, currency)
    n = covered.period_days

    def share(day: int) -> Decimal:
        return round_money(_EXACT.divide(_EXACT.multiply(full_amount, day), n), currency)

    return share(covered.end) - share(covered.first)


@dataclass(frozen=True)
class BilledPeriod:
    """A period fees are billed for: `key` identifies it in the record of fees billed (its
    start instant), `days` are its local dates and `whole` its regular period."""

    key: dt.datetime
    days: Days
    whole: Days


@dataclass(frozen=True)
class Billed:
    """An in-advance fee already recorded: its amount and the local dates it billed."""

    amount: Decimal
    days: Days


@dataclass(frozen=True)
class Subscription:
    """One term of a subscription: a plan at one quantity over local dates `days`."""

    id: int
    plan: str
    mode: BillingMode
    unit_fee: Decimal
    quantity: int
    days: Days
    started: dt.datetime  # the instant the term began

    @property
    def full_amount(self) -> Decimal:
        return self.unit_fee * self.quantity


@dataclass(frozen=True)
class FeeLine:
    """A fee line to record and put on the invoice."""

    subscription_id: int
    kind: FeeKind
    period_key: dt.datetime
    first_day: dt.date  # first local date billed (or credited)
    last_day: dt.date  # last local date billed (inclusive)
    days: int
    period_days: int
    amount: Decimal
    plan: str
    quantity: int

    @property
    def prorated(self) -> bool:
        return self.days != self.period_days


def _line(
    term: Subscription, kind: FeeKind, period: BilledPeriod, covered: Coverage, amount: Decimal
) -> FeeLine:
    return FeeLine(
        subscription_id=term.id,
        kind=kind,
        period_key=period.key,
        first_day=period.whole.start + dt.timedelta(days=covered.first),
        last_day=period.whole.start + dt.timedelta(days=covered.end - 1),
        days=covered.days,
        period_days=covered.period_days,
        amount=amount,
        plan=term.plan,
        quantity=term.quantity,
    )


def fee_lines(
    closed: BilledPeriod,
    following: BilledPeriod | None,
    subscriptions: Iterable[Subscription],
    advance_billed: Mapping[tuple[int, dt.datetime], Billed],
    already: Iterable[tuple[int, dt.datetime, FeeKind]],
    currency: str,
) -> list[FeeLine]:
    """The fee lines of the invoice of `closed`.

    `following` is the period that starts when `closed` ends (None when the customer was
    closed: no period follows). `subscriptions` are every term that may overlap either
    period; `advance_billed` maps (subscription id, period key) to the amount already billed
    in advance; `already` lists the (subscription, period key, kind) fees recorded, which
    are never billed again.

    - arrears terms: their days in `closed`;
    - advance terms: their days in `following` if they began before it, and in `closed` if
      they began during it;
    - a credit for each advance-billed term of `closed` that used fewer days than billed.
    """
    done = set(already)
    lines: list[FeeLine] = []
    terms = list(subscriptions)
    for term in terms:
        periods = (closed,) if term.mode == BillingMode.ARREARS else (closed, following)
        kind = FeeKind.ARREARS if term.mode == BillingMode.ARREARS else FeeKind.ADVANCE
        for period in periods:
            if period is None or (term.id, period.key, kind) in done:
                continue
            if kind == FeeKind.ADVANCE and (term.started < period.key) != (period is following):
                continue  # the other invoice's fee (see "Which invoice")
            covered = coverage(term.days, period.days, period.whole)
            if covered is None:
                continue
            amount = prorate(term.full_amount, covered, currency)
            lines.append(_line(term, kind, period, covered, amount))
    for term in terms:
        billed = advance_billed.get((term.id, closed.key))
        if (
            term.mode != BillingMode.ADVANCE
            or billed is None
            or (term.id, closed.key, FeeKind.CREDIT) in done
        ):
            continue
        covered = coverage(term.days, closed.days, closed.whole)
        used = Decimal(0) if covered is None else prorate(term.full_amount, covered, currency)
        if used >= billed.amount:
            continue
        unused = _unused_days(coverage(billed.days, closed.whole, closed.whole), covered)
        lines.append(_line(term, FeeKind.CREDIT, closed, unused, used - billed.amount))
    return lines


def _unused_days(billed: Coverage | None, used: Coverage | None) -> Coverage:
    """The billed days a term did not use (for the credit line's text): those after the
    days it used, or before them if it used the last billed day."""
    assert billed is not None
    if used is None:
        return billed
    if used.end < billed.end:
        return Coverage(used.end, billed.end, billed.period_days)
    return Coverage(billed.first, used.first, billed.period_days)


def describe(line: FeeLine) -> str:
    """The invoice text of a fee line: plan, quantity, the dates billed, how prorated."""
    what = (
        line.plan if line.quantity == 1 else f"{line.plan} \N{MULTIPLICATION SIGN} {line.quantity}"
    )
    dates = covered_dates_text(line.first_day, line.last_day)
    notes = [f"{line.days}/{line.period_days} days"] if line.prorated else []
    if line.kind == FeeKind.ADVANCE:
        notes.append("in advance")
    if line.kind == FeeKind.CREDIT:
        return f"{what}, {dates} not used (credit, {line.days}/{line.period_days} days)"
    return f"{what}, {dates}" + (f" ({', '.join(notes)})" if notes else "")
