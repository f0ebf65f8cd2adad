"""Recurring fees: proration by local days, rounding at the ends, exactly-once selection."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.fees import (
    Billed,
    BilledPeriod,
    BillingMode,
    Coverage,
    Days,
    FeeKind,
    Subscription,
    coverage,
    describe,
    fee_lines,
    prorate,
    whole_period,
)
from models.money import round_money
from models.periods import BillingPeriod, first_period, next_period

D = dt.date
UTC = dt.UTC


@pytest.mark.parametrize(
    ("rule", "anchor", "period", "whole"),
    [
        # The contract's own examples: a first monthly period from March 19 is part of March.
        ("monthly", D(2026, 3, 19), Days(D(2026, 3, 19), D(2026, 4, 1)), (D(2026, 3, 1), 31)),
        ("monthly", D(2026, 1, 5), Days(D(2026, 2, 1), D(2026, 3, 1)), (D(2026, 2, 1), 28)),
        ("monthly", D(2024, 1, 5), Days(D(2024, 2, 1), D(2024, 3, 1)), (D(2024, 2, 1), 29)),
        # A monthly period cut on the 10th (closed customer) is still part of its month.
        ("monthly", D(2026, 1, 5), Days(D(2026, 3, 1), D(2026, 3, 11)), (D(2026, 3, 1), 31)),
        # Weekly: created on a Wednesday, the week runs from Monday.
        ("weekly", D(2026, 4, 1), Days(D(2026, 4, 1), D(2026, 4, 6)), (D(2026, 3, 30), 7)),
        ("weekly", D(2026, 4, 1), Days(D(2026, 4, 6), D(2026, 4, 13)), (D(2026, 4, 6), 7)),
        ("semimonthly", D(2026, 2, 20), Days(D(2026, 2, 20), D(2026, 3, 1)), (D(2026, 2, 16), 13)),
        ("semimonthly", D(2026, 3, 3), Days(D(2026, 3, 3), D(2026, 3, 16)), (D(2026, 3, 1), 15)),
        ("daily", D(2026, 3, 3), Days(D(2026, 3, 9), D(2026, 3, 10)), (D(2026, 3, 9), 1)),
        # Anchored rules: the first period is whole, whatever its length.
        (
            "monthly_anniversary",
            D(2026, 1, 30),
            Days(D(2026, 1, 30), D(2026, 2, 28)),
            (D(2026, 1, 30), 29),
        ),
        (
            "monthly_anniversary",
            D(2026, 1, 30),
            Days(D(2026, 2, 28), D(2026, 3, 10)),
            (D(2026, 2, 28), 28),
        ),
        ("30_days", D(2026, 3, 20), Days(D(2026, 3, 20), D(2026, 4, 19)), (D(2026, 3, 20), 30)),
        ("30_days", D(2026, 3, 20), Days(D(2026, 4, 19), D(2026, 4, 25)), (D(2026, 4, 19), 30)),
    ],
)
def test_whole_period_table(rule: str, anchor: D, period: Days, whole: tuple[D, int]) -> None:
    """The whole period a billed period is prorated against is the rule's regular period."""
    found = whole_period(rule, anchor, period)
    assert (found.start, found.count) == whole


@pytest.mark.parametrize(
    ("subscription", "period", "expected"),
    [
        # Created March 19: 13 of 31 days.
        (Days(D(2026, 3, 19), None), Days(D(2026, 3, 19), D(2026, 4, 1)), (18, 31, 13)),
        # Ended on the 10th: the 1st to the 9th.
        (Days(D(2026, 1, 1), D(2026, 3, 10)), Days(D(2026, 3, 1), D(2026, 4, 1)), (0, 9, 9)),
        # Started and ended inside the period.
        (Days(D(2026, 3, 5), D(2026, 3, 7)), Days(D(2026, 3, 1), D(2026, 4, 1)), (4, 6, 2)),
        # Started and ended on the same day: nothing billed.
        (Days(D(2026, 3, 5), D(2026, 3, 5)), Days(D(2026, 3, 1), D(2026, 4, 1)), None),
        # Outside the period.
        (Days(D(2026, 4, 5), None), Days(D(2026, 3, 1), D(2026, 4, 1)), None),
        (Days(D(2026, 1, 5), D(2026, 3, 1)), Days(D(2026, 3, 1), D(2026, 4, 1)), None),
    ],
)
def test_coverage_table(subscription: Days, period: Days, expected: object) -> None:
    """A subscription covers its first day and not the day it ends."""
    whole = whole_period("monthly", D(2020, 1, 1), period)
    found = coverage(subscription, period, whole)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found.first, found.end, found.days) == expected


@pytest.mark.parametrize(
    ("fee", "first", "end", "n", "currency", "amount"),
    [
        ("31.00", 18, 31, 31, "USD", "13.00"),
        ("10.00", 18, 31, 31, "USD", "4.19"),  # 10 - round(5.806) = 10 - 5.81
        ("10.00", 0, 9, 31, "USD", "2.90"),  # round(2.903)
        ("10.00", 0, 31, 31, "USD", "10.00"),
        ("1000", 0, 15, 31, "JPY", "484"),  # round(483.87)
        ("1.000", 0, 1, 7, "BHD", "0.143"),
        ("0.00", 0, 3, 7, "USD", "0.00"),
    ],
)
def test_prorate_table(fee: str, first: int, end: int, n: int, currency: str, amount: str) -> None:
    """Prorated amounts are the rounded cumulative share at the end minus that at the start."""
    assert prorate(Decimal(fee), Coverage(first, end, n), currency) == Decimal(amount)


def test_per_line_rounding_cannot_exceed_the_fee() -> None:
    """Seven 5-day pieces of a 0.10 fee over 31 days bill at most 0.10 (not 7 x 0.02)."""
    pieces = [Coverage(i, min(i + 5, 31), 31) for i in range(0, 31, 5)]
    total = sum(prorate(Decimal("0.10"), c, "USD") for c in pieces)
    assert total == Decimal("0.10")


MONEY = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False)
CURRENCIES = st.sampled_from(["USD", "JPY", "BHD", "EUR"])


@settings(deadline=None)
@given(
    fee=MONEY,
    quantity=st.integers(1, 1000),
    n=st.integers(1, 31),
    cuts=st.lists(st.integers(0, 31), max_size=8),
    currency=CURRENCIES,
)
def test_consecutive_partial_periods_never_exceed_the_full_fee(
    fee: Decimal, quantity: int, n: int, cuts: list[int], currency: str
) -> None:
    """Consecutive pieces of one period bill at most (and, tiling it, exactly) the full fee."""
    full = round_money(fee, currency) * quantity
    points = sorted({0, n, *(c for c in cuts if c <= n)})
    pieces = [Coverage(a, b, n) for a, b in itertools.pairwise(points)]
    amounts = [prorate(full, piece, currency) for piece in pieces]
    assert sum(amounts) == full
    for size in range(len(pieces)):
        assert sum(amounts[:size]) <= full
    for piece, amount in zip(pieces, amounts, strict=True):
        assert amount >= 0
        exact = full * piece.days / n
        assert abs(amount - exact) <= Decimal(1).scaleb(-2 if currency != "JPY" else 0) + (
            Decimal(1) if currency == "JPY" else 0
        )


@settings(deadline=None)
@given(fee=MONEY, quantity=st.integers(1, 1000), currency=CURRENCIES)
def test_full_period_is_exactly_fee_times_quantity(
    fee: Decimal, quantity: int, currency: str
) -> None:
    """A whole period bills exactly fee x quantity, in every rule's period length."""
    unit = round_money(fee, currency)
    for n in (1, 7, 13, 15, 16, 28, 29, 30, 31):
        assert prorate(unit * quantity, Coverage(0, n, n), currency) == unit * quantity


@settings(deadline=None)
@given(
    rule=st.sampled_from(list(BillingPeriod)),
    created=st.dates(D(2000, 1, 1), D(2090, 12, 31)),
    fee=MONEY,
    periods=st.integers(1, 6),
)
def test_subscription_from_creation_bills_whole_periods_after_the_first(
    rule: BillingPeriod, created: D, fee: Decimal, periods: int
) -> None:
    """Every period after the first is billed whole; the first never more than whole."""
    tz = "America/New_York"
    period = first_period(rule, created, tz)
    for index in range(periods):
        days = Days(period.start.date(), period.end.date())
        whole = whole_period(rule, created, days)
        covered = coverage(Days(created, None), days, whole)
        assert covered is not None
        amount = prorate(fee, covered, "USD")
        if index == 0:
            assert amount <= fee
            assert covered.days == days.count
        else:
            assert covered.whole
            assert amount == fee
        period = next_period(rule, created, tz, period)


def _period(start: D, end: D, rule: str = "monthly") -> BilledPeriod:
    days = Days(start, end)
    key = dt.datetime(start.year, start.month, start.day, tzinfo=UTC)
    return BilledPeriod(key, days, whole_period(rule, D(2026, 1, 1), days))


MARCH = _period(D(2026, 3, 1), D(2026, 4, 1))
APRIL = _period(D(2026, 4, 1), D(2026, 5, 1))
APRIL_BILLED = Billed(Decimal("30.00"), APRIL.days)


def _term(
    id: int, mode: BillingMode, start: D, end: D | None = None, quantity: int = 1
) -> Subscription:
    started = dt.datetime(start.year, start.month, start.day, 9, tzinfo=UTC)
    return Subscription(
        id, f"plan {id}", mode, Decimal("30.00"), quantity, Days(start, end), started
    )


def test_arrears_bills_the_closed_period_and_advance_bills_both_at_first() -> None:
    """The first invoice bills arrears for the period, advance for it and the next one."""
    first = _period(D(2026, 3, 19), D(2026, 4, 1))
    lines = fee_lines(
        first,
        APRIL,
        [
            _term(1, BillingMode.ARREARS, D(2026, 3, 19)),
            _term(2, BillingMode.ADVANCE, D(2026, 3, 19)),
        ],
        {},
        [],
        "USD",
    )
    assert [(line.subscription_id, line.kind, line.days, line.amount) for line in lines] == [
        (1, FeeKind.ARREARS, 13, Decimal("12.58")),
        (2, FeeKind.ADVANCE, 13, Decimal("12.58")),
        (2, FeeKind.ADVANCE, 30, Decimal("30.00")),
    ]
    assert describe(lines[0]) == "plan 1, March 19 \N{EN DASH} March 31, 2026 (13/31 days)"
    assert describe(lines[2]) == "plan 2, April 1 \N{EN DASH} April 30, 2026 (in advance)"


def test_each_advance_fee_has_one_invoice_whatever_the_order() -> None:
    """A term begun before April bills April on March's invoice, never on April's own."""
    term = _term(2, BillingMode.ADVANCE, D(2026, 1, 1))
    on_april = fee_lines(APRIL, None, [term], {}, [], "USD")
    assert on_april == []
    on_march = fee_lines(MARCH, APRIL, [term], {}, [], "USD")
    assert [line.period_key for line in on_march] == [APRIL.key]


def test_advance_already_billed_is_never_billed_again() -> None:
    """A recorded advance fee is skipped; only the following period is billed."""
    term = _term(2, BillingMode.ADVANCE, D(2026, 1, 1))
    lines = fee_lines(
        MARCH,
        APRIL,
        [term],
        {(2, MARCH.key): Billed(Decimal("30.00"), MARCH.days)},
        [(2, MARCH.key, FeeKind.ADVANCE)],
        "USD",
    )
    assert [(line.period_key, line.amount) for line in lines] == [(APRIL.key, Decimal("30.00"))]


def test_quantity_change_mid_period_prorates_both_sides_in_advance() -> None:
    """10 seats billed for March in advance, 25 from March 15: credit 10 x 17 days, bill 25 x 17."""
    old = _term(1, BillingMode.ADVANCE, D(2026, 1, 1), D(2026, 3, 15), quantity=10)
    new = _term(2, BillingMode.ADVANCE, D(2026, 3, 15), quantity=25)
    lines = fee_lines(
        MARCH,
        APRIL,
        [old, new],
        {(1, MARCH.key): Billed(Decimal("300.00"), MARCH.days)},
        [(1, MARCH.key, FeeKind.ADVANCE)],
        "USD",
    )
    by_kind = {(line.subscription_id, line.kind, line.period_key): line for line in lines}
    assert by_kind[(2, FeeKind.ADVANCE, MARCH.key)].amount == Decimal("411.29")  # 750 x 17/31
    assert by_kind[(2, FeeKind.ADVANCE, APRIL.key)].amount == Decimal("750.00")
    credit = by_kind[(1, FeeKind.CREDIT, MARCH.key)]
    assert credit.amount == Decimal("-164.52")  # 300 x 14/31 = 135.48 used
    assert (credit.first_day, credit.last_day, credit.days) == (D(2026, 3, 15), D(2026, 3, 31), 17)
    assert describe(credit).endswith("not used (credit, 17/31 days)")
    assert (1, FeeKind.ADVANCE, APRIL.key) not in by_kind


def test_quantity_change_mid_period_prorates_both_sides_in_arrears() -> None:
    """In arrears, the old quantity is billed up to the change day and the new one from it."""
    old = _term(1, BillingMode.ARREARS, D(2026, 1, 1), D(2026, 3, 15), quantity=10)
    new = _term(2, BillingMode.ARREARS, D(2026, 3, 15), quantity=25)
    lines = fee_lines(MARCH, APRIL, [old, new], {}, [], "USD")
    assert [(line.subscription_id, line.days, line.amount) for line in lines] == [
        (1, 14, Decimal("135.48")),
        (2, 17, Decimal("411.29")),
    ]


def test_final_period_credits_the_advance_days_after_the_close() -> None:
    """A customer closed on April 10 gets back the advance fee of April 10-30, no next period."""
    cut = _period(D(2026, 4, 1), D(2026, 4, 11))
    term = _term(1, BillingMode.ADVANCE, D(2026, 1, 1), D(2026, 4, 10))
    lines = fee_lines(
        cut,
        None,
        [term],
        {(1, cut.key): Billed(Decimal("30.00"), APRIL.days)},
        [(1, cut.key, FeeKind.ADVANCE)],
        "USD",
    )
    assert [(line.kind, line.days, line.amount) for line in lines] == [
        (FeeKind.CREDIT, 21, Decimal("-21.00"))
    ]


def test_credit_is_given_once() -> None:
    """A credit already recorded is not repeated."""
    cut = _period(D(2026, 4, 1), D(2026, 4, 11))
    term = _term(1, BillingMode.ADVANCE, D(2026, 1, 1), D(2026, 4, 10))
    recorded = [(1, cut.key, FeeKind.ADVANCE), (1, cut.key, FeeKind.CREDIT)]
    assert (
        fee_lines(
            cut, None, [term], {(1, cut.key): Billed(Decimal("30.00"), APRIL.days)}, recorded, "USD"
        )
        == []
    )


@settings(deadline=None)
@given(
    change_day=st.integers(1, 30),
    before=st.integers(1, 50),
    after=st.integers(1, 50),
    mode=st.sampled_from(list(BillingMode)),
)
def test_quantity_change_bills_each_quantity_for_its_days(
    change_day: int, before: int, after: int, mode: BillingMode
) -> None:
    """Whatever the mode, a period with a quantity change nets to old x days + new x days."""
    change = D(2026, 3, 1) + dt.timedelta(days=change_day)
    old = _term(1, mode, D(2026, 1, 1), change, quantity=before)
    new = _term(2, mode, change, quantity=after)
    billed = (
        {(1, MARCH.key): Billed(Decimal(30 * before), MARCH.days)}
        if mode == BillingMode.ADVANCE
        else {}
    )
    recorded = [(1, MARCH.key, FeeKind.ADVANCE)] if billed else []
    lines = fee_lines(MARCH, APRIL, [old, new], billed, recorded, "USD")
    march = sum((line.amount for line in lines if line.period_key == MARCH.key), Decimal(0))
    net = march + sum((b.amount for b in billed.values()), Decimal(0))
    exact = Decimal(30) * (before * change_day + after * (31 - change_day)) / 31
    assert abs(net - exact) <= Decimal("0.02")
    assert net <= Decimal(30) * max(before, after)
