"""Subscriptions asked for at intake or in an update: pure validation, every problem at once.

    "subscriptions": [{"plan": "PBX seat", "quantity": 25}, {"plan": "Line", "quantity": 1}]

Shape (`parse_subscriptions`): a list of at most `MAX_SUBSCRIPTIONS` objects with exactly the
keys `plan` (a plan's name) and `quantity` (a whole number, 1 to `MAX_QUANTITY`; in an
update 0 ends the subscription), each plan at most once (names compared by key). Catalog
(`check_plans`): the plan exists for the customer's reseller, belongs to the customer's
business model, and has a fee in the customer's currency.

Codes: `invalid_type`, `required`, `unknown_field`, `blank`, `too_long`, `out_of_range`,
`duplicate`, `too_many`, `not_found`, `wrong_business_model`, `currency_not_offered`.
Fields are paths: `subscriptions[1].quantity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from models.names import name_key
from models.validation import Problem, has_control_characters

MAX_SUBSCRIPTIONS: Final = 50
MAX_QUANTITY: Final = 1_000_000
MAX_PLAN_NAME_LENGTH: Final = 100


@dataclass(frozen=True)
class SubscriptionRequest:
    plan: str
    quantity: int


@dataclass(frozen=True)
class PlanRef:
    """What the catalog says about a plan a request names."""

    id: int
    name: str
    business_model_id: int
    currencies: frozenset[str]


def parse_subscriptions(
    raw: object, *, field: str = "subscriptions", allow_zero: bool = False
) -> tuple[list[SubscriptionRequest], list[Problem]]:
    """The well-formed requests in `raw`, and a problem for every one that is not."""
    if not isinstance(raw, list):
        return [], [
            Problem(
                field,
                "invalid_type",
                f'{field} must be a list such as [{{"plan": "PBX seat", "quantity": 25}}]',
            )
        ]
    if len(raw) > MAX_SUBSCRIPTIONS:
        return [], [
            Problem(field, "too_many", f"at most {MAX_SUBSCRIPTIONS} subscriptions, got {len(raw)}")
        ]
    requests: list[SubscriptionRequest] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    least = 0 if allow_zero else 1
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            problems.append(
                Problem(where, "invalid_type", f'{where} must be an object {{"plan", "quantity"}}')
            )
            continue
        for key in item:
            if key not in ("plan", "quantity"):
                problems.append(
                    Problem(
                        f"{where}.{key}",
                        "unknown_field",
                        f"{key!r} is not a subscription field; accepted: plan, quantity",
                    )
                )
        plan, quantity = item.get("plan"), item.get("quantity")
        ok = True
        if plan is None:
            problems.append(Problem(f"{where}.plan", "required", "plan is required"))
            ok = False
        elif not isinstance(plan, str):
            problems.append(
                Problem(f"{where}.plan", "invalid_type", "plan must be a string (a plan's name)")
            )
            ok = False
        elif not plan.strip():
            problems.append(Problem(f"{where}.plan", "blank", "plan must name a plan"))
            ok = False
        elif len(plan) > MAX_PLAN_NAME_LENGTH or has_control_characters(plan):
            problems.append(
                Problem(
                    f"{where}.plan",
                    "too_long" if len(plan) > MAX_PLAN_NAME_LENGTH else "control_characters",
                    f"plan names are at most {MAX_PLAN_NAME_LENGTH} characters, "
                    "without control characters",
                )
            )
            ok = False
        if quantity is None:
            problems.append(Problem(f"{where}.quantity", "required", "quantity is required"))
            ok = False
        elif isinstance(quantity, bool) or not isinstance(quantity, int):
            problems.append(
                Problem(f"{where}.quantity", "invalid_type", "quantity must be a whole number")
            )
            ok = False
        elif not least <= quantity <= MAX_QUANTITY:
            hint = " (0 ends the subscription)" if allow_zero else ""
            problems.append(
                Problem(
                    f"{where}.quantity",
                    "out_of_range",
                    f"quantity must be from {least} to {MAX_QUANTITY}{hint}, got {quantity}",
                )
            )
            ok = False
        if not ok:
            continue
        assert isinstance(plan, str)
        assert isinstance(quantity, int)
        key = name_key(plan)
        if key in seen:
            problems.append(
                Problem(
                    f"{where}.plan",
                    "duplicate",
                    f"plan {plan!r} is already given at {field}[{seen[key]}]",
                )
            )
            continue
        seen[key] = i
        requests.append(SubscriptionRequest(plan.strip(), quantity))
    return requests, problems


def check_plans(
    requests: Sequence[SubscriptionRequest],
    plans: Mapping[str, PlanRef],
    *,
    business_model_id: int | None,
    business_model: str | None,
    currency: str | None,
    field: str = "subscriptions",
) -> tuple[list[tuple[PlanRef, int]], list[Problem]]:
    """Each request's plan (looked up in `plans` by name key) with its quantity, and a
    problem for every plan the customer cannot take."""
    accepted: list[tuple[PlanRef, int]] = []
    problems: list[Problem] = []
    for i, request in enumerate(requests):
        where = f"{field}[{i}].plan"
        plan = plans.get(name_key(request.plan))
        if plan is None:
            problems.append(Problem(where, "not_found", f"there is no plan named {request.plan!r}"))
            continue
        if business_model_id is not None and plan.business_model_id != business_model_id:
            problems.append(
                Problem(
                    where,
                    "wrong_business_model",
                    f"plan {plan.name!r} is not a plan of business model {business_model!r}",
                )
            )
            continue
        if currency is not None and currency not in plan.currencies:
            offered = ", ".join(sorted(plan.currencies)) or "none"
            problems.append(
                Problem(
                    where,
                    "currency_not_offered",
                    f"plan {plan.name!r} has no fee in {currency} (it has: {offered})",
                )
            )
            continue
        accepted.append((plan, request.quantity))
    return accepted, problems
