"""Plans in the catalog file: each field's rules, and plans named twice in one reseller."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from models.catalog_plans import PlanSpec, duplicate_plans


def _plan(**changes: object) -> dict[str, object]:
    plan: dict[str, object] = {
        "name": "PBX seat",
        "business_model": "Hosted IP PBX",
        "billing_mode": "advance",
        "fees": {"USD": "12.00", "JPY": 1200, "BHD": "4.125"},
    }
    plan.update(changes)
    return plan


def test_a_plan_reads_its_fees_exactly_in_each_currency() -> None:
    """Fees are exact decimals per currency, strings or integers."""
    spec = PlanSpec.model_validate(_plan())
    assert spec.fees == {"USD": Decimal("12.00"), "JPY": Decimal(1200), "BHD": Decimal("4.125")}
    assert spec.billing_mode == "advance"


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"billing_mode": "monthly"}, "invalid_choice", "billing_mode"),
        ({"fees": {"usd": "12.00"}}, "invalid_value", "fees"),
        ({"fees": {"USD": "12.001"}}, "invalid_value", "fees"),
        ({"fees": {"JPY": "12.5"}}, "invalid_value", "fees"),
        ({"fees": {"USD": "-1"}}, "invalid_value", "fees"),
        ({"fees": {"USD": 1.5}}, "invalid_value", "fees"),
        ({"fees": {}}, "invalid_type", "fees"),
        ({"name": " PBX seat"}, "untrimmed", "name"),
        ({"price": "1"}, "extra_forbidden", "price"),
    ],
)
def test_bad_plan_fields_are_refused(changes: dict[str, object], code: str, field: str) -> None:
    """Unknown modes, currencies, too many decimals, negative or float fees are refused."""
    with pytest.raises(ValidationError) as raised:
        PlanSpec.model_validate(_plan(**changes))
    errors = raised.value.errors()
    assert [(e["type"], e["loc"][0]) for e in errors] == [(code, field)]


def test_plans_named_twice_ignoring_case_are_reported() -> None:
    """Two plans whose names share a key in one reseller are a problem at the second."""
    plans = [PlanSpec.model_validate(_plan()), PlanSpec.model_validate(_plan(name="PBX SEAT"))]
    problems = duplicate_plans("resellers[0].plans", plans)
    assert [(p.field, p.code) for p in problems] == [("resellers[0].plans[1].name", "duplicate")]
