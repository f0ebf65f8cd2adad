"""Money rules: which currencies exist, how many minor units each has, how to round.

Currency codes come from the ISO 4217 list in `pycountry`; minor units from CLDR via
`babel`. Amounts are `Decimal`, never float.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache

import pycountry
from babel.numbers import get_currency_precision

# ISO 4217 lists these codes but they are not money a customer can be billed in (precious
# metals, bond-market units, SDR, testing and "no currency"); ISO gives them no minor unit.
_NOT_BILLABLE = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)


# numeric(20, 4) holds 16 integer digits; refuse amounts that could not be stored or summed.
MAX_AMOUNT = Decimal(10) ** 14


class MoneyError(ValueError):
    """A currency or an amount that the money rules do not accept."""


class UnknownCurrency(MoneyError):
    pass


class TooManyDecimals(MoneyError):
    pass


@cache
def billable_currencies() -> frozenset[str]:
    """Every active ISO 4217 code a customer can be billed in."""
    return frozenset(c.alpha_3 for c in pycountry.currencies) - _NOT_BILLABLE


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in billable_currencies()


def check_currency(code: object) -> str:
    """`code` if it is a billable ISO 4217 code (upper case, exactly), else UnknownCurrency."""
    if not is_currency(code):
        raise UnknownCurrency(f"{code!r} is not an ISO 4217 currency code (e.g. 'USD', 'EUR')")
    assert isinstance(code, str)
    return code


@cache
def minor_units(code: str) -> int:
    """Digits after the decimal point: 2 for USD, 0 for JPY, 3 for BHD."""
    return int(get_currency_precision(check_currency(code)))


def quantum(code: str) -> Decimal:
    """The smallest amount of `code`: Decimal('0.01') for USD, Decimal('1') for JPY."""
    return Decimal(1).scaleb(-minor_units(code))


def round_money(amount: Decimal, code: str) -> Decimal:
    """`amount` rounded half-up to `code`'s minor units (commercial rounding on invoices)."""
    return amount.quantize(quantum(code), rounding=ROUND_HALF_UP)


def decimal_places(amount: Decimal) -> int:
    exponent = amount.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def parse_amount(raw: object, code: str) -> Decimal:
    """A money amount from a JSON string or integer, exact, within `code`'s minor units.

    Floats are refused: 0.1 has no exact binary form, and money must not depend on it.
    """
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise MoneyError('amount must be a decimal string such as "12.50" (or an integer)')
    try:
        amount = Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        raise MoneyError(f"{raw!r} is not a decimal number") from None
    if not amount.is_finite():
        raise MoneyError(f"{raw!r} is not a finite number")
    if abs(amount) >= MAX_AMOUNT:
        raise MoneyError(f"{raw!r} is too large (at most {MAX_AMOUNT - 1})")
    places = minor_units(code)
    if decimal_places(amount) > places:
        raise TooManyDecimals(f"{code} allows at most {places} decimal places, got {raw!r}")
    return amount.quantize(quantum(code))
