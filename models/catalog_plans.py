"""Plans in the catalog file: pure parsing rules, no I/O.

    resellers:
      - name: acme
        business_models: [{name: Hosted IP PBX, service_type: voice}]
        plans:                            # this reseller's own
          - name: PBX seat                # unique within the reseller (any case)
            business_model: Hosted IP PBX # one of this reseller's business models
            billing_mode: advance         # advance (the period about to start) or arrears
            fees: {USD: "12.00", EUR: "11.00"}   # per billing period and unit, by currency
            description: One hosted extension  # optional

Each fee is a decimal string (or an integer) of at most the currency's minor units, zero or
more; a plan offers only the currencies it has a fee in. The loader (`tasks.catalog_plans`)
checks the business model against the database when the file does not list it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from models.fees import BillingMode
from models.intake import Problem, has_control_characters
from models.money import MoneyError, check_currency, parse_amount
from models.names import name_key

MAX_PLANS: Final = 1000


def _name(raw: str) -> str:
    if not raw.strip():
        raise PydanticCustomError("blank", "must not be empty")
    if raw != raw.strip():
        raise PydanticCustomError("untrimmed", "must not start or end with spaces")
    if has_control_characters(raw):
        raise PydanticCustomError("control_characters", "must not contain control characters")
    return raw


def _mode(raw: str) -> str:
    try:
        return BillingMode(raw).value
    except ValueError:
        raise PydanticCustomError(
            "invalid_choice", f"{raw!r} is neither 'advance' nor 'arrears'"
        ) from None


def _fees(raw: Any) -> dict[str, Decimal]:
    if not isinstance(raw, dict) or not raw:
        raise PydanticCustomError(
            "invalid_type", 'must map currencies to fees, such as {USD: "12.00"}'
        )
    fees: dict[str, Decimal] = {}
    problems = []
    for currency, amount in raw.items():
        try:
            code = check_currency(currency)
            fee = parse_amount(amount, code)
        except MoneyError as error:
            problems.append(f"{currency}: {error}")
            continue
        if fee < 0:
            problems.append(f"{currency}: a fee cannot be negative")
            continue
        fees[code] = fee
    if problems:
        raise PydanticCustomError("invalid_value", "; ".join(problems))
    return fees


Name = Annotated[str, Field(max_length=100), AfterValidator(_name)]


class PlanSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Name
    business_model: Name
    billing_mode: Annotated[str, AfterValidator(_mode)]
    fees: Annotated[dict[str, Decimal], BeforeValidator(_fees)]
    description: Annotated[str, Field(max_length=10_000)] = ""


def duplicate_plans(where: str, plans: Sequence[PlanSpec]) -> list[Problem]:
    """Plans of one reseller named twice (by key): the database would keep only one."""
    problems = []
    seen: dict[str, int] = {}
    for i, plan in enumerate(plans):
        key = name_key(plan.name)
        if key in seen:
            problems.append(
                Problem(
                    f"{where}[{i}].name",
                    "duplicate",
                    f"plan {plan.name!r} is already defined at {where}[{seen[key]}] "
                    "(names are unique ignoring case)",
                )
            )
        seen.setdefault(key, i)
    return problems
