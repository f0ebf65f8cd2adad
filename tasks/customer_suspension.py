"""Suspending and resuming a customer by an operator: a block with its own reason.

`suspend_customer` records the `operator` block reason (`tasks.blocks`), with the operator's
note; `resume_customer` lifts it. The customer stays blocked while another reason remains
(its credit limit, no funds, an overdue invoice): resuming lifts only the suspension. A
suspended customer is still billed: its periods close and its fees are invoiced, and usage
charges still record (they bill service already used; see `models.invoicing_rules`). Both
are idempotent and recorded in the history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from models import BlockReason, CustomerStatus
from models.validation import Problem
from tasks.base import BillingTask, utcnow
from tasks.blocks import block, block_reasons, unblock
from tasks.customer_history import Change, record_changes
from tasks.queries import customer_by_name, resolve_reseller
from worker.celery_app import app
from worker.db import unit_of_work


class SuspensionStatus(StrEnum):
    SUSPENDED = "suspended"
    ALREADY_SUSPENDED = "already_suspended"
    RESUMED = "resumed"
    NOT_SUSPENDED = "not_suspended"
    REFUSED = "refused"


@dataclass(frozen=True)
class SuspensionResult:
    status: SuspensionStatus
    customer_id: int | None = None
    name: str | None = None
    blocked: bool | None = None
    block_reasons: tuple[str, ...] = ()
    errors: tuple[Problem, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        if self.status == SuspensionStatus.REFUSED:
            return {"status": self.status.value, "errors": [p.as_dict() for p in self.errors]}
        return {
            "status": self.status.value,
            "customer_id": self.customer_id,
            "name": self.name,
            "blocked": self.blocked,
            "block_reasons": list(self.block_reasons),
        }


def _change_suspension(
    session: Session,
    *,
    reseller: str | None,
    name: str,
    suspend: bool,
    note: str,
    now: dt.datetime,
    request_id: str | None,
) -> SuspensionResult:
    found = resolve_reseller(session, reseller)
    if isinstance(found, Problem):
        return SuspensionResult(SuspensionStatus.REFUSED, errors=(found,))
    customer = customer_by_name(session, found.id, name, for_update=True)
    if customer is None:
        problem = Problem("name", "unknown_customer", f"there is no customer named {name!r}")
        return SuspensionResult(SuspensionStatus.REFUSED, errors=(problem,))
    if customer.status != CustomerStatus.ACTIVE:
        problem = Problem(
            "name", "customer_closed", f"{customer.name!r} is {customer.status}; nothing to change"
        )
        return SuspensionResult(SuspensionStatus.REFUSED, errors=(problem,))
    if suspend:
        changed = block(session, customer, BlockReason.OPERATOR, at=now, note=note)
        status = SuspensionStatus.SUSPENDED if changed else SuspensionStatus.ALREADY_SUSPENDED
    else:
        changed = unblock(session, customer, BlockReason.OPERATOR, at=now)
        status = SuspensionStatus.RESUMED if changed else SuspensionStatus.NOT_SUSPENDED
    if changed:
        old = {"suspended": not suspend}
        new = {"suspended": suspend, **({"note": note} if note else {})}
        record_changes(
            session, customer.id, [Change("suspension", old, new)], now=now, request_id=request_id
        )
    reasons = tuple(reason.value for reason in block_reasons(session, customer.id))
    return SuspensionResult(status, customer.id, customer.name, bool(reasons), reasons)


def suspend_customer(
    session: Session,
    *,
    reseller: str | None,
    name: str,
    note: str = "",
    now: dt.datetime,
    request_id: str | None = None,
) -> SuspensionResult:
    """Block the customer for the `operator` reason (idempotent)."""
    return _change_suspension(
        session,
        reseller=reseller,
        name=name,
        suspend=True,
        note=note,
        now=now,
        request_id=request_id,
    )


def resume_customer(
    session: Session,
    *,
    reseller: str | None,
    name: str,
    now: dt.datetime,
    request_id: str | None = None,
) -> SuspensionResult:
    """Lift the `operator` block; other reasons stay (idempotent)."""
    return _change_suspension(
        session,
        reseller=reseller,
        name=name,
        suspend=False,
        note="",
        now=now,
        request_id=request_id,
    )


@app.task(name="billing.customers.suspend", base=BillingTask, bind=True)
def suspend_customer_task(
    self: BillingTask, reseller: str | None, name: str, note: str = ""
) -> dict[str, Any]:
    """Suspend a customer (an operator block with `note`)."""
    request_id = f"task:{self.request.id}" if self.request.id else None
    with unit_of_work() as session:
        result = suspend_customer(
            session, reseller=reseller, name=name, note=note, now=utcnow(), request_id=request_id
        )
    return result.as_json()


@app.task(name="billing.customers.resume", base=BillingTask, bind=True)
def resume_customer_task(self: BillingTask, reseller: str | None, name: str) -> dict[str, Any]:
    """Resume a suspended customer (lift the operator block)."""
    request_id = f"task:{self.request.id}" if self.request.id else None
    with unit_of_work() as session:
        result = resume_customer(
            session, reseller=reseller, name=name, now=utcnow(), request_id=request_id
        )
    return result.as_json()
