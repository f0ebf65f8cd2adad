"""Requested subscriptions: shape rules and catalog rules, every problem at once."""

from __future__ import annotations

import pytest

from models.subscription_requests import (
    PlanRef,
    SubscriptionRequest,
    check_plans,
    parse_subscriptions,
)


@pytest.mark.parametrize(
    ("raw", "problems"),
    [
        ("PBX seat", [("subscriptions", "invalid_type")]),
        ([{"plan": "PBX seat"}], [("subscriptions[0].quantity", "required")]),
        ([{"quantity": 1}], [("subscriptions[0].plan", "required")]),
        ([{"plan": "PBX seat", "quantity": True}], [("subscriptions[0].quantity", "invalid_type")]),
        ([{"plan": "PBX seat", "quantity": 1.0}], [("subscriptions[0].quantity", "invalid_type")]),
        ([{"plan": "PBX seat", "quantity": 0}], [("subscriptions[0].quantity", "out_of_range")]),
        (
            [{"plan": "PBX seat", "quantity": 1_000_001}],
            [("subscriptions[0].quantity", "out_of_range")],
        ),
        ([{"plan": " ", "quantity": 1}], [("subscriptions[0].plan", "blank")]),
        ([{"plan": 7, "quantity": 1}], [("subscriptions[0].plan", "invalid_type")]),
        ([{"plan": "a", "quantity": 1, "x": 1}], [("subscriptions[0].x", "unknown_field")]),
        (["PBX seat"], [("subscriptions[0]", "invalid_type")]),
        (
            [{"plan": "PBX seat", "quantity": 1}, {"plan": "pbx SEAT", "quantity": 2}],
            [("subscriptions[1].plan", "duplicate")],
        ),
        ([{"plan": "p", "quantity": 1}] * 51, [("subscriptions", "too_many")]),
    ],
)
def test_shape_problems(raw: object, problems: list[tuple[str, str]]) -> None:
    """Each malformed entry is reported at its own path with a stable code."""
    _requests, found = parse_subscriptions(raw)
    assert [(p.field, p.code) for p in found] == problems


def test_quantity_zero_is_allowed_where_it_ends_a_subscription() -> None:
    """An update may set a quantity to 0 (it ends the subscription); intake may not."""
    requests, problems = parse_subscriptions([{"plan": "PBX seat", "quantity": 0}], allow_zero=True)
    assert (requests, problems) == ([SubscriptionRequest("PBX seat", 0)], [])


def test_catalog_problems_name_the_plan_and_why() -> None:
    """Unknown plan, another business model's plan, a plan without the currency: all at once."""
    plans = {
        "pbx seat": PlanRef(1, "PBX seat", 10, frozenset({"USD"})),
        "fibre": PlanRef(2, "Fibre", 20, frozenset({"USD"})),
        "euro seat": PlanRef(3, "Euro seat", 10, frozenset({"EUR"})),
    }
    requests = [
        SubscriptionRequest("PBX SEAT", 3),
        SubscriptionRequest("Fibre", 1),
        SubscriptionRequest("Euro seat", 1),
        SubscriptionRequest("Ghost", 1),
    ]
    accepted, problems = check_plans(
        requests, plans, business_model_id=10, business_model="Hosted IP PBX", currency="USD"
    )
    assert accepted == [(plans["pbx seat"], 3)]
    assert [(p.field, p.code) for p in problems] == [
        ("subscriptions[1].plan", "wrong_business_model"),
        ("subscriptions[2].plan", "currency_not_offered"),
        ("subscriptions[3].plan", "not_found"),
    ]
