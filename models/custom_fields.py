"""Custom fields: the typed fields a customer class defines for its customers' custom data.

A value may be given as its JSON type or, since CSV carries only text, as its canonical text
form: integers `42` or `"42"`, booleans `true` or `"true"`/`"false"`, decimals `"12.50"` or
`12`, dates `"2026-03-19"`, e-mails `"ops@example.com"`. Stored values are normalised
(integers and booleans as JSON types, decimals, dates and e-mails as text).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from models.money import MAX_AMOUNT, parse_decimal_text
from models.validation import Problem, has_control_characters, is_email

CUSTOM_FIELD_TYPES: Final = ("string", "integer", "decimal", "boolean", "date", "email")
MAX_CUSTOM_TEXT_LENGTH: Final = 1000


@dataclass(frozen=True)
class CustomField:
    """A field a customer class defines for its customers' custom data."""

    name: str
    type: str
    mandatory: bool = False

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CustomField:
        return cls(str(raw["name"]), str(raw["type"]), bool(raw.get("mandatory", False)))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "mandatory": self.mandatory}


_INTEGER_TEXT: Final = re.compile(r"[+-]?\d{1,18}", re.ASCII)
MAX_CUSTOM_INTEGER: Final = 10**18


class _BadValue(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _as_string(value: object) -> str:
    if not isinstance(value, str):
        raise _BadValue("invalid_type", "must be a string")
    if len(value) > MAX_CUSTOM_TEXT_LENGTH:
        raise _BadValue("too_long", f"is at most {MAX_CUSTOM_TEXT_LENGTH} characters")
    if has_control_characters(value, allow="\t\n\r"):
        raise _BadValue("control_characters", "must not contain control characters")
    return value


def _as_integer(value: object) -> int:
    if isinstance(value, bool):
        raise _BadValue("invalid_type", "must be an integer")
    if isinstance(value, str):
        if not _INTEGER_TEXT.fullmatch(value.strip()):
            raise _BadValue("invalid_value", f"{value!r} is not an integer")
        value = int(value.strip())
    if not isinstance(value, int):
        raise _BadValue("invalid_type", "must be an integer")
    if abs(value) >= MAX_CUSTOM_INTEGER:
        raise _BadValue("too_large", f"must be smaller than {MAX_CUSTOM_INTEGER} in magnitude")
    return value


def _as_decimal(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _BadValue("invalid_type", 'must be a decimal string such as "12.50"')
    if isinstance(value, int) and abs(value) >= MAX_AMOUNT:
        raise _BadValue("too_large", f"must be smaller than {MAX_AMOUNT} in magnitude")
    amount = parse_decimal_text(value)
    if amount is None:
        raise _BadValue("invalid_value", f'{value!r} is not a decimal number such as "12.50"')
    if abs(amount) >= MAX_AMOUNT:
        raise _BadValue("too_large", f"must be smaller than {MAX_AMOUNT} in magnitude")
    return str(amount + 0)


def _as_boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    if isinstance(value, str):
        raise _BadValue("invalid_value", f"{value!r} is not true or false")
    raise _BadValue("invalid_type", "must be true or false")


def _as_date(value: object) -> str:
    if not isinstance(value, str):
        raise _BadValue("invalid_type", 'must be a date string such as "2026-03-19"')
    text = value.strip()
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise _BadValue("invalid_value", f"{value!r} is not a date such as 2026-03-19") from None


def _as_email(value: object) -> str:
    if not isinstance(value, str):
        raise _BadValue("invalid_type", "must be an e-mail address string")
    text = value.strip()
    if not is_email(text):
        raise _BadValue("invalid_value", f"{value!r} is not an e-mail address")
    return text


_CONVERTERS: Final[dict[str, Callable[[object], object]]] = {
    "string": _as_string,
    "integer": _as_integer,
    "decimal": _as_decimal,
    "boolean": _as_boolean,
    "date": _as_date,
    "email": _as_email,
}


def check_custom_data(
    data: Mapping[str, Any], fields: Iterable[CustomField], *, class_name: str
) -> tuple[dict[str, Any], list[Problem]]:
    """Custom data normalised to the class's field types, and every problem with it."""
    defined = {f.name: f for f in fields}
    clean: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in data.items():
        where = f"custom_data.{key}"
        spec = defined.get(key)
        if spec is None:
            known = ", ".join(sorted(defined)) or "none"
            problems.append(
                Problem(
                    where,
                    "unknown_custom_field",
                    f"customer class {class_name!r} has no custom field {key!r} (it has: {known})",
                )
            )
            continue
        if value is None:
            continue  # an explicit null is the same as leaving the field out
        converter = _CONVERTERS.get(spec.type)
        if converter is None:  # a class stored before a type was retired: keep as given
            clean[key] = value
            continue
        try:
            clean[key] = converter(value)
        except _BadValue as bad:
            problems.append(Problem(where, bad.code, f"{key} ({spec.type}) {bad.message}"))
    for spec in defined.values():
        if spec.mandatory and data.get(spec.name) is None:
            problems.append(
                Problem(
                    f"custom_data.{spec.name}",
                    "missing_custom_field",
                    f"customer class {class_name!r} requires custom field {spec.name!r} "
                    f"({spec.type})",
                )
            )
    return clean, problems
