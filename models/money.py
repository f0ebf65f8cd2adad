"""Money rules: which currencies exist, how many minor units each has, how to round.

Currency codes come from the ISO 4217 list in `pycountry`; minor units from CLDR via
`babel`. Amounts are `Decimal`, never float.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from typing import Final

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
    """A currency or an amount that the money rules do not accept; `code` is the stable
    error code every payload reports it with."""

    code = "invalid_decimal"


class UnknownCurrency(MoneyError):
    code = "unknown_currency"


class TooManyDecimals(MoneyError):
    code = "too_many_decimals"


class AmountTooLarge(MoneyError):
    code = "too_large"


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


def money_text(amount: Decimal, code: str | None) -> str:
    """An amount for a message: in the currency's minor units, with its code ("1234.56 USD");
    without a (known) currency, as few digits as it needs ("1234.56")."""
    try:
        return f"{round_money(amount, code)} {code}" if code else f"{amount.normalize():f}"
    except MoneyError:
        return f"{amount.normalize():f} {code}"


_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


def parse_decimal_text(raw: str | int) -> Decimal | None:
    """A plain decimal (`"12.50"`, `"-3"`, `7`) as Decimal; None if it is not one.

    The one reader of decimal text: only ASCII digits and one optional point, no exponents
    (`"1E+2"`), no separators (`"12_000"`, `"1,000"`), no digits of other scripts (Arabic-Indic, …),
    no NaN or infinity, so what a person typed is exactly what is stored.
    """
    if isinstance(raw, int):
        return Decimal(raw)
    text = raw.strip()
    if len(text) > 64 or not _DECIMAL_TEXT.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None


def parse_decimal(raw: object, *, name: str = "amount") -> Decimal:
    """A decimal from a JSON string or integer, exactly as written and storable; `-0` is 0.

    Floats are refused: 0.1 has no exact binary form, and money must not depend on it.
    Raises MoneyError (`invalid_decimal`) or AmountTooLarge (`too_large`).
    """
    example = 'a decimal string such as "12.50"'
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        got = "a JSON float" if isinstance(raw, float) else type(raw).__name__
        raise MoneyError(f"{name} must be {example} (or a whole number), not {got}")
    if isinstance(raw, int) and abs(raw) >= MAX_AMOUNT:
        raise AmountTooLarge(f"{name} is too large (at most {MAX_AMOUNT - 1})")
    amount = parse_decimal_text(raw)
    if amount is None:
        raise MoneyError(f"{name} {str(raw)[:70]!r} is not {example}")
    if abs(amount) >= MAX_AMOUNT:
        raise AmountTooLarge(f"{name} is too large (at most {MAX_AMOUNT - 1})")
    # A stored -0 would print as "-0.00" on an invoice.
    return amount + 0


def parse_amount(raw: object, code: str, *, name: str = "amount") -> Decimal:
    """A money amount from a JSON string or integer, exact, within `code`'s minor units."""
    amount = parse_decimal(raw, name=name)
    places = minor_units(code)
    if decimal_places(amount) > places:
        raise TooManyDecimals(
            f"{code} amounts have at most {places} decimal places; got {amount.normalize():f}"
        )
    return amount.quantize(quantum(code))
