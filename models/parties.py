"""Checks for the details of an invoice's parties, pure: country, locale, tax id, IBAN,
BIC, e-mail, postal address. Each returns the normalised value or raises `PartyError`
with a code and a message; the catalog file and customer intake report them as
`{field, code, message}`.

Well-kept libraries decide: pycountry (ISO 3166 countries), Babel (CLDR locales),
python-stdnum (VAT numbers of the EU and of every country it knows, IBAN, BIC) and
email-validator (address syntax, no DNS look-up).
"""

from __future__ import annotations

from typing import Any

import pycountry
from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email
from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.util import get_cc_module

from models.invoice_view import Address

ADDRESS_LINES = 3  # EN 16931 carries three street lines


class PartyError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_country(code: object) -> str:
    """An ISO 3166-1 alpha-2 code, upper case: "FR"."""
    if not isinstance(code, str) or pycountry.countries.get(alpha_2=code.upper()) is None:
        raise PartyError("invalid_country", f"{code!r} is not an ISO 3166 country code (e.g. 'FR')")
    return code.upper()


def check_locale(text: object) -> str:
    """A CLDR locale identifier, normalised: "fr-fr" → "fr_FR"."""
    if not isinstance(text, str) or not text.strip():
        raise PartyError("invalid_locale", "a locale is a name such as 'fr_FR' or 'de'")
    try:
        return str(Locale.parse(text.strip().replace("-", "_")))
    except (ValueError, UnknownLocaleError):
        raise PartyError(
            "invalid_locale", f"{text!r} is not a known locale (e.g. 'en_US', 'fr_FR', 'de')"
        ) from None


def check_email(text: object) -> str:
    """An e-mail address whose syntax email-validator accepts, normalised."""
    if not isinstance(text, str):
        raise PartyError("invalid_email", "must be an e-mail address")
    try:
        return str(validate_email(text, check_deliverability=False).normalized)
    except EmailNotValidError as error:
        raise PartyError("invalid_email", f"{text!r} is not an e-mail address: {error}") from None


def check_tax_id(text: object, country: str | None = None) -> str:
    """A tax id in its compact form. An EU VAT number (with its country prefix) or, for a
    country python-stdnum knows, its VAT number must have a valid shape and check digits;
    other ids are kept as given."""
    if not isinstance(text, str) or not text.strip() or len(text.strip()) > 50:
        raise PartyError("invalid_tax_id", "a tax id is a non-empty text of at most 50 characters")
    value = text.strip()
    module: Any = None
    if value[:2].lower() in eu_vat.MEMBER_STATES:
        module = eu_vat
    elif country:
        module = get_cc_module(country.lower(), "vat")
    if module is None:
        return value
    try:
        return str(module.validate(value))
    except StdnumError as error:
        raise PartyError(
            "invalid_tax_id", f"{value!r} is not a valid VAT number: {error}"
        ) from None


def check_iban(text: object) -> str:
    try:
        return str(stdnum_iban.validate(str(text)))
    except StdnumError as error:
        raise PartyError("invalid_iban", f"{text!r} is not a valid IBAN: {error}") from None


def check_bic(text: object) -> str:
    try:
        return str(stdnum_bic.validate(str(text)))
    except StdnumError as error:
        raise PartyError("invalid_bic", f"{text!r} is not a valid BIC: {error}") from None


def check_address(data: object) -> Address:
    """A postal address from `{lines: [..], city, postal_code, region, country}`."""
    if not isinstance(data, dict):
        raise PartyError(
            "invalid_address", "an address is an object with lines, city, postal_code, country"
        )
    unknown = set(data) - {"lines", "city", "postal_code", "region", "country"}
    if unknown:
        raise PartyError("invalid_address", f"unknown address keys: {', '.join(sorted(unknown))}")
    lines = data.get("lines", [])
    if (
        not isinstance(lines, list)
        or len(lines) > ADDRESS_LINES
        or not all(isinstance(line, str) and 0 < len(line) <= 200 for line in lines)
    ):
        raise PartyError(
            "invalid_address", f"lines is a list of at most {ADDRESS_LINES} non-empty texts"
        )
    texts = {}
    for key in ("city", "postal_code", "region"):
        value = data.get(key, "")
        if not isinstance(value, str) or len(value) > 100:
            raise PartyError("invalid_address", f"{key} is a text of at most 100 characters")
        texts[key] = value.strip()
    if "country" not in data:
        raise PartyError("invalid_address", "an address needs its country (ISO code, e.g. 'FR')")
    return Address(
        lines=tuple(line.strip() for line in lines),
        country=check_country(data["country"]),
        **texts,
    )
