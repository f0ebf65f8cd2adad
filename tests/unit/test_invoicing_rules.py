"""Pure invoice rules: totals, tax and rounding per currency, dates as the customer reads them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from models.invoicing_rules import (
    covered_dates,
    covered_dates_text,
    due_date,
    format_money,
    format_rate,
    invoice_totals,
    local_date,
)

D = Decimal


@pytest.mark.parametrize(
    ("currency", "amounts", "rate", "subtotal", "tax", "total"),
    [
        # 0 minor units: tax 8% of 1235 = 98.8 -> 99
        ("JPY", ["1000", "235"], "0.08", "1235", "99", "1334"),
        # half-up at the unit: 10% of 125 = 12.5 -> 13
        ("JPY", ["125"], "0.1", "125", "13", "138"),
        # 2 minor units: 8.875% of 19.99 = 1.77411... -> 1.77
        ("USD", ["9.99", "10.00"], "0.08875", "19.99", "1.77", "21.76"),
        # half-up at the cent: 5% of 0.10 = 0.005 -> 0.01
        ("USD", ["0.10"], "0.05", "0.10", "0.01", "0.11"),
        # 3 minor units: 10% of 1.235 = 0.1235 -> 0.124 (half-up)
        ("BHD", ["1.000", "0.235"], "0.1", "1.235", "0.124", "1.359"),
        ("KWD", ["0.001"], "0.5", "0.001", "0.001", "0.002"),
        # no tax, no lines
        ("EUR", [], "0", "0", "0", "0"),
    ],
)
def test_totals_are_rounded_to_the_currency_minor_units(
    currency, amounts, rate, subtotal, tax, total
) -> None:
    """Subtotal, tax on the subtotal and total are exact and rounded half-up per currency."""
    totals = invoice_totals([D(a) for a in amounts], D(rate), currency)

    assert (totals.subtotal, totals.tax, totals.total) == (D(subtotal), D(tax), D(total))
    assert totals.total == totals.subtotal + totals.tax
    assert totals.total.as_tuple().exponent == -{"JPY": 0, "BHD": 3, "KWD": 3}.get(currency, 2)


def test_tax_is_computed_on_the_subtotal_not_per_line() -> None:
    """Three lines of 0.10 at 5% give 0.02 of tax (0.015 rounded), not 3 x 0.01 = 0.03."""
    totals = invoice_totals([D("0.10")] * 3, D("0.05"), "USD")

    assert totals.tax == D("0.02")


def test_a_negative_tax_rate_is_refused() -> None:
    """A negative rate is a configuration error, not a discount."""
    with pytest.raises(ValueError, match="negative"):
        invoice_totals([D("1")], D("-0.1"), "USD")


def test_due_date_adds_the_grace_period_to_the_issue_date() -> None:
    """Due = issue + grace days, across a month end; zero grace means due on issue."""
    assert due_date(dt.date(2026, 4, 19), 15) == dt.date(2026, 5, 4)
    assert due_date(dt.date(2026, 4, 19), 0) == dt.date(2026, 4, 19)


def test_covered_dates_end_the_day_before_the_exclusive_end() -> None:
    """A period [Mar 19, Apr 19) covers March 19 through April 18."""
    assert covered_dates(dt.date(2026, 3, 19), dt.date(2026, 4, 19)) == (
        dt.date(2026, 3, 19),
        dt.date(2026, 4, 18),
    )


@pytest.mark.parametrize(
    ("first", "last", "text"),
    [
        (dt.date(2026, 3, 19), dt.date(2026, 4, 18), "March 19 \u2013 April 18, 2026"),
        (dt.date(2025, 12, 19), dt.date(2026, 1, 18), "December 19, 2025 \u2013 January 18, 2026"),
        (dt.date(2026, 3, 19), dt.date(2026, 3, 19), "March 19, 2026"),
    ],
)
def test_covered_dates_read_as_the_customer_reads_them(first, last, text) -> None:
    """Same year, across a new year, and a single day."""
    assert covered_dates_text(first, last) == text


def test_the_issue_date_is_the_local_date_in_the_billing_timezone() -> None:
    """At 02:00 UTC on April 19 it is still April 18 in New York and already April 19 in Tokyo."""
    at = dt.datetime(2026, 4, 19, 2, 0, tzinfo=dt.UTC)

    assert local_date(at, "America/New_York") == dt.date(2026, 4, 18)
    assert local_date(at, "Asia/Tokyo") == dt.date(2026, 4, 19)


def test_money_is_formatted_with_the_currency_minor_units() -> None:
    """0, 2 and 3 minor units shown as the customer reads them."""
    assert format_money(D("1234.5"), "USD") == "$1,234.50"
    assert format_money(D("1235"), "JPY") == "\xa51,235"
    assert format_money(D("1.235"), "BHD") == "BHD\xa01.235"
    assert format_rate(D("0.08875")) == "8.875%"
