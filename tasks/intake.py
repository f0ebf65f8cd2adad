"""Customer intake: validate a customer-creation request and store the customer.

`create_customer(session, payload, now=...)` returns one of

    {"status": "created", "customer_id": 17, "name": "Globex Corp", "first_period": {...}}
    {"status": "created", ..., "replayed": true}     # a repeated idempotency key
    {"status": "rejected", "errors": [{"field", "code", "message"}, ...]}

and raises only on infrastructure failures (the task retries those). Rejections store
nothing, so a corrected request with the same idempotency key can still succeed.

The reseller is the tenant: the business model and the customer class are looked up among
the reseller's own, and names and idempotency keys are unique per reseller. The database
decides every race: the customer is inserted with `INSERT … ON CONFLICT DO NOTHING
RETURNING id`; when no row comes back, the conflicting row of the same reseller is either
the same idempotency key (the original outcome is returned again) or the same name key
(`models.names.name_key`: case, width and form ignored; rejected as `name_taken`). Two
workers racing on one name therefore produce exactly one customer. Another reseller's
customers never cause, nor appear in, an outcome.

The customer's first billing period comes from the period engine and is stored as
`current_period_start/end`, so the closer finds it by its end instant. An imported
`created_at` far in the past still stores the *first* period: the closer catches up and
closes every missed period in order.

Prepaid customers get an `opening` ledger entry for their available funds in the same
transaction (the ledger always sums to the balance); a prepaid customer with zero funds
starts blocked. Postpaid customers start at balance 0 with their credit limit (none given
means no limit).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import null, select
from sqlalchemy.orm import Session

from models.base import table_of
from models.billing import LedgerEntry, LedgerEntryType
from models.catalog import BusinessModel, CustomerClass, Reseller
from models.custom_fields import CustomField
from models.customer import BalanceControl, BlockReason, Customer
from models.intake import (
    Accepted,
    CatalogRefs,
    CustomerIntake,
    IntakeDraft,
    Rejected,
    finish_intake,
    parse_intake,
)
from models.invoicing_rules import local_date
from models.names import name_key
from models.periods import Period, PeriodError, first_period
from models.validation import Problem, iso_utc
from tasks.base import BillingTask, utcnow
from tasks.blocks import block
from tasks.queries import customer_by_name
from tasks.subscriptions import PlanQuantity, plans_named, set_quantities
from worker.celery_app import app
from worker.db import dialect_insert, unit_of_work

# An insert that lost to a conflicting row which then disappeared (deleted concurrently) is
# simply tried again; more than this many times means something else is wrong.
_INSERT_ATTEMPTS = 3

# Pure functions of a few values: a bulk import of customers created the same day in the
# same zone and rule computes their first period once (`tasks.intake_batch`).
_local_date = functools.lru_cache(maxsize=4096)(local_date)
_first_period = functools.lru_cache(maxsize=4096)(first_period)


def _catalog_refs(session: Session, draft: IntakeDraft) -> CatalogRefs:
    return catalog_refs(session, draft.catalog_names(), [r.plan for r in draft.subscriptions])


def catalog_refs(
    session: Session,
    names: tuple[str | None, str | None, str | None],
    plan_names: Iterable[str] = (),
) -> CatalogRefs:
    """The ids behind catalog `names` (reseller, business model, customer class, as in
    `IntakeDraft.catalog_names`), in one round trip: the reseller by name key, its own
    business model and customer class by name key within it; and the reseller's plans
    among `plan_names` (one more round trip, only when there are any)."""
    reseller, business_model, customer_class = names
    reseller_id = (
        select(Reseller.id).where(Reseller.name_key == name_key(reseller)).scalar_subquery()
        if reseller is not None
        else null()
    )

    def lookup(column: Any, model: Any, name: str | None) -> Any:
        if name is None:
            return null()
        return (
            select(column)
            .where(model.reseller_id == reseller_id, model.name_key == name_key(name))
            .scalar_subquery()
        )

    row = session.execute(
        select(
            reseller_id,
            lookup(BusinessModel.id, BusinessModel, business_model),
            lookup(CustomerClass.id, CustomerClass, customer_class),
            lookup(CustomerClass.custom_fields, CustomerClass, customer_class),
            lookup(CustomerClass.requires, CustomerClass, customer_class),
        )
    ).one()
    reseller_id, business_model_id, class_id, custom_fields, requires = row
    plan_names = list(plan_names)
    plans = (
        plans_named(session, reseller_id, plan_names)
        if reseller_id is not None and plan_names
        else {}
    )
    return CatalogRefs(
        reseller_id=reseller_id,
        business_model_id=business_model_id,
        customer_class_id=class_id,
        custom_fields=tuple(CustomField.from_json(f) for f in custom_fields or ()),
        plans=plans,
        requires=tuple(requires or ()),
    )


def _utc(instant: dt.datetime) -> dt.datetime:
    """A plain stdlib UTC datetime (the engine returns pendulum instances)."""
    return dt.datetime.fromtimestamp(instant.timestamp(), dt.UTC)


@functools.lru_cache(maxsize=4096)
def _period_json(period: Period) -> tuple[tuple[str, str], ...]:
    return tuple(
        {
            "start": iso_utc(period.start),
            "end": iso_utc(period.end),
            "first_day": period.start.date().isoformat(),
            "last_day": (period.end.date() - dt.timedelta(days=1)).isoformat(),
        }.items()
    )


def period_summary(period: Period) -> dict[str, str]:
    """A period as JSON: UTC instants and the local dates it covers (computed once per
    period: a chunk's customers mostly share a few)."""
    return dict(_period_json(period))


def _rejected(problems: list[Problem] | tuple[Problem, ...]) -> dict[str, Any]:
    return {"status": "rejected", "errors": [p.as_dict() for p in problems]}


def _created(
    customer_id: int, name: str, period: Period, *, replayed: bool = False
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "status": "created",
        "customer_id": customer_id,
        "name": name,
        "first_period": period_summary(period),
    }
    if replayed:
        result["replayed"] = True
    return result


def create_customer(
    session: Session,
    payload: object,
    *,
    now: dt.datetime,
    delivery_key: str | None = None,
) -> dict[str, Any]:
    """Validate `payload` and store the customer with its first billing period.

    `delivery_key` is the idempotency key used when the payload carries none: the task
    passes its own id, so a message redelivered after its worker died returns the original
    outcome instead of rejecting the customer's name as taken.
    """
    draft = parse_intake(payload, now=now)
    outcome = finish_intake(draft, _catalog_refs(session, draft) if draft.shaped else None)
    if isinstance(outcome, Rejected):
        return _rejected(outcome.problems)
    return _store(session, outcome, now=now, delivery_key=delivery_key)


def customer_row(
    accepted: Accepted, *, now: dt.datetime, delivery_key: str | None
) -> tuple[dict[str, Any], Period] | dict[str, Any]:
    """The `customers` row an accepted intake stores, with its first period; or the
    rejection when the first period cannot be computed (a `created_at` out of range)."""
    intake = accepted.intake
    created_at = intake.created_at or now
    created_local_date = _local_date(created_at, intake.billing_timezone)
    try:
        period = _first_period(intake.billing_period, created_local_date, intake.billing_timezone)
    except PeriodError as error:
        return _rejected([Problem("created_at", "out_of_range", str(error))])
    prepaid = intake.balance_control == BalanceControl.PREPAID
    funds = intake.available_funds or Decimal(0)
    row = {
        "reseller_id": accepted.reseller_id,
        "name": intake.name,
        "name_key": name_key(intake.name),
        "business_model_id": accepted.business_model_id,
        "customer_class_id": accepted.customer_class_id,
        "billing_period": intake.billing_period,
        "billing_timezone": intake.billing_timezone,
        "balance_control": intake.balance_control.value,
        "currency": intake.currency,
        "credit_limit": None if prepaid else intake.credit_limit,
        "balance": funds if prepaid else Decimal(0),
        "custom_data": intake.custom_data,
        "billing_address": intake.billing_address,
        "tax_id": intake.tax_id,
        "invoice_email": intake.invoice_email,
        "locale": intake.locale,
        "created_at": created_at,
        "created_local_date": created_local_date,
        "current_period_start": _utc(period.start),
        "current_period_end": _utc(period.end),
        "intake_key": intake.idempotency_key or delivery_key,
    }
    return row, period


def _store(
    session: Session, accepted: Accepted, *, now: dt.datetime, delivery_key: str | None
) -> dict[str, Any]:
    built = customer_row(accepted, now=now, delivery_key=delivery_key)
    if isinstance(built, dict):
        return built
    row, period = built
    intake = accepted.intake
    customers = table_of(Customer)
    statement = (
        dialect_insert(session)(customers)
        .values(row)
        .on_conflict_do_nothing()
        .returning(customers.c.id)
    )
    for _ in range(_INSERT_ATTEMPTS):
        customer_id = session.execute(statement).scalar_one_or_none()
        if customer_id is not None:
            break
        conflict = _conflict_outcome(session, accepted.reseller_id, intake, row["intake_key"])
        if conflict is not None:
            return conflict
    else:
        raise RuntimeError(f"customer {intake.name!r} neither inserted nor found conflicting")
    created_at = row["created_at"]
    prepaid = intake.balance_control == BalanceControl.PREPAID
    funds = row["balance"]
    if prepaid and funds == 0:
        block(session, customer_id, BlockReason.NO_FUNDS, at=created_at)
    if prepaid:
        session.execute(
            dialect_insert(session)(table_of(LedgerEntry)).values(
                customer_id=customer_id,
                entry_type=LedgerEntryType.OPENING,
                amount=funds,
                balance_after=funds,
                created_at=created_at,
            )
        )
    if accepted.subscriptions:
        # From the creation instant: the first period's fees are prorated from that day.
        set_quantities(
            session,
            customer_id,
            intake.billing_timezone,
            [
                PlanQuantity(plan.id, plan.name, quantity)
                for plan, quantity in accepted.subscriptions
            ],
            at=created_at,
        )
    return _created(customer_id, intake.name, period)


class StoredCustomer(Protocol):
    """What classifying a conflict needs of the stored customer it conflicts with."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def name_key(self) -> str: ...
    @property
    def billing_period(self) -> str: ...
    @property
    def billing_timezone(self) -> str: ...
    @property
    def created_local_date(self) -> dt.date: ...


def conflict_outcome(
    name: str, same_key: StoredCustomer | None, same_name: StoredCustomer | None
) -> dict[str, Any] | None:
    """The outcome of an intake for `name` that conflicts with the reseller's customer of
    the same idempotency key (`same_key`) or else of the same name key (`same_name`): the
    original outcome again, a reused key, or a taken name; None when neither exists."""
    if same_key is not None:
        if same_key.name_key != name_key(name):
            return _rejected(
                [
                    Problem(
                        "idempotency_key",
                        "idempotency_key_reused",
                        f"this idempotency key already created customer {same_key.name!r}; "
                        "use a new key for a different customer",
                    )
                ]
            )
        period = first_period(
            same_key.billing_period, same_key.created_local_date, same_key.billing_timezone
        )
        return _created(same_key.id, same_key.name, period, replayed=True)
    if same_name is not None:
        return _rejected(
            [
                Problem(
                    "name",
                    "name_taken",
                    f"a customer named {same_name.name!r} already exists "
                    "(names are unique, ignoring case)",
                )
            ]
        )
    return None


def _conflict_outcome(
    session: Session, reseller_id: int, intake: CustomerIntake, intake_key: str | None
) -> dict[str, Any] | None:
    """Why the insert did nothing: a replayed key, a taken name, or (None) nothing any more.
    Only the reseller's own customers are looked at."""
    same_key = (
        session.scalars(
            select(Customer).where(
                Customer.reseller_id == reseller_id, Customer.intake_key == intake_key
            )
        ).one_or_none()
        if intake_key is not None
        else None
    )
    same_name = customer_by_name(session, reseller_id, intake.name) if same_key is None else None
    return conflict_outcome(intake.name, same_key, same_name)


@app.task(name="billing.customers.create", base=BillingTask, bind=True)
def create_customer_task(self: BillingTask, payload: Any) -> dict[str, Any]:
    """Create one customer from a JSON object; returns the created/rejected outcome."""
    now = utcnow()
    with unit_of_work() as session:
        key = f"task:{self.request.id}" if self.request.id else None
        return create_customer(session, payload, now=now, delivery_key=key)
