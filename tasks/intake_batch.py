"""Bulk customer import: a chunk of intake lines, validated with exactly the intake rules
and stored set-based.

`import_customers(session, lines, now=...)` takes `[(line number, payload), ...]` (about a
thousand) and returns one outcome per line, in order, each exactly what
`tasks.intake.create_customer` returns for that payload had the lines been sent one by one
in that order: created, created and replayed, or rejected with the same problems.

- Validation is the intake's own (`parse_intake`, `finish_intake`, `customer_row`); the
  catalog is looked up once per distinct (reseller, business model, customer class) of the
  chunk, with every plan the chunk names.
- The reseller's customers that share an idempotency key or a name key with a line are
  read in one statement; the chunk is then decided in file order against them and against
  the lines before it (the first wins; a later line with the same key is a replay or a
  reused key, with the same name a taken name), with the same classification as the single
  intake (`tasks.intake.conflict_outcome`).
- The lines that create a customer are inserted in one `INSERT … ON CONFLICT DO NOTHING
  RETURNING` (executemany, batched by the driver); then their ledger openings, no-funds
  blocks and subscriptions, one statement each. If a concurrent intake stored a conflicting
  customer between the read and the insert (the insert returns fewer rows), this chunk's
  new rows are deleted and the chunk is decided again: the database decides every race.

A line without an idempotency key gets `task:<task id>:<line>` as its key, so a chunk
message redelivered after its worker died returns the original outcomes. Everything is one
transaction: a database error stores nothing of the chunk (the task retries transient ones).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnDefault,
    String,
    Table,
    TypeDecorator,
    bindparam,
    delete,
    func,
    select,
    text,
    true,
    union,
    update,
)
from sqlalchemy.orm import Session

from models import BlockReason, Customer, CustomerBlock, Subscription
from models.base import table_of
from models.billing import LedgerEntry, LedgerEntryType
from models.customer import BalanceControl
from models.intake import (
    MAX_IMPORT_CHUNK,
    Accepted,
    CatalogRefs,
    Rejected,
    finish_intake,
    parse_intake,
)
from models.invoicing_rules import local_date
from models.periods import Period
from models.validation import Problem
from tasks.base import BillingTask, utcnow
from tasks.intake import (
    _INSERT_ATTEMPTS,
    _created,
    _rejected,
    catalog_refs,
    conflict_outcome,
    customer_row,
)
from worker.celery_app import app
from worker.db import dialect_insert, unit_of_work

TASK_NAME: Final = "billing.customers.import"


@dataclass
class _Stored:
    """A customer as conflict classification sees it: stored already, or new in this chunk
    (its id known once inserted)."""

    id: int
    name: str
    name_key: str
    billing_period: str
    billing_timezone: str
    created_local_date: dt.date


@dataclass
class _Candidate:
    index: int  # position in the chunk
    accepted: Accepted
    row: dict[str, Any]
    period: Period

    @property
    def reseller_id(self) -> int:
        return self.accepted.reseller_id


def _refs_by_names(session: Session, drafts: Sequence[Any]) -> dict[Any, CatalogRefs]:
    """The catalog behind every distinct set of names in the chunk, each looked up once."""
    wanted: dict[tuple[str | None, str | None, str | None], set[str]] = {}
    for draft in drafts:
        if draft.shaped:
            plans = wanted.setdefault(draft.catalog_names(), set())
            plans.update(r.plan for r in draft.subscriptions)
    return {names: catalog_refs(session, names, sorted(plans)) for names, plans in wanted.items()}


def _matching(session: Session, column: Any, values: set[str]) -> tuple[Any, Any]:
    """(FROM, WHERE) for "`column` is one of `values`". On PostgreSQL a join with the
    `unnest` of one array parameter: the driver binds it at once (a thousand placeholders
    cost it 0.1 s to split), and the planner probes the unique index once per value
    whatever its statistics say (an `= ANY(array)` filter may be planned as a scan that
    compares every stored row with every value: a chunk's cost grew with the table)."""
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam(None, sorted(values), type_=ARRAY(String))
        wanted = func.unnest(array).table_valued("value").render_derived()
        return wanted.join(Customer, column == wanted.c.value), true()
    return Customer, column.in_(values)


def _stored_conflicts(
    session: Session, candidates: Sequence[_Candidate]
) -> tuple[dict[tuple[int, str], _Stored], dict[tuple[int, str], _Stored]]:
    """The stored customers sharing a candidate's (reseller, idempotency key) or (reseller,
    name key), by each: one statement (a UNION of index look-ups)."""
    wanted: dict[int, tuple[set[str], set[str]]] = {}
    for c in candidates:
        keys, names = wanted.setdefault(c.reseller_id, (set(), set()))
        names.add(c.row["name_key"])
        if c.row["intake_key"] is not None:
            keys.add(c.row["intake_key"])
    by_key: dict[tuple[int, str], _Stored] = {}
    by_name: dict[tuple[int, str], _Stored] = {}
    if not wanted:
        return by_key, by_name
    columns = (
        Customer.id,
        Customer.reseller_id,
        Customer.name,
        Customer.name_key,
        Customer.intake_key,
        Customer.billing_period,
        Customer.billing_timezone,
        Customer.created_local_date,
    )
    parts = []
    for reseller_id, (keys, names) in wanted.items():
        for column, values in ((Customer.name_key, names), (Customer.intake_key, keys)):
            if values:
                source, condition = _matching(session, column, values)
                parts.append(
                    select(*columns)
                    .select_from(source)
                    .where(Customer.reseller_id == reseller_id, condition)
                )
    rows = session.execute(union(*parts)).all()
    for row in rows:
        stored = _Stored(
            row.id,
            row.name,
            row.name_key,
            row.billing_period,
            row.billing_timezone,
            row.created_local_date,
        )
        by_name[(row.reseller_id, row.name_key)] = stored
        if row.intake_key is not None:
            by_key[(row.reseller_id, row.intake_key)] = stored
    return by_key, by_name


@dataclass
class _Decision:
    candidate: _Candidate
    same_key: _Stored | None  # both None: the line creates a customer
    same_name: _Stored | None
    new: _Stored | None = None


def _decide(session: Session, candidates: Sequence[_Candidate]) -> list[_Decision]:
    """Each candidate in chunk order against the stored customers and the lines before it."""
    by_key, by_name = _stored_conflicts(session, candidates)
    decisions: list[_Decision] = []
    for c in candidates:
        reseller_id, key, name = c.reseller_id, c.row["intake_key"], c.row["name_key"]
        same_key = by_key.get((reseller_id, key)) if key is not None else None
        same_name = by_name.get((reseller_id, name)) if same_key is None else None
        decision = _Decision(c, same_key, same_name)
        if same_key is None and same_name is None:
            decision.new = _Stored(
                0,
                c.row["name"],
                name,
                c.row["billing_period"],
                c.row["billing_timezone"],
                c.row["created_local_date"],
            )
            by_name[(reseller_id, name)] = decision.new
            if key is not None:
                by_key[(reseller_id, key)] = decision.new
        decisions.append(decision)
    return decisions


def _json_value(value: Any) -> Any:
    """A bound value as JSON that PostgreSQL reads back as the same value of its column."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def insert_rows(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], *, returning: Sequence[str] = ()
) -> list[Any]:
    """`INSERT … ON CONFLICT DO NOTHING [RETURNING …]` of many rows (all with the same
    keys), in one statement with one parameter on PostgreSQL: the rows as one JSON array,
    read by `json_populate_recordset` into the table's row type (a multi-row VALUES of a
    thousand rows, or an array per column, costs the driver more than the server spends
    storing them). Other databases (SQLite) take SQLAlchemy's executemany. Values are bound
    as the columns' types bind them (type decorators; None in a JSON column is JSON null, as
    Core stores it) and missing columns get their scalar defaults, so the stored rows are
    the ones a Core insert of the same dicts stores."""
    if not rows:
        return []
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        statement = dialect_insert(session)(table).on_conflict_do_nothing()
        if returning:
            return list(
                session.execute(
                    statement.returning(*(table.c[name] for name in returning)), list(rows)
                ).all()
            )
        session.execute(statement, list(rows))
        return []
    defaults: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.key in rows[0] or default is None or column.server_default is not None:
            continue
        if not isinstance(default, ColumnDefault) or not default.is_scalar:
            raise ValueError(f"{table.name}.{column.key} needs a value (no scalar default)")
        defaults[column.key] = default.arg
    names = [*rows[0], *defaults]
    decorated: dict[str, TypeDecorator[Any]] = {}
    for name in names:
        kind = table.c[name].type
        if isinstance(kind, TypeDecorator):
            decorated[name] = kind
    records = []
    for row in rows:
        record = {**row, **defaults}
        for name, kind in decorated.items():
            record[name] = kind.process_bind_param(record[name], dialect)
        records.append({k: _json_value(v) for k, v in record.items()})
    quote = dialect.identifier_preparer.quote
    selected = [
        f"COALESCE(r.{quote(n)}, 'null'::json)"
        if isinstance(table.c[n].type, JSON)
        else f"r.{quote(n)}"
        for n in names
    ]
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "  # noqa: S608 (identifiers from the table, values bound)
        f"SELECT {', '.join(selected)} "
        f"FROM json_populate_recordset(NULL::{quote(table.name)}, CAST(:rows AS json)) AS r "
        "ON CONFLICT DO NOTHING"
    )
    if returning:
        sql += f" RETURNING {', '.join(quote(n) for n in returning)}"
    result = session.execute(text(sql), {"rows": json.dumps(records)})
    return list(result.all()) if returning else []


def _insert_new(session: Session, decisions: Sequence[_Decision]) -> bool:
    """Insert the new customers; True if every one was stored (ids set), else none is."""
    new = [d for d in decisions if d.new is not None]
    if not new:
        return True
    customers = table_of(Customer)
    returned = insert_rows(
        session,
        customers,
        [d.candidate.row for d in new],
        returning=("id", "reseller_id", "name_key"),
    )
    ids = {(r.reseller_id, r.name_key): r.id for r in returned}
    if len(ids) < len(new):
        # A concurrent intake stored a conflicting customer since the read: undo ours.
        if ids:
            session.execute(delete(customers).where(customers.c.id.in_(ids.values())))
        return False
    for d in new:
        assert d.new is not None
        d.new.id = ids[(d.candidate.reseller_id, d.new.name_key)]
    return True


def _store_details(session: Session, created: Sequence[_Decision]) -> None:
    """Ledger openings, no-funds blocks and subscriptions of the new customers, set-based:
    the same rows `tasks.intake` stores one customer at a time."""
    ledger: list[dict[str, Any]] = []
    blocked: list[dict[str, Any]] = []
    terms: list[dict[str, Any]] = []
    for d in created:
        assert d.new is not None
        row, intake = d.candidate.row, d.candidate.accepted.intake
        if intake.balance_control == BalanceControl.PREPAID:
            funds: Decimal = row["balance"]
            ledger.append(
                {
                    "customer_id": d.new.id,
                    "entry_type": LedgerEntryType.OPENING,
                    "amount": funds,
                    "balance_after": funds,
                    "created_at": row["created_at"],
                }
            )
            if funds == 0:
                blocked.append(
                    {
                        "customer_id": d.new.id,
                        "reason": BlockReason.NO_FUNDS.value,
                        "since": row["created_at"],
                        "note": "",
                    }
                )
        quantities = {plan.id: quantity for plan, quantity in d.candidate.accepted.subscriptions}
        for plan_id, quantity in quantities.items():
            if quantity > 0:
                terms.append(
                    {
                        "customer_id": d.new.id,
                        "plan_id": plan_id,
                        "quantity": quantity,
                        "starts_at": row["created_at"],
                        "starts_on": local_date(row["created_at"], row["billing_timezone"]),
                        "replaces_id": None,
                    }
                )
    if blocked:
        # New customers have no block yet: what `tasks.blocks.block` records, for all.
        insert_rows(session, table_of(CustomerBlock), blocked)
        session.execute(
            update(Customer)
            .where(Customer.id.in_([b["customer_id"] for b in blocked]))
            .values(blocked=True)
            .execution_options(synchronize_session=False)
        )
    insert_rows(session, table_of(LedgerEntry), ledger)
    insert_rows(session, table_of(Subscription), terms)


def _outcome(d: _Decision) -> dict[str, Any]:
    if d.new is not None:
        return _created(d.new.id, d.candidate.row["name"], d.candidate.period)
    outcome = conflict_outcome(d.candidate.row["name"], d.same_key, d.same_name)
    assert outcome is not None
    return outcome


def import_customers(
    session: Session,
    lines: Sequence[tuple[int, object]],
    *,
    now: dt.datetime,
    delivery_key: str | None = None,
) -> list[dict[str, Any]]:
    """Validate and store a chunk of `(line number, payload)`; one outcome per line, in
    order, as `create_customer` would give sending them one by one in this order."""
    drafts = [parse_intake(payload, now=now) for _, payload in lines]
    refs = _refs_by_names(session, drafts)
    outcomes: list[dict[str, Any] | None] = [None] * len(lines)
    candidates: list[_Candidate] = []
    for index, ((number, _), draft) in enumerate(zip(lines, drafts, strict=True)):
        checked = finish_intake(draft, refs[draft.catalog_names()] if draft.shaped else None)
        if isinstance(checked, Rejected):
            outcomes[index] = _rejected(checked.problems)
            continue
        key = f"{delivery_key}:{number}" if delivery_key is not None else None
        built = customer_row(checked, now=now, delivery_key=key)
        if isinstance(built, dict):
            outcomes[index] = built
            continue
        candidates.append(_Candidate(index, checked, *built))
    for _ in range(_INSERT_ATTEMPTS):
        decisions = _decide(session, candidates)
        if _insert_new(session, decisions):
            break
    else:
        raise RuntimeError("a chunk's customers neither inserted nor found conflicting")
    _store_details(session, [d for d in decisions if d.new is not None])
    for d in decisions:
        outcomes[d.candidate.index] = _outcome(d)
    return [o for o in outcomes if o is not None]


def _chunk_problem(lines: Any) -> Problem | None:
    if not isinstance(lines, list) or not all(
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], int)
        and not isinstance(item[0], bool)
        for item in lines
    ):
        return Problem(None, "not_a_chunk", "the message must be a list of [line, payload] pairs")
    if len(lines) > MAX_IMPORT_CHUNK:
        return Problem(
            None, "payload_too_large", f"{len(lines)} lines; at most {MAX_IMPORT_CHUNK} a message"
        )
    return None


@app.task(name=TASK_NAME, base=BillingTask, bind=True)
def import_customers_task(self: BillingTask, lines: Any) -> dict[str, Any]:
    """Import a chunk `[[line, payload], ...]`; returns `{"status": "imported", "results":
    [outcome per line, in order]}` (or a rejection of a message that is not a chunk)."""
    problem = _chunk_problem(lines)
    if problem is not None:
        return _rejected([problem])
    now = utcnow()
    with unit_of_work() as session:
        key = f"task:{self.request.id}" if self.request.id else None
        results = import_customers(
            session, [(number, payload) for number, payload in lines], now=now, delivery_key=key
        )
    return {"status": "imported", "results": results}
