"""Changing a customer after intake: `update_customer(session, payload, now=…)`.

Under the customer's row lock, in the caller's transaction, all or nothing: every problem is
reported at once (`{"status": "rejected", "errors": [...]}`, the intake codes plus
`unknown_customer`, `customer_closed`, `not_allowed`, `periods_due` and the subscription
codes of `models.subscription_requests`) and nothing is stored; otherwise every change is
applied and recorded in the customer's history (field, old value, new value, when, when it
takes effect, the request id), and the result lists them:
`{"status": "updated" | "unchanged", "customer_id", "name", "changes": [...]}`.

When changes take effect:
- customer class, custom data (merged: a null removes a field; the result must fit the
  class, new or old), subscriptions: at once (`now`); subscription changes are prorated
  from the local day they are made on;
- credit limit (postpaid only; null removes it): at once, and the block is re-evaluated at
  once (a limit lowered to or under the balance owed blocks, a raised one unblocks);
- billing period rule and timezone: at the end of the current period, which still closes by
  the old rule and zone; the new ones apply from that boundary on (`models.period_changes`).
  Changing them again before that boundary replaces the waiting change; asking for the
  current ones cancels it. A customer whose ended periods the closer has not closed yet
  (`periods_due`) must be closed up to date first, so the boundary is unambiguous.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import BlockReason, Customer, CustomerClass, CustomerStatus
from models.custom_fields import CustomField, check_custom_data
from models.customer import BalanceControl
from models.customer_update import UpdateDraft, parse_update
from models.invoicing_rules import is_blocked
from models.money import decimal_places, minor_units, quantum
from models.names import name_key
from models.subscription_requests import check_plans
from models.validation import Problem
from tasks.base import BillingTask, utcnow
from tasks.blocks import set_blocked
from tasks.customer_history import Change, record_changes
from tasks.queries import customer_by_name, resolve_reseller
from tasks.subscriptions import (
    PlanQuantity,
    current_subscriptions,
    plans_named,
    set_quantities,
)
from worker.celery_app import app
from worker.db import unit_of_work


class UpdateStatus(StrEnum):
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


@dataclass(frozen=True)
class UpdateResult:
    status: UpdateStatus
    customer_id: int | None = None
    name: str | None = None
    changes: tuple[Change, ...] = ()
    errors: tuple[Problem, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        if self.status == UpdateStatus.REJECTED:
            return {"status": self.status.value, "errors": [p.as_dict() for p in self.errors]}
        return {
            "status": self.status.value,
            "customer_id": self.customer_id,
            "name": self.name,
            "changes": [
                {**c.as_json(), "effective_at": _iso(c.effective_at)} for c in self.changes
            ],
        }


def _iso(instant: dt.datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _rejected(problems: list[Problem]) -> UpdateResult:
    return UpdateResult(UpdateStatus.REJECTED, errors=tuple(problems))


def _money(amount: Decimal | None, currency: str) -> str | None:
    return None if amount is None else str(amount.quantize(quantum(currency)))


@dataclass
class _Plan:
    """What the update will do, once every check passed."""

    changes: list[Change] = field(default_factory=list)
    class_id: int | None = None
    custom_data: dict[str, Any] | None = None
    credit_limit: tuple[Decimal | None] | None = None  # a 1-tuple: None inside removes it
    pending: tuple[str | None, str | None, dt.datetime | None] | None = None
    quantities: list[PlanQuantity] | None = None


def update_customer(
    session: Session, payload: object, *, now: dt.datetime, request_id: str | None = None
) -> UpdateResult:
    """Validate and apply a customer update; see the module docstring."""
    draft = parse_update(payload)
    if not draft.shaped:
        return _rejected(draft.problems)
    values = draft.values
    reseller = resolve_reseller(session, values.get("reseller"))
    if isinstance(reseller, Problem):
        return _rejected([reseller, *draft.problems])
    customer = customer_by_name(session, reseller.id, values["name"], for_update=True)
    if customer is None:
        return _rejected(
            [
                Problem(
                    "name", "unknown_customer", f"there is no customer named {values['name']!r}"
                ),
                *draft.problems,
            ]
        )
    if customer.status != CustomerStatus.ACTIVE:
        return _rejected(
            [
                Problem(
                    "name",
                    "customer_closed",
                    f"{customer.name!r} is {customer.status} and can no longer be changed",
                )
            ]
        )
    problems = list(draft.problems)
    plan = _Plan()
    _plan_class_and_data(session, customer, reseller.id, values, plan, problems)
    _plan_credit_limit(customer, values, plan, problems)
    _plan_billing_period(customer, values, plan, problems, now)
    _plan_subscriptions(session, customer, reseller.id, draft, plan, problems)
    if problems:
        return _rejected(problems)
    _apply(session, customer, plan, now)
    plan.changes = [
        dataclasses.replace(c, effective_at=c.effective_at or now) for c in plan.changes
    ]
    request = values.get("request_id") or request_id
    record_changes(session, customer.id, plan.changes, now=now, request_id=request)
    status = UpdateStatus.UPDATED if plan.changes else UpdateStatus.UNCHANGED
    return UpdateResult(status, customer.id, customer.name, tuple(plan.changes))


def _plan_class_and_data(
    session: Session,
    customer: Customer,
    reseller_id: int,
    values: dict[str, Any],
    plan: _Plan,
    problems: list[Problem],
) -> None:
    current = session.execute(
        select(CustomerClass.name, CustomerClass.custom_fields).where(
            CustomerClass.id == customer.customer_class_id
        )
    ).one()
    class_name, fields = current.name, current.custom_fields
    if "customer_class" in values and values["customer_class"] != class_name:
        found = session.execute(
            select(CustomerClass.id, CustomerClass.name, CustomerClass.custom_fields).where(
                CustomerClass.reseller_id == reseller_id,
                CustomerClass.name_key == name_key(values["customer_class"]),
            )
        ).one_or_none()
        if found is None:
            problems.append(
                Problem(
                    "customer_class",
                    "not_found",
                    f"there is no customer class named {values['customer_class']!r}",
                )
            )
            return
        plan.class_id = found.id
        plan.changes.append(Change("customer_class", class_name, found.name))
        class_name, fields = found.name, found.custom_fields
    if plan.class_id is None and "custom_data" not in values:
        return
    merged = dict(customer.custom_data or {})
    for key, value in (values.get("custom_data") or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    clean, custom_problems = check_custom_data(
        merged, tuple(CustomField.from_json(f) for f in fields or ()), class_name=class_name
    )
    problems.extend(custom_problems)
    if clean != (customer.custom_data or {}):
        plan.custom_data = clean
        plan.changes.append(Change("custom_data", customer.custom_data or {}, clean))


def _plan_credit_limit(
    customer: Customer, values: dict[str, Any], plan: _Plan, problems: list[Problem]
) -> None:
    if "credit_limit" not in values:
        return
    limit: Decimal | None = values["credit_limit"]
    if customer.balance_control == BalanceControl.PREPAID:
        problems.append(
            Problem(
                "credit_limit",
                "not_allowed",
                "credit_limit applies only to postpaid customers; this customer is prepaid",
            )
        )
        return
    places = minor_units(customer.currency)
    if limit is not None and decimal_places(limit) > places:
        problems.append(
            Problem(
                "credit_limit",
                "too_many_decimals",
                f"{customer.currency} amounts have at most {places} decimal places; got {limit}",
            )
        )
        return
    if limit != customer.credit_limit:
        plan.credit_limit = (limit,)
        plan.changes.append(
            Change(
                "credit_limit",
                _money(customer.credit_limit, customer.currency),
                _money(limit, customer.currency),
            )
        )


def _plan_billing_period(
    customer: Customer,
    values: dict[str, Any],
    plan: _Plan,
    problems: list[Problem],
    now: dt.datetime,
) -> None:
    if "billing_period" not in values and "billing_timezone" not in values:
        return
    # What the customer will be billed by after the current period, as things stand.
    next_rule = customer.pending_billing_period or customer.billing_period
    next_tz = customer.pending_billing_timezone or customer.billing_timezone
    rule = values.get("billing_period", next_rule)
    tz = values.get("billing_timezone", next_tz)
    if (rule, tz) == (next_rule, next_tz):
        return
    if customer.current_period_end <= now:
        problems.append(
            Problem(
                "billing_period" if "billing_period" in values else "billing_timezone",
                "periods_due",
                f"{customer.name!r} has a period that ended at "
                f"{_iso(customer.current_period_end)} and is not closed yet; close it "
                "(billing close) and change the billing period or zone then",
            )
        )
        return
    boundary = customer.current_period_end
    if (rule, tz) == (customer.billing_period, customer.billing_timezone):
        plan.pending = (None, None, None)  # back to the current ones: nothing waits
    else:
        plan.pending = (
            rule if rule != customer.billing_period else None,
            tz if tz != customer.billing_timezone else None,
            boundary,
        )
    if rule != next_rule:
        plan.changes.append(Change("billing_period", next_rule, rule, boundary))
    if tz != next_tz:
        plan.changes.append(Change("billing_timezone", next_tz, tz, boundary))


def _plan_subscriptions(
    session: Session,
    customer: Customer,
    reseller_id: int,
    draft: UpdateDraft,
    plan: _Plan,
    problems: list[Problem],
) -> None:
    if not draft.subscriptions:
        return
    plans = plans_named(session, reseller_id, [r.plan for r in draft.subscriptions])
    accepted, plan_problems = check_plans(
        draft.subscriptions,
        plans,
        business_model_id=customer.business_model_id,
        business_model=None,
        currency=customer.currency,
    )
    problems.extend(plan_problems)
    plan.quantities = [PlanQuantity(ref.id, ref.name, quantity) for ref, quantity in accepted]


def _apply(session: Session, customer: Customer, plan: _Plan, now: dt.datetime) -> None:
    if plan.class_id is not None:
        customer.customer_class_id = plan.class_id
    if plan.custom_data is not None:
        customer.custom_data = plan.custom_data
    if plan.credit_limit is not None:
        customer.credit_limit = plan.credit_limit[0]
        session.flush()
        set_blocked(
            session,
            customer,
            BlockReason.CREDIT_LIMIT,
            is_blocked(customer.balance_control, customer.balance, customer.credit_limit),
            at=now,
        )
    if plan.pending is not None:
        (
            customer.pending_billing_period,
            customer.pending_billing_timezone,
            customer.pending_from,
        ) = plan.pending
    if plan.quantities:
        before = current_subscriptions(session, customer.id)
        if set_quantities(session, customer.id, customer.billing_timezone, plan.quantities, at=now):
            after = current_subscriptions(session, customer.id)
            plan.changes.append(
                Change("subscriptions", _plan_quantities(before), _plan_quantities(after))
            )
    session.flush()


def _plan_quantities(subscriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"plan": s["plan"], "quantity": s["quantity"]} for s in subscriptions]


@app.task(name="billing.customers.update", base=BillingTask, bind=True)
def update_customer_task(self: BillingTask, payload: Any) -> dict[str, Any]:
    """Change one customer (class, credit limit, custom data, subscriptions, period, zone)."""
    now = utcnow()
    request_id = f"task:{self.request.id}" if self.request.id else None
    with unit_of_work() as session:
        return update_customer(session, payload, now=now, request_id=request_id).as_json()
