"""Invoice and balance rules, pure: no I/O, no clock; every instant is passed in.

Balances (the panel's convention, see `models.customer.Customer`):

- postpaid: `balance` is what the customer owes; a charge raises it, a payment lowers it
  (it may go below zero: the customer is in credit). A charge is accepted while the
  balance is below the credit limit; the charge that makes the balance reach (or pass) the
  limit is still accepted, because the service it bills has already been used, and it
  blocks the customer. A blocked customer's further charges are refused with
  `credit_limit_reached` until a payment brings the balance back under the limit, which
  unblocks. No credit limit (null) means the customer is never blocked for the balance.
- prepaid: `balance` is the available funds; a charge lowers it, a top-up raises it. A
  charge greater than the available funds is refused with `insufficient_funds` (funds
  never go below zero); a charge that brings them to exactly zero is accepted and blocks;
  a top-up that leaves funds above zero unblocks.

The balance block (`credit_limit` for postpaid, `no_funds` for prepaid) is derived from the
balance and the limit by these rules at every balance change; a charge is judged on the
balance and the limit themselves, so a raised credit limit takes effect at the next charge.
It is one reason among others (`models.customer.BlockReason`): lifting it leaves a customer
suspended for another reason (operator, overdue) blocked. A charge is judged by the balance
rules only, whatever other reason blocks the customer: it bills a service already used.

Invoices: each line is a charge amount in the currency's minor units; the subtotal is
their sum; tax is computed once, on the subtotal (not per line), rounded half-up to the
currency's minor units; total = subtotal + tax.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from babel.dates import format_date, format_skeleton
from babel.numbers import format_currency, format_percent, get_currency_symbol

from models.customer import BlockReason
from models.money import money_text, round_money

PREPAID = "prepaid"
POSTPAID = "postpaid"

DEFAULT_LOCALE = "en_US"
EN_DASH = " \N{EN DASH} "


@dataclass(frozen=True)
class BalanceChange:
    """The outcome of an accepted charge or payment."""

    delta: Decimal  # signed change of `balance`, in the balance's own convention
    balance_after: Decimal
    blocked_after: bool


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def is_blocked(balance_control: str, balance: Decimal, credit_limit: Decimal | None) -> bool:
    """Whether a customer with this balance may no longer use services."""
    if balance_control == PREPAID:
        return balance <= 0
    return credit_limit is not None and balance >= credit_limit


def balance_block_reason(balance_control: str) -> BlockReason:
    """The block reason the balance rules decide for this kind of customer."""
    return BlockReason.NO_FUNDS if balance_control == PREPAID else BlockReason.CREDIT_LIMIT


def apply_charge(
    balance_control: str,
    balance: Decimal,
    credit_limit: Decimal | None,
    amount: Decimal,
    *,
    currency: str | None = None,
) -> BalanceChange | Refusal:
    """Accept or refuse a charge of `amount` (> 0) against the current balance; amounts in
    refusals are written in `currency`'s minor units (as given, without one)."""
    if amount <= 0:
        return Refusal("not_positive", "a charge amount must be greater than zero")
    if balance_control == PREPAID:
        if amount > balance:
            return Refusal(
                "insufficient_funds",
                f"the charge of {money_text(amount, currency)} exceeds the available funds "
                f"of {money_text(balance, currency)}",
            )
        after = balance - amount
        return BalanceChange(-amount, after, is_blocked(PREPAID, after, None))
    if credit_limit is not None and balance >= credit_limit:
        return Refusal(
            "credit_limit_reached",
            f"the balance owed ({money_text(balance, currency)}) has reached the credit limit "
            f"({money_text(credit_limit, currency)}); "
            "the customer is blocked until a payment",
        )
    after = balance + amount
    return BalanceChange(amount, after, is_blocked(POSTPAID, after, credit_limit))


def apply_payment(
    balance_control: str,
    balance: Decimal,
    credit_limit: Decimal | None,
    amount: Decimal,
) -> BalanceChange | Refusal:
    """A payment (postpaid, lowers what is owed) or a top-up (prepaid, raises the funds)."""
    if amount <= 0:
        return Refusal("not_positive", "a payment amount must be greater than zero")
    delta = amount if balance_control == PREPAID else -amount
    after = balance + delta
    return BalanceChange(delta, after, is_blocked(balance_control, after, credit_limit))


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def invoice_totals(amounts: Iterable[Decimal], tax_rate: Decimal, currency: str) -> Totals:
    """Subtotal of the lines, tax on the subtotal, total; each rounded to `currency`."""
    if tax_rate < 0:
        raise ValueError(f"a tax rate cannot be negative, got {tax_rate}")
    subtotal = round_money(sum((round_money(a, currency) for a in amounts), Decimal(0)), currency)
    tax = round_money(subtotal * tax_rate, currency)
    return Totals(subtotal=subtotal, tax=tax, total=subtotal + tax)


def split_gross(gross: Decimal, tax_rate: Decimal, currency: str) -> Totals:
    """An amount that includes tax (a credit note's) as net + tax at `tax_rate`: the net is
    rounded half-up to the currency and the tax is the rest, so net + tax == gross."""
    if tax_rate < 0:
        raise ValueError(f"a tax rate cannot be negative, got {tax_rate}")
    total = round_money(gross, currency)
    net = round_money(total / (1 + tax_rate), currency)
    return Totals(subtotal=net, tax=total - net, total=total)


def local_date(at: dt.datetime, tz: str) -> dt.date:
    """The calendar date of the aware instant `at` in the IANA zone `tz`."""
    from zoneinfo import ZoneInfo

    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r} given where an instant is required")
    return at.astimezone(ZoneInfo(tz)).date()


def due_date(issue_date: dt.date, grace_period_days: int) -> dt.date:
    if grace_period_days < 0:
        raise ValueError(f"a grace period cannot be negative, got {grace_period_days}")
    return issue_date + dt.timedelta(days=grace_period_days)


def covered_dates(start_date: dt.date, end_date: dt.date) -> tuple[dt.date, dt.date]:
    """The local dates a period `[start_date, end_date)` covers, both inclusive."""
    if end_date <= start_date:
        raise ValueError(f"a period ends after it starts, got {start_date} .. {end_date}")
    return start_date, end_date - dt.timedelta(days=1)


@lru_cache(maxsize=4096)  # the same few periods recur across a whole batch
def covered_dates_text(first: dt.date, last: dt.date, locale: str = DEFAULT_LOCALE) -> str:
    """The inclusive local dates as the customer reads them, with an en dash between:
    "March 19 - April 18, 2026", "19 mars - 18 avril 2026"."""
    if first == last:
        return format_date(first, "long", locale=locale)
    if first.year == last.year:
        # The locale's own month-and-day order: "March 19", "19 mars", "19. März".
        return f"{format_skeleton('MMMMd', first, locale=locale)}{EN_DASH}" + format_date(
            last, "long", locale=locale
        )
    return f"{format_date(first, 'long', locale=locale)}{EN_DASH}" + format_date(
        last, "long", locale=locale
    )


NBSP = "\N{NO-BREAK SPACE}"


def format_money(amount: Decimal, currency: str, locale: str = DEFAULT_LOCALE) -> str:
    """`amount` as the customer reads it: "$1,234.50", "¥1,235", "BHD 1.235", "10,13 €".

    Babel does not apply CLDR's currency spacing, so "BHD1.235" would be printed; as CLDR
    says, a symbol that ends (or starts) with a letter next to a digit gets a no-break space.
    """
    text = str(format_currency(round_money(amount, currency), currency, locale=locale))
    symbol = str(get_currency_symbol(currency, locale))
    at = text.find(symbol)
    if at < 0 or not symbol:
        return text
    end = at + len(symbol)
    if end < len(text) and text[end].isdigit() and symbol[-1].isalpha():
        text = text[:end] + NBSP + text[end:]
    if at > 0 and text[at - 1].isdigit() and symbol[0].isalpha():
        text = text[:at] + NBSP + text[at:]
    return text


def format_rate(rate: Decimal, locale: str = DEFAULT_LOCALE) -> str:
    """A tax rate as a percentage: Decimal("0.08875") -> "8.875%"."""
    return str(format_percent(rate, "#,##0.####%", locale=locale))


@lru_cache(maxsize=4096)
def format_long_date(day: dt.date, locale: str = DEFAULT_LOCALE) -> str:
    return str(format_date(day, "long", locale=locale))
