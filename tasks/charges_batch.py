"""Charges in batches: about a thousand charges a message, applied set-based with exactly the
rules of the single charge (`tasks.charges.record_charge`).

A batch is a list of `{"line": N, "payload": {…charge…}}` (the payload exactly what
`billing.charges.record` takes). Each line gets the result the single task would have
given had the lines been sent one by one, in this order: the batch's customers by id, and
each customer's lines by (`occurred_at`, line number). The database work is a constant
number of statements per batch, whatever its size:

1. lock every customer the batch names, in id order, `FOR NO KEY UPDATE` (as the single
   task does, so single charges for the same customers queue behind the batch, or it
   behind them, and no balance is computed from a stale value);
2. read the customers' other block reasons and the charges already recorded under the
   batch's idempotency keys (with the balance their ledger entry left, for replays);
3. judge every line in Python, per customer in order, with the pure balance rules
   (`models.invoicing_rules.apply_charge`), carrying the running balance;
4. insert the accepted charges (`ON CONFLICT DO NOTHING RETURNING`), their ledger rows,
   the balance blocks lifted and set, and each customer's final balance and flag.

If a concurrent single charge of another customer takes one of the batch's keys between
steps 2 and 4, the insert skips it; the batch then rolls back to a savepoint and judges
again, seeing that charge, exactly as the single task replays a key taken meanwhile.

The balance block follows every accepted charge as in `tasks.blocks.set_blocked`: the
reason is lifted if any accepted charge left the customer under the limit (above zero),
and set if the last one left it at the limit (at zero), so its `since` is kept exactly when
the single task would have kept it. On SQLite (which serialises whole transactions) the
same statements run, without row locks.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import ARRAY, and_, any_, case, delete, exists, literal, or_, select, text, update
from sqlalchemy.orm import Session

from models import (
    BlockReason,
    Charge,
    Customer,
    CustomerBlock,
    LedgerEntry,
    LedgerEntryType,
)
from models.invoicing_rules import Refusal, apply_charge, balance_block_reason
from models.movements import Movement, MovementKind, parse_movement
from models.names import name_key
from models.validation import DEFAULT_CLOCK_SKEW_SECONDS, Problem
from tasks.base import BillingTask, utcnow
from tasks.charges import (
    Recorded,
    Result,
    customer_errors,
    recorded_outcome,
    refused,
    replay_outcome,
    status_refusal,
)
from tasks.queries import ResellerRef, resolve_reseller
from worker.celery_app import app
from worker.config import settings
from worker.db import dialect_insert, plan_each_batch, unit_of_work

# How often a batch judges again when concurrent single charges keep taking its keys.
MAX_ATTEMPTS: Final = 5
CHARGE = MovementKind.CHARGE.value


@dataclass
class _Line:
    index: int  # position in the batch, to answer in the batch's order
    number: int  # the input file's line number
    data: Movement
    reseller: ResellerRef


@dataclass
class _Accepted:
    """An accepted charge waiting for its row id (set after the insert)."""

    values: dict[str, Any]
    delta: Decimal
    balance_after: Decimal
    results: list[Result] = field(default_factory=list)  # its outcome and in-batch replays


def _items(batch: object) -> list[tuple[int, object]] | Problem:
    if not isinstance(batch, list) or not all(
        isinstance(item, dict)
        and set(item) == {"line", "payload"}
        and isinstance(item["line"], int)
        and not isinstance(item["line"], bool)
        for item in batch
    ):
        return Problem(
            None, "not_a_batch", 'a batch is a list of {"line": N, "payload": {…}} objects'
        )
    return [(item["line"], item["payload"]) for item in batch]


def record_charge_batch(
    session: Session,
    batch: object,
    *,
    now: dt.datetime,
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS,
) -> Result:
    """Every line of `batch` judged and applied as `record_charge` would, set-based.

    Returns `{"status": "done", "results": [{"line": N, …the single task's result…}]}` in
    the batch's order, or a refusal when `batch` is not a list of lines at all."""
    items = _items(batch)
    if isinstance(items, Problem):
        return refused(items)
    plan_each_batch(session)  # a generic plan scanned charges whole at 100,000 of them
    results: list[Result | None] = [None] * len(items)
    lines: list[_Line] = []
    resellers: dict[str | None, ResellerRef | Problem] = {}
    for index, (number, payload) in enumerate(items):
        parsed = parse_movement(
            MovementKind.CHARGE, payload, now=now, clock_skew_seconds=clock_skew_seconds
        )
        if isinstance(parsed, list):
            results[index] = refused(*parsed)
            continue
        if parsed.reseller not in resellers:
            resellers[parsed.reseller] = resolve_reseller(session, parsed.reseller)
        reseller = resellers[parsed.reseller]
        if isinstance(reseller, Problem):
            results[index] = refused(reseller)
            continue
        lines.append(_Line(index, number, parsed, reseller))
    customers = _lock_customers(session, lines)
    for _attempt in range(MAX_ATTEMPTS):
        savepoint = session.begin_nested()
        judged = _judge_and_write(session, lines, customers, now=now)
        if judged is not None:
            savepoint.commit()
            break
        savepoint.rollback()  # a concurrent charge took a key: judge again, seeing it
    else:
        raise RuntimeError(f"charge keys kept being taken concurrently ({MAX_ATTEMPTS} attempts)")
    for index, result in judged.items():
        results[index] = result
    return {
        "status": "done",
        "results": [
            {"line": number, **(result or {})}
            for (number, _payload), result in zip(items, results, strict=True)
        ],
    }


def _among(session: Session, column: Any, values: Iterable[Any]) -> Any:
    """`column IN values`; on PostgreSQL `= ANY(array)`: one parameter, however many values
    (an IN list of a thousand placeholders costs more to send and parse than the lookup)."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(values, ARRAY(column.type)))
    return column.in_(values)


def _reference(line: _Line) -> tuple[int, str, str | int]:
    data = line.data
    if data.customer_id is not None:
        return (line.reseller.id, "id", data.customer_id)
    assert data.customer is not None
    return (line.reseller.id, "name", name_key(data.customer))


def _lock_customers(
    session: Session, lines: list[_Line]
) -> dict[tuple[int, str, str | int], Customer]:
    """The customers the lines name, each under its reseller, locked in id order."""
    wanted: dict[int, tuple[set[str], set[int]]] = defaultdict(lambda: (set(), set()))
    for line in lines:
        reseller_id, how, ref = _reference(line)
        names, ids = wanted[reseller_id]
        if how == "id":
            ids.add(int(ref))
        else:
            names.add(str(ref))
    if not wanted:
        return {}
    found = session.scalars(
        select(Customer)
        .where(
            or_(
                *(
                    and_(
                        Customer.reseller_id == reseller_id,
                        or_(
                            _among(session, Customer.name_key, names),
                            _among(session, Customer.id, ids),
                        ),
                    )
                    for reseller_id, (names, ids) in wanted.items()
                )
            )
        )
        .order_by(Customer.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).all()
    by_reference: dict[tuple[int, str, str | int], Customer] = {}
    for customer in found:
        by_reference[(customer.reseller_id, "id", customer.id)] = customer
        by_reference[(customer.reseller_id, "name", customer.name_key)] = customer
    return by_reference


def _recorded(
    session: Session, lines: list[_Line]
) -> tuple[dict[tuple[int, str], Recorded], dict[int, str]]:
    """The charges already recorded under the lines' keys (with the balance their ledger
    entry left), and the names of the customers they belong to."""
    keys: dict[int, set[str]] = defaultdict(set)
    for line in lines:
        keys[line.reseller.id].add(line.data.idempotency_key)
    if not keys:
        return {}, {}
    rows = session.execute(
        select(
            Charge.id,
            Charge.reseller_id,
            Charge.customer_id,
            Charge.amount,
            Charge.occurred_at,
            Charge.idempotency_key,
            LedgerEntry.balance_after,
            Customer.name,
        )
        .join(Customer, Customer.id == Charge.customer_id)
        .outerjoin(LedgerEntry, LedgerEntry.charge_id == Charge.id)
        .where(
            or_(
                *(
                    and_(
                        Charge.reseller_id == reseller_id,
                        _among(session, Charge.idempotency_key, batch),
                    )
                    for reseller_id, batch in keys.items()
                )
            )
        )
    ).all()
    recorded = {
        (row.reseller_id, row.idempotency_key): Recorded(
            row.id,
            row.customer_id,
            row.amount,
            row.occurred_at,
            row.idempotency_key,
            row.balance_after,
        )
        for row in rows
    }
    return recorded, {row.customer_id: row.name for row in rows}


def _other_reasons(session: Session, customers: list[Customer]) -> set[int]:
    """The customers blocked for a reason other than their balance rule's (operator,
    overdue): they stay blocked whatever the balance does."""
    if not customers:
        return set()
    rows = session.execute(
        select(CustomerBlock.customer_id, CustomerBlock.reason).where(
            _among(session, CustomerBlock.customer_id, [c.id for c in customers])
        )
    ).all()
    control = {c.id: c.balance_control for c in customers}
    return {cid for cid, reason in rows if reason != balance_block_reason(control[cid]).value}


@dataclass
class _State:
    """One customer's balance while its lines are judged in order."""

    customer: Customer
    balance: Decimal
    lifted: bool = False  # an accepted charge left it under the limit: the block is lifted
    blocked_after: bool | None = None  # the balance block after the last accepted charge


def _judge_and_write(
    session: Session,
    lines: list[_Line],
    customers: dict[tuple[int, str, str | int], Customer],
    *,
    now: dt.datetime,
) -> dict[int, Result] | None:
    """Judge every line in order and write the accepted ones; None if a key was taken by a
    concurrent charge meanwhile (nothing is usable: the caller rolls back and retries)."""
    recorded, names = _recorded(session, lines)
    results: dict[int, Result] = {}
    located: list[tuple[Customer, _Line]] = []
    for line in lines:
        customer = customers.get(_reference(line))
        errors = customer_errors(customer, line.data)
        if errors:
            results[line.index] = refused(*errors)
            continue
        assert customer is not None
        located.append((customer, line))
    located.sort(key=lambda pair: (pair[0].id, pair[1].data.at, pair[1].number))
    others = _other_reasons(session, list({c.id: c for c, _ in located}.values()))
    states: dict[int, _State] = {}
    accepted: dict[tuple[int, str], _Accepted] = {}
    for customer, line in located:
        data = line.data
        key = (line.reseller.id, data.idempotency_key)
        state = states.setdefault(customer.id, _State(customer, customer.balance))
        if key in accepted:  # recorded earlier in this batch: a replay or a conflict
            earlier = accepted[key]
            values = earlier.values
            result = replay_outcome(
                CHARGE,
                Recorded(
                    0,
                    values["customer_id"],
                    values["amount"],
                    values["occurred_at"],
                    data.idempotency_key,
                    earlier.balance_after,
                ),
                customer,
                data.amount,
                data.at,
                other_name=states[values["customer_id"]].customer.name,
            )
            if result["status"] == "recorded":
                earlier.results.append(result)  # its charge id comes with the insert
            results[line.index] = result
            continue
        if key in recorded:
            existing = recorded[key]
            results[line.index] = replay_outcome(
                CHARGE,
                existing,
                customer,
                data.amount,
                data.at,
                other_name=names.get(existing.customer_id, existing.customer_id),
            )
            continue
        inactive = status_refusal(customer)
        if inactive is not None:
            results[line.index] = refused(inactive)
            continue
        decision = apply_charge(
            customer.balance_control,
            state.balance,
            customer.credit_limit,
            data.amount,
            currency=customer.currency,
        )
        if isinstance(decision, Refusal):
            results[line.index] = refused(Problem("amount", decision.code, decision.message))
            continue
        state.balance = decision.balance_after
        state.lifted = state.lifted or not decision.blocked_after
        state.blocked_after = decision.blocked_after
        result = recorded_outcome(
            CHARGE,
            0,
            customer,
            data.amount,
            balance_after=decision.balance_after,
            blocked=decision.blocked_after or customer.id in others,
            replayed=False,
        )
        results[line.index] = result
        accepted[key] = _Accepted(
            {
                "reseller_id": line.reseller.id,
                "customer_id": customer.id,
                "amount": data.amount,
                "currency": customer.currency,
                "occurred_at": data.at,
                "description": data.description,
                "idempotency_key": data.idempotency_key,
                "recorded_at": now,
            },
            decision.delta,
            decision.balance_after,
            [result],
        )
    if accepted and not _write(session, accepted, states, now=now):
        return None
    return results


def _write(
    session: Session,
    accepted: dict[tuple[int, str], _Accepted],
    states: dict[int, _State],
    *,
    now: dt.datetime,
) -> bool:
    """Insert the accepted charges, their ledger rows, blocks and balances; False (and
    nothing to keep) if a key was taken meanwhile."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    charges = list(accepted.values())
    inserted = (
        _insert_postgresql(session, charges, now=now)
        if postgresql
        else _insert_portable(session, charges, now=now)
    )
    if inserted is None:
        return False
    changed = [state for state in states.values() if state.blocked_after is not None]
    _write_blocks(session, changed, now=now)
    if postgresql:
        session.execute(
            _SET_BALANCES,
            {"ids": [s.customer.id for s in changed], "balances": [s.balance for s in changed]},
        )
        return True
    session.execute(
        update(Customer)
        .where(Customer.id.in_([state.customer.id for state in changed]))
        .values(
            balance=case(
                {
                    state.customer.id: literal(state.balance, Customer.balance.type)
                    for state in changed
                },
                value=Customer.id,
            ),
            blocked=exists().where(CustomerBlock.customer_id == Customer.id),
        )
        .execution_options(synchronize_session=False)
    )
    return True


def _set_ids(charges: list[_Accepted], inserted: list[Any]) -> None:
    by_key = {(c.values["reseller_id"], c.values["idempotency_key"]): c for c in charges}
    for row_id, reseller_id, key in inserted:
        for result in by_key[(reseller_id, key)].results:
            result["charge_id"] = row_id


def _insert_portable(
    session: Session, charges: list[_Accepted], *, now: dt.datetime
) -> list[Any] | None:
    """The charges and their ledger rows, one multi-row INSERT each (SQLite)."""
    inserted = list(
        session.execute(
            dialect_insert(session)(Charge)
            .on_conflict_do_nothing(index_elements=["reseller_id", "idempotency_key"])
            .returning(Charge.id, Charge.reseller_id, Charge.idempotency_key),
            [charge.values for charge in charges],
        ).all()
    )
    if len(inserted) != len(charges):
        return None
    _set_ids(charges, inserted)
    session.execute(
        dialect_insert(session)(LedgerEntry),
        [
            {
                "customer_id": charge.values["customer_id"],
                "entry_type": LedgerEntryType.CHARGE,
                "amount": charge.delta,
                "balance_after": charge.balance_after,
                "charge_id": charge.results[0]["charge_id"],
                "created_at": now,
            }
            for charge in charges
        ],
    )
    return inserted


# PostgreSQL: the batch's rows go in as one array per column (a short statement whatever the
# batch size, parsed once), charges and ledger rows in one statement, ids in judging order.
_INSERT_CHARGES = text("""
WITH batch AS (
    SELECT * FROM unnest(
        CAST(:reseller_ids AS bigint[]), CAST(:customer_ids AS bigint[]),
        CAST(:amounts AS numeric[]), CAST(:currencies AS text[]),
        CAST(:occurred AS timestamptz[]), CAST(:descriptions AS text[]),
        CAST(:keys AS text[]), CAST(:deltas AS numeric[]), CAST(:balances AS numeric[])
    ) WITH ORDINALITY AS b (reseller_id, customer_id, amount, currency, occurred_at,
                            description, idempotency_key, delta, balance_after, position)
), charged AS (
    INSERT INTO charges (reseller_id, customer_id, amount, currency, occurred_at,
                         description, idempotency_key, recorded_at)
    SELECT reseller_id, customer_id, amount, currency, occurred_at, description,
           idempotency_key, :now
    FROM batch ORDER BY position
    ON CONFLICT (reseller_id, idempotency_key) DO NOTHING
    RETURNING id, reseller_id, idempotency_key
), entered AS (
    INSERT INTO ledger_entries (customer_id, entry_type, amount, balance_after, charge_id,
                                created_at)
    SELECT batch.customer_id, 'charge', batch.delta, batch.balance_after, charged.id, :now
    FROM charged JOIN batch USING (reseller_id, idempotency_key)
    ORDER BY batch.position
)
SELECT id, reseller_id, idempotency_key FROM charged
""")

_SET_BALANCES = text("""
UPDATE customers SET balance = b.balance,
       blocked = EXISTS (SELECT 1 FROM customer_blocks WHERE customer_id = customers.id)
FROM unnest(CAST(:ids AS bigint[]), CAST(:balances AS numeric[])) AS b (id, balance)
WHERE customers.id = b.id
""")


def _insert_postgresql(
    session: Session, charges: list[_Accepted], *, now: dt.datetime
) -> list[Any] | None:
    """The charges and their ledger rows in one statement; None if a key was taken."""
    columns = [
        "reseller_id",
        "customer_id",
        "amount",
        "currency",
        "occurred_at",
        "description",
        "idempotency_key",
    ]
    names = [
        "reseller_ids",
        "customer_ids",
        "amounts",
        "currencies",
        "occurred",
        "descriptions",
        "keys",
    ]
    params: dict[str, Any] = {
        name: [c.values[column] for c in charges]
        for name, column in zip(names, columns, strict=True)
    }
    params |= {
        "deltas": [c.delta for c in charges],
        "balances": [c.balance_after for c in charges],
        "now": now,
    }
    inserted = list(session.execute(_INSERT_CHARGES, params).all())
    if len(inserted) != len(charges):
        return None
    _set_ids(charges, inserted)
    return inserted


def _write_blocks(session: Session, changed: list[_State], *, now: dt.datetime) -> None:
    """The balance block after the customers' accepted charges, as `tasks.blocks` would
    have left it one charge at a time."""
    for reason in (BlockReason.CREDIT_LIMIT, BlockReason.NO_FUNDS):
        mine = [s for s in changed if balance_block_reason(s.customer.balance_control) == reason]
        lifted = [s.customer.id for s in mine if s.lifted]
        if lifted:
            session.execute(
                delete(CustomerBlock)
                .where(CustomerBlock.customer_id.in_(lifted), CustomerBlock.reason == reason.value)
                .execution_options(synchronize_session=False)
            )
        blocked = [s.customer.id for s in mine if s.blocked_after]
        if blocked:
            session.execute(
                dialect_insert(session)(CustomerBlock).on_conflict_do_nothing(
                    index_elements=["customer_id", "reason"]
                ),
                [
                    {"customer_id": cid, "reason": reason.value, "since": now, "note": ""}
                    for cid in blocked
                ],
            )


@app.task(name="billing.charges.record_batch", base=BillingTask, bind=True)
def record_charge_batch_task(self: BillingTask, batch: list[dict[str, Any]]) -> Result:
    """Record a batch of charges: [{"line": N, "payload": {…as billing.charges.record…}}]."""
    with unit_of_work() as session:
        return record_charge_batch(
            session, batch, now=utcnow(), clock_skew_seconds=settings().clock_skew_seconds
        )
