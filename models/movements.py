"""Charge and payment payloads: what a `billing.charges.record` / `billing.payments.record`
message must hold, checked with the same vocabulary as intake (`models/validation.py`) and
the same amount parser (`models/money.py`). Pure: no I/O, no clock.

    {"customer": NAME (or "customer_id": ID), "amount": "12.50", "currency": "USD",
     "occurred_at" (charges) / "received_at" (payments): ISO-8601 instant with an offset,
     "description": TEXT (optional for payments), "idempotency_key": KEY}

`parse_movement(kind, payload, now=…, clock_skew_seconds=…)` returns a `Movement` or every
problem at once. Besides the shared codes: `unknown_currency`, `invalid_decimal`,
`too_large`, `too_many_decimals`, `not_positive` (the amount), `in_future` (the instant is
later than now plus the allowed clock skew).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from models.money import MoneyError, check_currency, money_text, parse_amount
from models.validation import (
    Problem,
    check_instant,
    check_not_future,
    check_text,
    problems_from,
    refusal,
)

MAX_CUSTOMER_NAME_LENGTH: Final = 100
MAX_DESCRIPTION_LENGTH: Final = 500
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 200
# Row ids are 64-bit signed integers in both databases.
MAX_ROW_ID: Final = 2**63 - 1


class MovementKind(StrEnum):
    CHARGE = "charge"
    PAYMENT = "payment"

    @property
    def instant_field(self) -> str:
        return "occurred_at" if self is MovementKind.CHARGE else "received_at"


def _text(name: str, max_length: int) -> Any:
    return AfterValidator(lambda raw: check_text(raw, name=name, max_length=max_length))


def _instant(name: str) -> Any:
    def check(raw: object) -> dt.datetime:
        if not isinstance(raw, str):
            raise refusal("invalid_type", f"{name} must be an ISO-8601 instant string")
        return check_instant(raw, name=name)

    return BeforeValidator(check)


CustomerName = Annotated[str, _text("customer", MAX_CUSTOMER_NAME_LENGTH)]
RowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
IdempotencyKey = Annotated[str, _text("idempotency_key", MAX_IDEMPOTENCY_KEY_LENGTH)]


def _description(raw: str) -> str:
    text = raw.strip()
    if not text:
        return ""
    return check_text(text, name="description", max_length=MAX_DESCRIPTION_LENGTH)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    customer: CustomerName | None = None
    customer_id: RowId | None = None
    amount: str | int  # parsed exactly once the currency is known
    currency: str
    idempotency_key: IdempotencyKey


class _ChargePayload(_Payload):
    occurred_at: Annotated[dt.datetime, _instant("occurred_at")]
    description: Annotated[str, _text("description", MAX_DESCRIPTION_LENGTH)]


class _PaymentPayload(_Payload):
    received_at: Annotated[dt.datetime, _instant("received_at")]
    description: Annotated[str, AfterValidator(_description)] = ""


_EXPECTED: Final = {
    "customer": "a string (the customer's name)",
    "customer_id": "a whole number (the customer's id)",
    "amount": 'a decimal string such as "12.50"',
    "currency": "a string such as 'USD'",
    "idempotency_key": "a string",
    "description": "a string",
}


@dataclass(frozen=True)
class Movement:
    """A valid charge or payment, ready to judge against the customer's balance."""

    kind: MovementKind
    customer: str | None
    customer_id: int | None
    amount: Decimal
    currency: str
    at: dt.datetime  # when the money moved: a charge's use, a payment's receipt
    description: str
    idempotency_key: str


def parse_movement(
    kind: MovementKind, payload: object, *, now: dt.datetime, clock_skew_seconds: int
) -> Movement | list[Problem]:
    """The valid movement in `payload`, or every problem with it; never raises on bad input."""
    if not isinstance(payload, dict):
        return [Problem(None, "not_an_object", f"the {kind} must be a JSON object")]
    model = _ChargePayload if kind is MovementKind.CHARGE else _PaymentPayload
    try:
        data = model.model_validate(payload)
    except ValidationError as error:
        return problems_from(error, expected=_EXPECTED, accepted=model.model_fields)
    problems: list[Problem] = []
    if (data.customer is None) == (data.customer_id is None):
        problems.append(
            Problem("customer", "required", "give exactly one of customer, customer_id")
        )
    at: dt.datetime = getattr(data, kind.instant_field)
    future = check_not_future(
        at, now=now, skew_seconds=clock_skew_seconds, field=kind.instant_field
    )
    if future is not None:
        problems.append(future)
    try:
        currency = check_currency(data.currency)
        amount = parse_amount(data.amount, currency)
    except MoneyError as error:
        field = "currency" if error.code == "unknown_currency" else "amount"
        return [*problems, Problem(field, error.code, str(error))]
    if amount <= 0:
        problems.append(
            Problem(
                "amount",
                "not_positive",
                f"a {kind} must be greater than zero; got {money_text(amount, currency)}",
            )
        )
    if problems:
        return problems
    return Movement(
        kind=kind,
        customer=data.customer,
        customer_id=data.customer_id,
        amount=amount,
        currency=currency,
        at=at,
        description=data.description,
        idempotency_key=data.idempotency_key,
    )
