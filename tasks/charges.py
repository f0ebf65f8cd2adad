"""Charges and payments: every balance change is one ledger row, race-safe and idempotent.

A charge (or a payment) is judged and applied while holding the customer's row lock
(`SELECT … FOR UPDATE`; SQLite serialises whole transactions instead), so concurrent
charges for one customer queue behind each other and no update is lost. The balance
rules (credit limit, available funds, blocking) are in `models.invoicing_rules`; the block
they decide goes through `tasks.blocks` as reason `credit_limit` or `no_funds`.

Tenancy: a payload names its `reseller` (optional only while exactly one reseller exists),
and the customer is looked up among that reseller's own (`tasks.queries`): by name key, or
by id only if the id is the reseller's. Another reseller's customer is `unknown_customer`,
exactly like one that does not exist.

A postpaid payment is applied to the customer's open invoices, oldest due first; the rest
is credit for the next invoice (`tasks.settlement`).

Idempotency: one charge (payment) per (reseller, idempotency key), enforced by a unique
constraint. A replayed key returns the original outcome and writes nothing; a key reused
with a different customer, amount or instant is refused (`idempotency_conflict`). A refused
charge stores nothing, so its key may be sent again later (after a top-up, say).

Refusals are results, never exceptions: `{"status": "refused", "errors": [{field, code,
message}]}`. The payload's own codes are those of `models/movements.py` (shared with intake:
`required`, `unknown_field`, `invalid_type`, `invalid_decimal`, `too_many_decimals`,
`not_positive`, `in_future`, …); then `not_found` / `reseller_required` (reseller),
`unknown_customer`, `currency_mismatch`,
`customer_closed` / `customer_inactive` (charges only), `credit_limit_reached`,
`insufficient_funds`, `idempotency_conflict`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import BalanceControl, Charge, Customer, CustomerStatus, LedgerEntry, Payment
from models.invoicing_rules import (
    Refusal,
    apply_charge,
    apply_payment,
    is_blocked,
)
from models.money import money_text, round_money
from models.movements import Movement, MovementKind, parse_movement
from models.validation import DEFAULT_CLOCK_SKEW_SECONDS, Problem, iso_utc
from tasks.balances import apply_balance_change
from tasks.base import BillingTask, utcnow
from tasks.queries import customer_by_id, customer_by_name, resolve_reseller
from tasks.settlement import apply_credit
from worker.celery_app import app
from worker.config import settings
from worker.db import dialect_insert, unit_of_work

Result = dict[str, Any]


def refused(*problems: Problem) -> Result:
    return {"status": "refused", "errors": [p.as_json() for p in problems]}


def _lock_customer(session: Session, reseller_id: int, data: Movement) -> Customer | None:
    """The reseller's customer row, locked until the transaction ends (concurrent changes
    queue here; FOR NO KEY UPDATE, see `tasks.queries`)."""
    if data.customer_id is not None:
        return customer_by_id(session, reseller_id, data.customer_id, for_update=True)
    assert data.customer is not None
    return customer_by_name(session, reseller_id, data.customer, for_update=True)


def customer_errors(customer: Customer | None, data: Movement) -> list[Problem]:
    if customer is None:
        if data.customer is not None:
            who = repr(data.customer)
            return [Problem("customer", "unknown_customer", f"there is no customer {who}")]
        return [Problem("customer_id", "unknown_customer", "there is no customer with this id")]
    if data.currency != customer.currency:
        return [
            Problem(
                "currency",
                "currency_mismatch",
                f"{customer.name!r} is billed in {customer.currency}, not {data.currency}",
            )
        ]
    return []


def _insert(session: Session, model: type[Charge] | type[Payment], values: dict[str, Any]) -> Any:
    """INSERT … ON CONFLICT (reseller, key) DO NOTHING RETURNING id (None on conflict)."""
    statement = (
        dialect_insert(session)(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["reseller_id", "idempotency_key"])
        .returning(model.id)
    )
    return session.execute(statement).scalar_one_or_none()


def status_refusal(customer: Customer) -> Problem | None:
    """Why no charge can be recorded for `customer` any more (closed, or not active), if so."""
    if customer.status == CustomerStatus.CLOSED:
        closed = iso_utc(customer.closed_at) if customer.closed_at is not None else "earlier"
        return Problem(
            "customer",
            "customer_closed",
            f"{customer.name!r} was closed at {closed} and its final invoice made; "
            "no charge can be recorded for it any more",
        )
    if customer.status != CustomerStatus.ACTIVE:
        return Problem("customer", "customer_inactive", f"{customer.name!r} is {customer.status}")
    return None


def recorded_outcome(
    kind: str,
    row_id: int,
    customer: Customer,
    amount: Decimal,
    *,
    balance_after: Decimal,
    blocked: bool,
    replayed: bool,
) -> Result:
    """The result of a recorded (or replayed) movement; the single and batch services'."""
    return {
        "status": "recorded",
        f"{kind}_id": row_id,
        "customer": customer.name,
        "customer_id": customer.id,
        "amount": str(amount),
        "currency": customer.currency,
        "balance": str(round_money(balance_after, customer.currency)),
        "blocked": blocked,
        "replayed": replayed,
    }


def _replay(
    session: Session,
    kind: str,
    existing: Charge | Payment,
    customer: Customer,
    amount: Decimal,
    at: dt.datetime,
) -> Result:
    """The original outcome of an already recorded key, or a conflict if the payload differs."""
    existing_at = existing.occurred_at if isinstance(existing, Charge) else existing.received_at
    other_name: str | int = existing.customer_id
    balance_after: Decimal | None = None
    if existing.customer_id != customer.id:
        other = session.get(Customer, existing.customer_id)  # the same reseller's customer
        other_name = other.name if other is not None else existing.customer_id
    else:
        column = LedgerEntry.charge_id if kind == "charge" else LedgerEntry.payment_id
        balance_after = session.scalars(
            select(LedgerEntry.balance_after).where(column == existing.id)
        ).one()
    recorded = Recorded(
        existing.id,
        existing.customer_id,
        existing.amount,
        existing_at,
        existing.idempotency_key,
        balance_after,
    )
    return replay_outcome(kind, recorded, customer, amount, at, other_name=other_name)


@dataclass(frozen=True)
class Recorded:
    """What a replay is judged on: the row already recorded under a key, and the balance
    its ledger entry left (None when only a conflict can follow)."""

    row_id: int
    customer_id: int
    amount: Decimal
    at: dt.datetime
    idempotency_key: str
    balance_after: Decimal | None


def replay_outcome(
    kind: str,
    existing: Recorded,
    customer: Customer,
    amount: Decimal,
    at: dt.datetime,
    *,
    other_name: str | int,
) -> Result:
    """The original outcome of `existing` replayed by a payload for `customer`, or the
    `idempotency_conflict` refusal when the payload differs (`other_name`: the customer the
    key was used for, when not this one). Shared by the single and the batch services."""
    if existing.customer_id != customer.id:
        return refused(
            Problem(
                "idempotency_key",
                "idempotency_conflict",
                f"key {existing.idempotency_key!r} was already used for a {kind} of customer "
                f"{other_name if isinstance(other_name, str) else repr(other_name)}",
            )
        )
    if existing.amount != amount or existing.at != at:
        return refused(
            Problem(
                "idempotency_key",
                "idempotency_conflict",
                f"key {existing.idempotency_key!r} was already used for a {kind} of "
                f"{money_text(existing.amount, customer.currency)} at {iso_utc(existing.at)}",
            )
        )
    assert existing.balance_after is not None
    return recorded_outcome(
        kind,
        existing.row_id,
        customer,
        amount,
        balance_after=existing.balance_after,
        blocked=is_blocked(customer.balance_control, existing.balance_after, customer.credit_limit),
        replayed=True,
    )


def record_charge(
    session: Session,
    payload: object,
    *,
    now: dt.datetime,
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS,
) -> Result:
    """Record one charge and apply it to the customer's balance, or refuse it (nothing stored).

    A charge dated later than `now` plus `clock_skew_seconds` is refused (`in_future`)."""
    return _record(
        session, MovementKind.CHARGE, payload, now=now, clock_skew_seconds=clock_skew_seconds
    )


def record_payment(
    session: Session,
    payload: object,
    *,
    now: dt.datetime,
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS,
) -> Result:
    """Record one payment (postpaid) or top-up (prepaid); unblocks when it clears the block.

    Unlike charges, payments are taken from customers who are closed or terminated too:
    settling what they owe must stay possible. Future-dated ones are refused like charges.
    """
    return _record(
        session, MovementKind.PAYMENT, payload, now=now, clock_skew_seconds=clock_skew_seconds
    )


def _existing(
    session: Session, model: type[Charge] | type[Payment], reseller_id: int, key: str
) -> Charge | Payment | None:
    """The reseller's charge (payment) recorded under `key`, if any."""
    return cast(
        Charge | Payment | None,
        session.scalars(
            select(model).where(model.reseller_id == reseller_id, model.idempotency_key == key)
        ).one_or_none(),
    )


def _record(
    session: Session,
    kind: MovementKind,
    payload: object,
    *,
    now: dt.datetime,
    clock_skew_seconds: int,
) -> Result:
    """The shared path of a charge or a payment: validate, lock the customer, replay a known
    key, apply the balance rule, insert the row and its ledger entry."""
    is_charge = kind is MovementKind.CHARGE
    model: type[Charge] | type[Payment] = Charge if is_charge else Payment
    parsed = parse_movement(kind, payload, now=now, clock_skew_seconds=clock_skew_seconds)
    if isinstance(parsed, list):
        return refused(*parsed)
    data, amount, at = parsed, parsed.amount, parsed.at
    reseller = resolve_reseller(session, data.reseller)
    if isinstance(reseller, Problem):
        return refused(reseller)
    customer = _lock_customer(session, reseller.id, data)
    errors = customer_errors(customer, data)
    if errors:
        return refused(*errors)
    assert customer is not None
    existing = _existing(session, model, reseller.id, data.idempotency_key)
    if existing is not None:
        return _replay(session, kind, existing, customer, amount, at)
    inactive = status_refusal(customer) if is_charge else None
    if inactive is not None:
        return refused(inactive)
    postpaid = customer.balance_control == BalanceControl.POSTPAID
    decision = (
        apply_charge(
            customer.balance_control,
            customer.balance,
            customer.credit_limit,
            amount,
            currency=customer.currency,
        )
        if is_charge
        else apply_payment(
            customer.balance_control, customer.balance, customer.credit_limit, amount
        )
    )
    if isinstance(decision, Refusal):
        return refused(Problem("amount", decision.code, decision.message))
    row_id = _insert(
        session,
        model,
        {
            "reseller_id": reseller.id,
            "customer_id": customer.id,
            "amount": amount,
            "currency": customer.currency,
            kind.instant_field: at,
            "description": data.description,
            "idempotency_key": data.idempotency_key,
            "recorded_at": now,
            # A postpaid payment is credit until applied to invoices (tasks.settlement).
            **({} if is_charge else {"unapplied": amount if postpaid else Decimal(0)}),
        },
    )
    if row_id is None:  # another customer of the reseller took the key meanwhile
        existing = _existing(session, model, reseller.id, data.idempotency_key)
        if existing is None:
            raise RuntimeError(f"{kind} key {data.idempotency_key!r} neither inserted nor found")
        return _replay(session, kind, existing, customer, amount, at)
    apply_balance_change(
        session, customer, decision, entry_type=kind, now=now, **{f"{kind}_id": row_id}
    )
    if not is_charge and postpaid:
        apply_credit(session, customer, now=now)
    # `blocked` is the customer's state after the change: a payment that clears the credit
    # limit leaves a customer suspended for another reason (overdue, operator) blocked.
    return recorded_outcome(
        kind,
        row_id,
        customer,
        amount,
        balance_after=decision.balance_after,
        blocked=customer.blocked,
        replayed=False,
    )


def balance_mismatches(session: Session) -> list[dict[str, Any]]:
    """Customers whose balance differs from their ledger (sum of entries, last balance_after).

    Empty when every balance can be recomputed from the ledger, which is always the case
    unless something wrote a balance without a ledger row.
    """
    last_after = (
        select(LedgerEntry.balance_after)
        .where(LedgerEntry.customer_id == Customer.id)
        .order_by(LedgerEntry.id.desc())
        .limit(1)
        .correlate(Customer)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Customer.id,
            Customer.name,
            Customer.balance,
            func.coalesce(func.sum(LedgerEntry.amount), 0),
            last_after,
        )
        .outerjoin(LedgerEntry, LedgerEntry.customer_id == Customer.id)
        .group_by(Customer.id, Customer.name, Customer.balance)
        .order_by(Customer.id)
    ).all()
    mismatches = []
    for customer_id, name, balance, ledger_sum, last in rows:
        ledger_sum = Decimal(ledger_sum)
        if balance != ledger_sum or (last is not None and last != balance):
            mismatches.append(
                {
                    "customer_id": customer_id,
                    "customer": name,
                    "balance": str(balance),
                    "ledger_sum": str(ledger_sum),
                    "last_balance_after": None if last is None else str(last),
                }
            )
    return mismatches


@app.task(name="billing.charges.record", base=BillingTask, bind=True)
def record_charge_task(self: BillingTask, payload: dict[str, Any]) -> Result:
    """Record one charge: {reseller?, customer|customer_id, amount, currency, occurred_at,
    description, idempotency_key}."""
    with unit_of_work() as session:
        return record_charge(
            session, payload, now=utcnow(), clock_skew_seconds=settings().clock_skew_seconds
        )


@app.task(name="billing.payments.record", base=BillingTask, bind=True)
def record_payment_task(self: BillingTask, payload: dict[str, Any]) -> Result:
    """Record one payment or top-up: {reseller?, customer|customer_id, amount, currency,
    received_at, description?, idempotency_key}."""
    with unit_of_work() as session:
        return record_payment(
            session, payload, now=utcnow(), clock_skew_seconds=settings().clock_skew_seconds
        )
