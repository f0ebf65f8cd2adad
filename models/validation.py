"""The input vocabulary every inbound payload shares: pure, no I/O, no clock.

- `Problem`: one refusal, `{field, code, message}`; `field` is None for the whole payload.
- `problems_from(error)`: the one translator from a pydantic `ValidationError` to problems,
  with this project's codes and plain messages (never pydantic's own phrasing).
- Text checks (`has_control_characters`, `check_text`), `is_email`.
- Instants: `parse_instant` (ISO-8601 with an offset, to UTC), `iso_utc` (the one way an
  instant is written out: UTC with `Z`), `check_not_future` (the clock-skew rule).

Codes used here and by the payloads built on it (intake, charges, payments, catalog):

| code | meaning |
| --- | --- |
| `not_an_object` | the payload is not a JSON object |
| `required` | a required key is missing (or null) |
| `unknown_field` | a key the payload does not define |
| `invalid_type` | the JSON type is wrong (a number where a string is expected, …) |
| `blank` | a text is empty after trimming |
| `too_long` | a text is longer than allowed |
| `control_characters` | a text holds control characters (NUL, …) or line separators |
| `invalid_datetime` | not an ISO-8601 instant with a UTC offset (or outside years 1-9999) |
| `in_future` | an instant later than now plus the allowed clock skew |
| `out_of_range` | a number outside the range the field accepts |
| `invalid_value` | any other value the field does not accept |
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

from pydantic import ValidationError
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import ErrorType


@dataclass(frozen=True)
class Problem:
    """One validation failure: which key, a stable code, and a message a person can act on."""

    field: str | None
    code: str
    message: str

    def as_json(self) -> dict[str, str | None]:
        return {"field": self.field, "code": self.code, "message": self.message}

    as_dict = as_json  # the name older callers use


def refusal(code: str, message: str) -> PydanticCustomError:
    """The error a field validator raises: it becomes Problem(field, code, message)."""
    return PydanticCustomError(code, message)


# --------------------------------------------------------------------------------------------
# Text

# Control characters, lone surrogates and Unicode line/paragraph separators; format
# characters (Cf) stay allowed: zero-width joiners are part of some scripts and emoji.
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


def has_control_characters(text: str, *, allow: str = "") -> bool:
    return any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES and ch not in allow for ch in text)


def check_text(raw: str, *, name: str, max_length: int, strip: bool = True) -> str:
    """`raw` (trimmed) if it is non-blank, short enough and free of control characters;
    else a refusal naming `name`."""
    text = raw.strip() if strip else raw
    if not text.strip():
        raise refusal("blank", f"{name} must not be empty")
    if len(text) > max_length:
        raise refusal(
            "too_long", f"{name} is {len(text)} characters long; at most {max_length} allowed"
        )
    if has_control_characters(text):
        raise refusal("control_characters", f"{name} must not contain control characters")
    return text


_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")


def is_email(text: str) -> bool:
    """A deliberately plain check: something@domain.tld, no spaces, at most 254 characters."""
    return len(text) <= 254 and _EMAIL.fullmatch(text) is not None


# --------------------------------------------------------------------------------------------
# Instants

# BILLING_CLOCK_SKEW's default (worker/config.py): how far ahead of now a user's instant
# may be, in seconds, before it is refused as in the future.
DEFAULT_CLOCK_SKEW_SECONDS: Final = 120

INSTANT_EXAMPLE: Final = "'2026-03-19T14:30:00Z' or '2026-03-19T09:30:00-05:00'"


def parse_instant(raw: str) -> dt.datetime | None:
    """An ISO-8601 instant with a UTC offset (or `Z`) as an aware UTC datetime; else None
    (also when its UTC value falls outside years 1-9999, e.g. 9999-12-31T23:59:59-23:59)."""
    text = raw.strip()
    if len(text) > 64:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        return None
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        return None


def check_instant(raw: str, *, name: str) -> dt.datetime:
    """`parse_instant`, or a refusal saying how to write an instant."""
    value = parse_instant(raw)
    if value is None:
        raise refusal(
            "invalid_datetime",
            f"{name} {raw[:70]!r} is not an ISO-8601 instant with a UTC offset, "
            f"such as {INSTANT_EXAMPLE}",
        )
    return value


def iso_utc(instant: dt.datetime) -> str:
    """The one way an instant is written out: ISO-8601 in UTC with a `Z`."""
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def latest_allowed(now: dt.datetime, skew_seconds: int) -> dt.datetime:
    """The latest instant a user may name: now plus the clock skew allowed between machines."""
    return now + dt.timedelta(seconds=skew_seconds)


def check_not_future(
    instant: dt.datetime, *, now: dt.datetime, skew_seconds: int, field: str | None
) -> Problem | None:
    """The clock-skew rule: an instant given by a user (`--as-of`, `occurred_at`,
    `received_at`) may be at most `skew_seconds` later than `now` (BILLING_CLOCK_SKEW)."""
    if instant <= latest_allowed(now, skew_seconds):
        return None
    what = field or "the instant"
    return Problem(
        field,
        "in_future",
        f"{what} {iso_utc(instant)} is in the future (now is {iso_utc(now)}; at most "
        f"{skew_seconds} s of clock skew is allowed, BILLING_CLOCK_SKEW)",
    )


# --------------------------------------------------------------------------------------------
# Translating pydantic's errors

_CODES: Final = {
    "missing": "required",
    "extra_forbidden": "unknown_field",
    "string_too_long": "too_long",
    "too_long": "too_long",
    "string_too_short": "blank",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "greater_than": "out_of_range",
    "less_than": "out_of_range",
}

_EXPECTED: Final = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "dict_type": "an object",
    "model_type": "an object",
    "list_type": "a list",
    "decimal_type": 'a decimal string such as "12.50"',
    "datetime_type": f"an ISO-8601 instant string such as {INSTANT_EXAMPLE}",
}


def _path(loc: Sequence[int | str]) -> str:
    """`customer_classes[1].tax_rate` from pydantic's location tuple."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"str", "int", "float", "bool"} or "[" in part or part.startswith("function-"):
            continue  # union member labels pydantic adds to the location
        else:
            out += f".{part}" if out else part
    return out


def _problem(detail: Mapping[str, Any], where: str, expected: str | None) -> Problem:
    kind = str(detail["type"])
    name = where or "the payload"
    context = detail.get("ctx") or {}
    if kind not in _PYDANTIC_TYPES or (kind == "too_long" and "max_length" not in context):
        return Problem(where or None, kind, str(detail["msg"]))
    if kind.endswith("_type") or kind in {"union_tag_invalid", "is_instance_of", "int_from_float"}:
        wanted = expected or _EXPECTED.get(kind, "of another type")
        return Problem(where or None, "invalid_type", f"{name} must be {wanted}")
    code = _CODES.get(kind)
    if code == "required":
        return Problem(where or None, code, f"{name} is required")
    if code == "unknown_field":
        return Problem(where or None, code, f"{name} is not a field of this payload")
    if code == "too_long":
        return Problem(
            where or None, code, f"{name} is at most {context.get('max_length')} characters long"
        )
    if code == "blank":
        return Problem(where or None, code, f"{name} must not be empty")
    if code == "out_of_range":
        bound = next(iter(context.values()), None)
        side = "at least" if kind.startswith("greater") else "at most"
        strict = "" if kind.endswith("_equal") else " (exclusive)"
        return Problem(where or None, code, f"{name} must be {side} {bound}{strict}")
    if kind.startswith(("datetime", "timezone")):
        return Problem(
            where or None,
            "invalid_datetime",
            f"{name} must be an ISO-8601 instant with a UTC offset, such as {INSTANT_EXAMPLE}",
        )
    return Problem(where or None, "invalid_value", f"{name} is not a value it accepts")


# pydantic's own error types; any other type is one of this project's refusals
# (`refusal(code, message)`), whose code and message are kept as they are.
_PYDANTIC_TYPES: Final = frozenset(get_args(ErrorType))


def problems_from(
    error: ValidationError,
    *,
    field: str | None = None,
    expected: str | Mapping[str, str] | None = None,
    accepted: Iterable[str] = (),
) -> list[Problem]:
    """Every problem in `error` as a Problem with this project's codes and phrasing.

    `field` names the key when the error comes from validating one value on its own (its
    location is then empty); `expected` says what that key takes ("a string such as 'USD'"),
    or, for a whole payload, what each top-level key takes;
    `accepted` lists the payload's keys, quoted in `unknown_field` messages.
    """
    known = ", ".join(accepted)
    problems: dict[tuple[str | None, str], Problem] = {}
    for detail in error.errors(include_url=False):
        where = _path(detail["loc"])
        if field is not None:
            where = f"{field}.{where}" if where else field
        if isinstance(expected, Mapping):
            top = next((p for p in detail["loc"] if isinstance(p, str)), "")
            wanted = expected.get(top)
        else:
            wanted = expected if field is not None else None
        problem = _problem(detail, where, wanted)
        if problem.code == "unknown_field" and known:
            problem = Problem(
                problem.field, problem.code, f"{where!r} is not a known field; accepted: {known}"
            )
        # A union reports one type error per member; one is enough for a person.
        problems.setdefault((problem.field, problem.code), problem)
    return list(problems.values())
