"""Charges and payments: every balance change is one ledger row, race-safe and idempotent.

A charge (or a payment) is judged and applied while holding the customer's row lock
(`SELECT … FOR UPDATE`; SQLite serialises whole transactions instead), so concurrent
charges for one customer queue behind each other and no update is lost. The balance
rules (credit limit, available funds, blocking) are in `models.invoicing_rules`; the block
they decide goes through `tasks.blocks` as reason `credit_limit` or `no_funds`.

A postpaid payment is applied to the customer's open invoices, oldest due first; the rest
is credit for the next invoice (`tasks.settlement`).

Idempotency: one charge (payment) per (customer, idempotency key), enforced by a unique
constraint. A replayed key returns the original outcome and writes nothing; a key reused
with a different amount or instant is refused (`idempotency_conflict`). A refused charge
stores nothing, so its key may be sent again later (after a top-up, say).

Refusals are results, never exceptions: `{"status": "refused", "errors": [{field, code,
message}]}`. Codes: `invalid` / `required` / `unknown_field` (malformed payload),
`unknown_currency`, `invalid_amount`, `unknown_customer`, `currency_mismatch`,
`customer_closed` / `customer_inactive` (charges only), `credit_limit_reached`,
`insufficient_funds`, `idempotency_conflict`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import BalanceControl, Charge, Customer, CustomerStatus, LedgerEntry, Payment
from models.invoicing_rules import (
    Refusal,
    apply_charge,
    apply_payment,
    is_blocked,
)
from models.money import MoneyError, check_currency, parse_amount, round_money
from tasks.balances import apply_balance_change
from tasks.base import BillingTask, utcnow
from tasks.settlement import apply_credit
from worker.celery_app import app
from worker.db import dialect_insert, unit_of_work

Result = dict[str, Any]


class _Movement(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer: str | None = Field(default=None, min_length=1, max_length=100)
    customer_id: StrictInt | None = None
    amount: Any  # checked exactly by models.money.parse_amount (no floats)
    currency: StrictStr
    idempotency_key: str = Field(min_length=1, max_length=200)

    description: str

    @property
    def at(self) -> dt.datetime:
        """The instant the money moved (a charge's use, a payment's receipt)."""
        raise NotImplementedError


class ChargeIn(_Movement):
    occurred_at: AwareDatetime
    description: str = Field(min_length=1, max_length=500)

    @property
    def at(self) -> dt.datetime:
        return self.occurred_at


class PaymentIn(_Movement):
    received_at: AwareDatetime
    description: str = Field(default="", max_length=500)

    @property
    def at(self) -> dt.datetime:
        return self.received_at


def _error(field: str, code: str, message: str) -> dict[str, str]:
    return {"field": field, "code": code, "message": message}


def refused(*errors: dict[str, str]) -> Result:
    return {"status": "refused", "errors": list(errors)}


_PYDANTIC_CODES = {"missing": "required", "extra_forbidden": "unknown_field"}


def _validation_errors(exc: PydanticValidationError) -> list[dict[str, str]]:
    # The models are flat: the first part of `loc` is the field (the rest names union
    # members or list items), so errors are reported per top-level field.
    return [
        _error(
            str(e["loc"][0]) if e["loc"] else "payload",
            _PYDANTIC_CODES.get(e["type"], "invalid"),
            e["msg"],
        )
        for e in exc.errors()
    ]


def _parse(
    model: type[_Movement], payload: object
) -> tuple[_Movement, Decimal] | list[dict[str, str]]:
    """The validated payload and its exact amount, or the list of what is wrong with it."""
    if not isinstance(payload, dict):
        return [_error("payload", "invalid", "the payload must be a JSON object")]
    try:
        data = model.model_validate(payload)
    except PydanticValidationError as exc:
        return _validation_errors(exc)
    errors = []
    if (data.customer is None) == (data.customer_id is None):
        errors.append(_error("customer", "required", "give exactly one of customer, customer_id"))
    try:
        currency = check_currency(data.currency)
    except MoneyError as exc:
        return [*errors, _error("currency", "unknown_currency", str(exc))]
    try:
        amount = parse_amount(data.amount, currency)
    except MoneyError as exc:
        return [*errors, _error("amount", "invalid_amount", str(exc))]
    if amount <= 0:
        errors.append(_error("amount", "invalid_amount", "the amount must be greater than zero"))
    return errors or (data, amount)


def _lock_customer(session: Session, data: _Movement) -> Customer | None:
    """The customer row, locked until the transaction ends (concurrent changes queue here)."""
    query = (
        select(Customer).with_for_update(key_share=True).execution_options(populate_existing=True)
    )
    if data.customer_id is not None:
        query = query.where(Customer.id == data.customer_id)
    else:
        query = query.where(func.lower(Customer.name) == func.lower(data.customer))
    return session.scalars(query).one_or_none()


def _customer_errors(customer: Customer | None, data: _Movement) -> list[dict[str, str]]:
    if customer is None:
        who = data.customer if data.customer is not None else f"id {data.customer_id}"
        return [_error("customer", "unknown_customer", f"no customer {who!r}")]
    if data.currency != customer.currency:
        return [
            _error(
                "currency",
                "currency_mismatch",
                f"{customer.name!r} is billed in {customer.currency}, not {data.currency}",
            )
        ]
    return []


def _insert(session: Session, model: type[Charge] | type[Payment], values: dict[str, Any]) -> Any:
    """INSERT … ON CONFLICT (customer, key) DO NOTHING RETURNING id (None on conflict)."""
    statement = (
        dialect_insert(session)(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["customer_id", "idempotency_key"])
        .returning(model.id)
    )
    return session.execute(statement).scalar_one_or_none()


def _closed_refusal(customer: Customer) -> dict[str, Any]:
    closed = customer.closed_at.isoformat() if customer.closed_at is not None else "earlier"
    return _error(
        "customer",
        "customer_closed",
        f"{customer.name!r} was closed at {closed} and its final invoice made; "
        "no charge can be recorded for it any more",
    )


def _outcome(
    kind: str, row_id: int, customer: Customer, amount: Decimal, entry: LedgerEntry | None
) -> Result:
    balance_after = entry.balance_after if entry is not None else customer.balance
    return {
        "status": "recorded",
        f"{kind}_id": row_id,
        "customer": customer.name,
        "customer_id": customer.id,
        "amount": str(amount),
        "currency": customer.currency,
        "balance": str(round_money(balance_after, customer.currency)),
        "blocked": is_blocked(customer.balance_control, balance_after, customer.credit_limit),
        "replayed": entry is not None,
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
    if existing.amount != amount or existing_at != at:
        return refused(
            _error(
                "idempotency_key",
                "idempotency_conflict",
                f"key {existing.idempotency_key!r} was already used for a {kind} of "
                f"{existing.amount} at {existing_at.isoformat()}",
            )
        )
    column = LedgerEntry.charge_id if kind == "charge" else LedgerEntry.payment_id
    entry = session.scalars(select(LedgerEntry).where(column == existing.id)).one()
    return _outcome(kind, existing.id, customer, amount, entry)


def record_charge(session: Session, payload: object, *, now: dt.datetime) -> Result:
    """Record one charge and apply it to the customer's balance, or refuse it (nothing stored)."""
    return _record(session, "charge", payload, now=now)


def record_payment(session: Session, payload: object, *, now: dt.datetime) -> Result:
    """Record one payment (postpaid) or top-up (prepaid); unblocks when it clears the block.

    Unlike charges, payments are taken from customers who are closed or terminated too:
    settling what they owe must stay possible.
    """
    return _record(session, "payment", payload, now=now)


def _record(session: Session, kind: str, payload: object, *, now: dt.datetime) -> Result:
    """The shared path of a charge or a payment: validate, lock the customer, replay a known
    key, apply the balance rule, insert the row and its ledger entry."""
    is_charge = kind == "charge"
    model: type[Charge] | type[Payment] = Charge if is_charge else Payment
    parsed = _parse(ChargeIn if is_charge else PaymentIn, payload)
    if isinstance(parsed, list):
        return refused(*parsed)
    data, amount = parsed
    at = data.at
    customer = _lock_customer(session, data)
    errors = _customer_errors(customer, data)
    if errors:
        return refused(*errors)
    assert customer is not None
    existing = cast(
        Charge | Payment | None,
        session.scalars(
            select(model).where(
                model.customer_id == customer.id, model.idempotency_key == data.idempotency_key
            )
        ).one_or_none(),
    )
    if existing is not None:
        return _replay(session, kind, existing, customer, amount, at)
    if is_charge and customer.status == CustomerStatus.CLOSED:
        return refused(_closed_refusal(customer))
    if is_charge and customer.status != CustomerStatus.ACTIVE:
        return refused(
            _error("customer", "customer_inactive", f"{customer.name!r} is {customer.status}")
        )
    postpaid = customer.balance_control == BalanceControl.POSTPAID
    decide = apply_charge if is_charge else apply_payment
    decision = decide(customer.balance_control, customer.balance, customer.credit_limit, amount)
    if isinstance(decision, Refusal):
        return refused(_error("amount", decision.code, decision.message))
    row_id = _insert(
        session,
        model,
        {
            "customer_id": customer.id,
            "amount": amount,
            "currency": customer.currency,
            "occurred_at" if is_charge else "received_at": at,
            "description": data.description,
            "idempotency_key": data.idempotency_key,
            "recorded_at": now,
            # A postpaid payment is credit until applied to invoices (tasks.settlement).
            **({} if is_charge else {"unapplied": amount if postpaid else Decimal(0)}),
        },
    )
    if row_id is None:  # cannot happen under the row lock; the constraint has the last word
        raise RuntimeError(f"{kind} key {data.idempotency_key!r} inserted concurrently")
    apply_balance_change(
        session, customer, decision, entry_type=kind, now=now, **{f"{kind}_id": row_id}
    )
    if not is_charge and postpaid:
        apply_credit(session, customer, now=now)
    # `blocked` is the customer's state after the change: a payment that clears the credit
    # limit leaves a customer suspended for another reason (overdue, operator) blocked.
    return _outcome(kind, row_id, customer, amount, None) | {
        "balance": str(round_money(decision.balance_after, customer.currency)),
        "blocked": customer.blocked,
    }


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
    """Record one charge: {customer|customer_id, amount, currency, occurred_at, description,
    idempotency_key}."""
    with unit_of_work() as session:
        return record_charge(session, payload, now=utcnow())


@app.task(name="billing.payments.record", base=BillingTask, bind=True)
def record_payment_task(self: BillingTask, payload: dict[str, Any]) -> Result:
    """Record one payment or top-up: {customer|customer_id, amount, currency, received_at,
    description?, idempotency_key}."""
    with unit_of_work() as session:
        return record_payment(session, payload, now=utcnow())
