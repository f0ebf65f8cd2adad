"""Loading a reseller's plans from the catalog file: upserted by name key, never deleted.

A plan's fee per currency is upserted too (a fee left out of the file keeps its last amount:
subscribers in that currency are still billed it). A new amount applies to invoices
generated after the load; fees already billed stay as billed. A plan's billing mode cannot
change once it has subscriptions (`billing_mode_locked`): switching between advance and
arrears would bill a period twice or never.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from models import BusinessModel, Plan, PlanFee, Subscription
from models.catalog_plans import PlanSpec
from models.intake import Problem
from models.names import name_key
from worker.db import dialect_insert


def load_plans(
    session: Session, reseller_id: int, specs: Sequence[PlanSpec], *, where: str
) -> tuple[dict[str, int], list[Problem]]:
    """Upsert the reseller's plans; (created / updated / unchanged counts, problems)."""
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    if not specs:
        return counts, []
    models = dict(
        session.execute(
            select(BusinessModel.name_key, BusinessModel.id).where(
                BusinessModel.reseller_id == reseller_id
            )
        ).all()
    )
    existing = {
        plan.name_key: plan
        for plan in session.scalars(
            select(Plan).where(
                Plan.reseller_id == reseller_id,
                Plan.name_key.in_([name_key(s.name) for s in specs]),
            )
        )
    }
    problems: list[Problem] = []
    for i, spec in enumerate(specs):
        key = name_key(spec.name)
        model_id = models.get(name_key(spec.business_model))
        if model_id is None:
            problems.append(
                Problem(
                    f"{where}[{i}].business_model",
                    "not_found",
                    f"this reseller has no business model named {spec.business_model!r}",
                )
            )
            continue
        plan = existing.get(key)
        if plan is None:
            plan = Plan(
                reseller_id=reseller_id,
                name=spec.name,
                name_key=key,
                business_model_id=model_id,
                billing_mode=spec.billing_mode,
                description=spec.description,
            )
            session.add(plan)
            session.flush()
            changed = True
            counts["created"] += 1
        else:
            if plan.billing_mode != spec.billing_mode and _has_subscriptions(session, plan.id):
                problems.append(
                    Problem(
                        f"{where}[{i}].billing_mode",
                        "billing_mode_locked",
                        f"plan {plan.name!r} has subscriptions, so it stays billed in "
                        f"{plan.billing_mode}; define a new plan and move them to it",
                    )
                )
                continue
            wanted: dict[str, Any] = {
                "name": spec.name,
                "business_model_id": model_id,
                "billing_mode": spec.billing_mode,
                "description": spec.description,
            }
            changed = any(getattr(plan, k) != v for k, v in wanted.items())
            for k, v in wanted.items():
                setattr(plan, k, v)
        fees_changed = _upsert_fees(session, plan.id, spec)
        if key in existing:
            counts["updated" if changed or fees_changed else "unchanged"] += 1
    session.flush()
    return counts, problems


def _has_subscriptions(session: Session, plan_id: int) -> bool:
    return bool(session.scalar(select(exists().where(Subscription.plan_id == plan_id))))


def _upsert_fees(session: Session, plan_id: int, spec: PlanSpec) -> bool:
    """Give the plan the spec's fee in each of its currencies; whether any changed."""
    current = dict(
        session.execute(
            select(PlanFee.currency, PlanFee.amount).where(PlanFee.plan_id == plan_id)
        ).all()
    )
    rows = [
        {"plan_id": plan_id, "currency": currency, "amount": amount}
        for currency, amount in spec.fees.items()
        if current.get(currency) != amount
    ]
    if rows:
        insert = dialect_insert(session)(PlanFee)
        session.execute(
            insert.on_conflict_do_update(
                index_elements=["plan_id", "currency"], set_={"amount": insert.excluded.amount}
            ),
            rows,
        )
    return bool(rows)
