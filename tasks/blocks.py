"""Block and unblock a customer for one reason; the only writer of `customers.blocked`.

A customer may be blocked for several independent reasons (`models.customer.BlockReason`):
the balance rules block for `credit_limit` (postpaid) or `no_funds` (prepaid), an operator
for `operator`, collections for `overdue`. Each reason is one `customer_blocks` row, and the
customer is unblocked only when none is left, so a payment that clears the credit limit
does not lift a suspension for an overdue invoice, and the reverse.

`customers.blocked` stays, because the hot paths (charges) read it, and is kept equal to
"some block row exists" here. Call these under the customer's row lock (`SELECT … FOR
UPDATE`; SQLite serialises whole transactions), as the charge and payment services do, so
two concurrent changes of one customer's blocks cannot leave the flag stale.

Both are idempotent: blocking again for a reason already recorded keeps its original
`since` and note; unblocking a reason not recorded changes nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from models import BlockReason, Customer, CustomerBlock
from worker.db import dialect_insert


def _customer_id(customer: Customer | int) -> int:
    return customer if isinstance(customer, int) else customer.id


def _set_flag(session: Session, customer: Customer | int, blocked: bool) -> None:
    session.execute(
        update(Customer)
        .where(Customer.id == _customer_id(customer))
        .values(blocked=blocked)
        .execution_options(synchronize_session=False)
    )
    if isinstance(customer, Customer):  # keep the caller's loaded row truthful
        set_committed_value(customer, "blocked", blocked)


def block(
    session: Session,
    customer: Customer | int,
    reason: BlockReason,
    *,
    at: dt.datetime,
    note: str = "",
) -> bool:
    """Record that `customer` is blocked for `reason` since `at`; True if it was not already."""
    inserted = session.execute(
        dialect_insert(session)(CustomerBlock)
        .values(customer_id=_customer_id(customer), reason=reason.value, since=at, note=note)
        .on_conflict_do_nothing(index_elements=["customer_id", "reason"])
        .returning(CustomerBlock.id)
    ).scalar_one_or_none()
    if inserted is not None:
        _set_flag(session, customer, True)
    return inserted is not None


def unblock(
    session: Session, customer: Customer | int, reason: BlockReason, *, at: dt.datetime
) -> bool:
    """Lift `reason` from `customer`; True if it was recorded. The customer stays blocked
    while another reason remains. (`at` is the instant of the lift, for the callers' own
    records; a lifted reason leaves no row.)"""
    customer_id = _customer_id(customer)
    removed = session.execute(
        delete(CustomerBlock)
        .where(CustomerBlock.customer_id == customer_id, CustomerBlock.reason == reason.value)
        .returning(CustomerBlock.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if removed is not None:
        left = session.scalar(select(exists().where(CustomerBlock.customer_id == customer_id)))
        _set_flag(session, customer, bool(left))
    return removed is not None


def set_blocked(
    session: Session,
    customer: Customer | int,
    reason: BlockReason,
    blocked: bool,
    *,
    at: dt.datetime,
    note: str = "",
) -> bool:
    """Block or unblock for `reason` as a rule decided; True if that changed anything."""
    if blocked:
        return block(session, customer, reason, at=at, note=note)
    return unblock(session, customer, reason, at=at)


def block_reasons(session: Session, customer_id: int) -> dict[BlockReason, dt.datetime]:
    """The reasons `customer_id` is blocked for, each with its `since`, oldest first."""
    rows = session.execute(
        select(CustomerBlock.reason, CustomerBlock.since)
        .where(CustomerBlock.customer_id == customer_id)
        .order_by(CustomerBlock.since, CustomerBlock.id)
    ).all()
    return {BlockReason(reason): since for reason, since in rows}
