"""A customer update request: pure validation of its shape, every problem at once.

    {"reseller": "acme", "name": "Globex Corp",                  # which customer
     "customer_class": "Wholesale",                               # the changes: any of these
     "credit_limit": "900.00",                                    # null removes the limit
     "custom_data": {"seats": 30, "contract_start": null},        # merged; null removes a field
     "billing_period": "weekly", "billing_timezone": "Europe/Paris",
     "subscriptions": [{"plan": "PBX seat", "quantity": 30}],     # 0 ends one
     "request_id": "optional: recorded in the history"}

What needs the database (the class and plan names, the class's custom fields, the customer's
balance control and currency) is checked by the service (`tasks.customer_update`), which
adds its problems to these; nothing is stored unless there are none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from models.intake import (
    AmountInput,
    BillingPeriodName,
    CatalogName,
    CustomerName,
    IdempotencyKey,
    TimezoneName,
)
from models.subscription_requests import SubscriptionRequest, parse_subscriptions
from models.validation import Problem, problems_from

CHANGE_KEYS: Final = (
    "customer_class",
    "credit_limit",
    "custom_data",
    "billing_period",
    "billing_timezone",
    "subscriptions",
)
_ADAPTERS: Final[dict[str, tuple[TypeAdapter[Any], str]]] = {
    "reseller": (TypeAdapter(CatalogName), "a string (a reseller's name)"),
    "name": (TypeAdapter(CustomerName), "a string (the customer's name)"),
    "customer_class": (TypeAdapter(CatalogName), "a string (a customer class's name)"),
    "credit_limit": (TypeAdapter(AmountInput), 'a decimal string such as "500.00", or null'),
    "custom_data": (TypeAdapter(dict[str, Any]), "an object"),
    "billing_period": (TypeAdapter(BillingPeriodName), "a string such as 'monthly'"),
    "billing_timezone": (TypeAdapter(TimezoneName), "a string such as 'Europe/Paris'"),
    "request_id": (TypeAdapter(IdempotencyKey), "a string"),
}
ACCEPTED_KEYS: Final = ("reseller", "name", *CHANGE_KEYS, "request_id")
# Keys whose null is a value (remove the limit) rather than "not given".
_NULLABLE: Final = frozenset({"credit_limit"})


@dataclass
class UpdateDraft:
    """The keys that passed their own rules, and every problem so far."""

    values: dict[str, Any] = field(default_factory=dict)
    subscriptions: list[SubscriptionRequest] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def shaped(self) -> bool:
        """Whether the customer can be looked up (the reseller and name passed)."""
        return "name" in self.values and not any(
            p.field in (None, "name", "reseller") for p in self.problems
        )


def _check(name: str, raw: object) -> tuple[Any, list[Problem]]:
    adapter, expected = _ADAPTERS[name]
    try:
        return adapter.validate_python(raw, strict=True), []
    except ValidationError as error:
        return None, problems_from(error, field=name, expected=expected)


def parse_update(payload: object) -> UpdateDraft:
    """Check the update's shape and each key's own rules; never raises on bad input."""
    draft = UpdateDraft()
    if not isinstance(payload, dict):
        draft.problems.append(
            Problem(None, "not_an_object", "the update must be a JSON object of changes")
        )
        return draft
    for key in payload:
        if key not in ACCEPTED_KEYS:
            draft.problems.append(
                Problem(
                    str(key),
                    "unknown_field",
                    f"{key!r} cannot be changed here; accepted: {', '.join(ACCEPTED_KEYS)}",
                )
            )
    if payload.get("name") is None:
        draft.problems.append(Problem("name", "required", "name (the customer's) is required"))
    if not any(key in payload for key in CHANGE_KEYS):
        draft.problems.append(
            Problem(None, "nothing_to_change", f"give at least one of {', '.join(CHANGE_KEYS)}")
        )
    for key in _ADAPTERS:
        if key not in payload:
            continue
        raw = payload[key]
        if raw is None:
            if key in _NULLABLE:
                draft.values[key] = None
            elif key != "reseller":
                draft.problems.append(Problem(key, "invalid_type", f"{key} must not be null"))
            continue
        value, problems = _check(key, raw)
        if problems:
            draft.problems.extend(problems)
        else:
            draft.values[key] = value
    if "subscriptions" in payload:
        requests, problems = parse_subscriptions(payload["subscriptions"], allow_zero=True)
        draft.problems.extend(problems)
        draft.subscriptions = requests
    return draft
