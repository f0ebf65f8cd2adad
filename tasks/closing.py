"""Closing billing periods, and the reconcile step that heals lost invoice messages.

`close_due` finds every active customer whose current period has ended
(`current_period_end <= now`), records the closed period, advances the customer by exactly
one period and, after each batch commits, queues invoice generation for what it closed
(sent by a background thread while the next batch is written; see `BackgroundSender`).
A customer several periods behind is claimed again by a later batch of the same run, so
missed periods close separately and in order.

Exactly once, whatever runs at the same time:
- one closed period per (customer, period start), enforced by the unique constraint and
  `ON CONFLICT DO NOTHING`; a conflict means "already closed";
- closers claim customers with `FOR NO KEY UPDATE SKIP LOCKED`, so concurrent closers split
  the due customers instead of waiting on or repeating each other's batch;
- each batch is its own transaction: a crash loses at most one batch, and the next run
  (the next beat) continues where the committed batches stopped.

Cost follows the work that is due: the claim walks the partial index on
`current_period_end`, the period engine runs once per (rule, timezone, anchor, boundary)
group (`models.closing_rules`), and on PostgreSQL each batch is written by one set-based
statement. Only one batch is ever held in memory.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models import ClosedPeriod, Customer, CustomerStatus
from models.closing_rules import Advance, GroupedPeriods
from models.validation import parse_instant
from tasks.base import BackgroundSender, BillingTask
from worker.celery_app import app
from worker.config import settings
from worker.db import unit_of_work

logger = logging.getLogger(__name__)

GENERATE_INVOICES = "billing.invoices.generate"
INVOICING_QUEUE = "invoicing"

# (rule, timezone, local end date) -> closed periods, for the operator's report.
GroupCounts = Counter[tuple[str, str, dt.date]]


@dataclass
class CloseSummary:
    closed: int = 0  # closed-period rows this run created
    already_closed: int = 0  # claimed periods another run had recorded (conflict = done)
    advanced: int = 0  # customers moved on by one period (a customer behind counts each time)
    batches: int = 0
    invoice_messages: int = 0
    period_computations: int = 0  # distinct groups the period engine was asked about
    unclosable: int = 0  # customers whose stored period the engine refuses (logged, skipped)
    by_boundary: GroupCounts = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        """The JSON-safe totals a task returns."""
        return {
            "closed": self.closed,
            "already_closed": self.already_closed,
            "advanced": self.advanced,
            "batches": self.batches,
            "invoice_messages": self.invoice_messages,
            "period_computations": self.period_computations,
            "unclosable": self.unclosable,
        }


@dataclass
class ReconcileSummary:
    requeued: int = 0  # closed periods whose invoice generation was queued again
    invoice_messages: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requeued": self.requeued, "invoice_messages": self.invoice_messages}


def close_due(
    session: Session,
    *,
    now: dt.datetime,
    batch_size: int,
    invoice_batch_size: int | None = None,
) -> CloseSummary:
    """Close every period that has ended at `now`, one committed batch at a time."""
    _require_aware(now)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    invoice_batch = invoice_batch_size or settings().invoice_batch_size
    write = _write_postgresql if session.get_bind().dialect.name == "postgresql" else _write_sqlite
    groups = GroupedPeriods()
    summary = CloseSummary()
    # A customer whose stored period the engine refuses (data no intake would write) is
    # logged and left alone for the rest of the run, so it cannot stop everyone else's close.
    unclosable: set[int] = set()
    with BackgroundSender() as sender:
        while True:
            claimed = session.execute(_claim_due(session, now, batch_size, unclosable)).all()
            if not claimed:
                break
            steps = []
            for rule, tz, created, start, end, joined_ids in claimed:
                ids = _id_list(joined_ids)
                try:
                    steps.append(
                        (ids, rule, tz, start, end, groups.advance(rule, created, tz, start, end))
                    )
                except ValueError as exc:
                    for customer_id in ids:
                        logger.error("customer %s cannot be closed: %s", customer_id, exc)
                    unclosable.update(ids)
            closed = write(session, steps, groups, now) if steps else {}
            closed_ids = sorted(i for ids in closed.values() for i in ids)
            advanced = sum(len(step[0]) for step in steps)
            summary.batches += 1
            summary.advanced += advanced
            summary.closed += len(closed_ids)
            summary.already_closed += advanced - len(closed_ids)
            summary.by_boundary.update({key: len(ids) for key, ids in closed.items()})
            summary.invoice_messages += _queue_invoices(session, sender, closed_ids, invoice_batch)
            # The previous batch's messages went out while this batch was being written.
            sender.wait()
            session.commit()
        session.commit()  # release the (empty) claim transaction
    summary.period_computations = groups.computations
    summary.unclosable = len(unclosable)
    return summary


def _claim_due(
    session: Session, now: dt.datetime, batch_size: int, skip: set[int]
) -> Select[str, str, dt.date, dt.datetime, dt.datetime, Any]:
    claim = (
        select(
            Customer.id,
            Customer.billing_period,
            Customer.billing_timezone,
            Customer.created_local_date,
            Customer.current_period_start,
            Customer.current_period_end,
        )
        .where(Customer.status == CustomerStatus.ACTIVE.value, Customer.current_period_end <= now)
        .order_by(Customer.current_period_end)
        .limit(batch_size)
        # FOR NO KEY UPDATE, the lock the UPDATE takes anyway: it keeps other closers off
        # the batch but, unlike FOR UPDATE, does not block charges and invoices being
        # inserted for these customers (their foreign keys take KEY SHARE).
        .with_for_update(skip_locked=True, key_share=True)
    )
    if skip:
        claim = claim.where(Customer.id.not_in(skip))
    # One row per group of claimed customers who share rule, zone, creation date and
    # period, with their ids: everything per customer but the id stays in PostgreSQL (a
    # large close has many customers per group, so the per-row work in Python shrinks).
    claimed = claim.cte("claimed")
    shared = (
        claimed.c.billing_period,
        claimed.c.billing_timezone,
        claimed.c.created_local_date,
        claimed.c.current_period_start,
        claimed.c.current_period_end,
    )
    ids: ColumnElement[Any]
    if session.get_bind().dialect.name == "postgresql":
        ids = func.array_agg(claimed.c.id)
    else:
        ids = func.group_concat(claimed.c.id)
    # Instants first: sorting on them mostly avoids comparing text.
    return select(*shared, ids).group_by(*reversed(shared))


def _id_list(ids: list[int] | str) -> list[int]:
    return [int(i) for i in ids.split(",")] if isinstance(ids, str) else ids


ClosedByGroup = dict[tuple[str, str, dt.date], list[int]]
# (customer ids, rule, timezone, period start, period end, what closing it means)
Steps = Sequence[tuple[list[int], str, str, dt.datetime, dt.datetime, Advance]]

# One round trip per batch: advance the claimed customers by one period and record the
# periods they leave (a conflict means another run recorded it). Per customer only its id
# and the number of its group travel; what a group shares (the period being closed, its
# local dates, the next end) is sent once per group and looked up by subscript. Customers
# are read once, by primary key, in the UPDATE; its RETURNING hands the period being
# closed to the INSERT (the new period start is the old end).
_CLOSE_BATCH_POSTGRESQL = text(
    """
    WITH batch AS (
        SELECT b.customer_id,
               g.period_starts[b.n] AS period_start,
               g.start_dates[b.n] AS start_date,
               g.end_dates[b.n] AS end_date,
               g.next_ends[b.n] AS next_end
        FROM unnest(CAST(:customer_ids AS bigint[]), CAST(:group_numbers AS integer[]))
                 AS b(customer_id, n),
             (SELECT CAST(:period_starts AS timestamptz[]) AS period_starts,
                     CAST(:start_dates AS date[]) AS start_dates,
                     CAST(:end_dates AS date[]) AS end_dates,
                     CAST(:next_ends AS timestamptz[]) AS next_ends) AS g
    ), advanced AS (
        UPDATE customers c
        SET current_period_start = c.current_period_end, current_period_end = b.next_end
        FROM batch b
        WHERE c.id = b.customer_id
        RETURNING c.id, b.period_start, c.current_period_start AS period_end, b.start_date,
                  b.end_date, c.billing_period, c.billing_timezone
    ), closed AS (
        INSERT INTO closed_periods (
            customer_id, period_start, period_end, start_date, end_date,
            billing_period, billing_timezone, closed_at, invoice_enqueued_at
        )
        SELECT id, period_start, period_end, start_date, end_date,
               billing_period, billing_timezone, :now, :now
        FROM advanced
        ON CONFLICT (customer_id, period_start) DO NOTHING
        RETURNING id, billing_period, billing_timezone, end_date
    )
    SELECT billing_period, billing_timezone, end_date, array_agg(id) AS ids
    FROM closed
    GROUP BY billing_period, billing_timezone, end_date
    """
)


# Left to itself the planner joins a batch of thousands to `customers` by hashing a
# sequential scan of the whole table: cost that grows with the customer base. A batch is
# always a small part of the table, so the primary-key index is right; JIT compilation
# costs more than it saves on statements this short.
_BATCH_PLAN_POSTGRESQL = text(
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off"
)


def _write_postgresql(
    session: Session, steps: Steps, groups: GroupedPeriods, now: dt.datetime
) -> ClosedByGroup:
    numbers: dict[tuple[str, dt.datetime, Advance], int] = {}
    period_starts, start_dates, end_dates, next_ends = [], [], [], []
    customer_ids, group_numbers = [], []
    for ids, _rule, tz, start, _end, step in steps:
        key = (tz, start, step)
        number = numbers.get(key)
        if number is None:
            period_starts.append(start)
            start_dates.append(groups.local_date(start, tz))
            end_dates.append(step.end_date)
            next_ends.append(step.next_end)
            number = numbers[key] = len(period_starts)  # SQL arrays count from 1
        customer_ids.extend(ids)
        group_numbers.extend([number] * len(ids))
    session.execute(_BATCH_PLAN_POSTGRESQL)
    rows = session.execute(
        _CLOSE_BATCH_POSTGRESQL,
        {
            "customer_ids": _array_literal(customer_ids),
            "group_numbers": _array_literal(group_numbers),
            "period_starts": period_starts,
            "start_dates": start_dates,
            "end_dates": end_dates,
            "next_ends": next_ends,
            "now": now,
        },
    )
    return {(rule, tz, end_date): ids for rule, tz, end_date, ids in rows}


def _array_literal(numbers: list[int]) -> str:
    # PostgreSQL's text form of an integer array: psycopg adapting a list checks every
    # element's type and size, about four times what joining them costs.
    return "{" + ",".join(map(str, numbers)) + "}"


def _write_sqlite(
    session: Session, steps: Steps, groups: GroupedPeriods, now: dt.datetime
) -> ClosedByGroup:
    # The embedded default: same statements, written with the ORM's portable constructs
    # (SQLite has no arrays to unnest); one UPDATE per distinct next boundary.
    records: list[dict[str, Any]] = []
    advancing: dict[dt.datetime, list[int]] = {}
    for ids, rule, tz, start, end, step in steps:
        records.extend(
            {
                "customer_id": customer_id,
                "period_start": start,
                "period_end": end,
                "start_date": groups.local_date(start, tz),
                "end_date": step.end_date,
                "billing_period": rule,
                "billing_timezone": tz,
                "closed_at": now,
                "invoice_enqueued_at": now,
            }
            for customer_id in ids
        )
        advancing.setdefault(step.next_end, []).extend(ids)
    inserted = session.execute(
        sqlite_insert(ClosedPeriod)
        .on_conflict_do_nothing(index_elements=["customer_id", "period_start"])
        .returning(
            ClosedPeriod.id,
            ClosedPeriod.billing_period,
            ClosedPeriod.billing_timezone,
            ClosedPeriod.end_date,
        ),
        records,
    )
    closed: ClosedByGroup = {}
    for closed_id, rule, tz, end_date in inserted:
        closed.setdefault((rule, tz, end_date), []).append(closed_id)
    for next_end, customer_ids in advancing.items():
        session.execute(
            update(Customer)
            .where(Customer.id.in_(customer_ids))
            .values(current_period_start=Customer.current_period_end, current_period_end=next_end)
        )
    return closed


def reconcile(
    session: Session,
    *,
    now: dt.datetime,
    older_than: dt.timedelta,
    batch_size: int,
    invoice_batch_size: int | None = None,
) -> ReconcileSummary:
    """Queue invoice generation again for closed periods that still have no invoice.

    A closed period queued more than `older_than` ago and still not invoiced (its message
    was lost, or the worker generating it died, leaving its invoice in `generating`: a
    period is marked invoiced only in the transaction that issues its invoice) is queued
    again and its `invoice_enqueued_at` moved to `now`, so the next run leaves it alone for
    another `older_than`. The close sets `invoice_enqueued_at` in the transaction that
    closes the period, so it is never null; the range on it walks the partial index of
    uninvoiced periods, oldest first, and costs what is stale, not what is stored.
    """
    _require_aware(now)
    invoice_batch = invoice_batch_size or settings().invoice_batch_size
    cutoff = now - older_than
    summary = ReconcileSummary()
    with BackgroundSender() as sender:
        while True:
            stale = (
                select(ClosedPeriod.id)
                .where(~ClosedPeriod.invoiced, ClosedPeriod.invoice_enqueued_at < cutoff)
                .order_by(ClosedPeriod.invoice_enqueued_at)
                .limit(batch_size)
                .with_for_update(skip_locked=True, key_share=True)  # see _claim_due
                .scalar_subquery()
            )
            ids = session.scalars(
                update(ClosedPeriod)
                .where(ClosedPeriod.id.in_(stale))
                .values(invoice_enqueued_at=now)
                .returning(ClosedPeriod.id)
            ).all()
            if not ids:
                break
            summary.requeued += len(ids)
            summary.invoice_messages += _queue_invoices(session, sender, sorted(ids), invoice_batch)
            sender.wait()
            session.commit()
        session.commit()
    return summary


def _queue_invoices(
    session: Session, sender: BackgroundSender, closed_ids: Sequence[int], chunk: int
) -> int:
    """Queue invoice generation for `closed_ids`, `chunk` per message, after the commit."""
    signatures = []
    for offset in range(0, len(closed_ids), chunk):
        ids = list(closed_ids[offset : offset + chunk])
        # A short argsrepr for Flower and the logs; Celery's own repr of hundreds of ids
        # costs more than sending the message.
        argsrepr = f"[[{ids[0]}, … {len(ids)} closed periods … {ids[-1]}]]"
        signature = app.signature(
            GENERATE_INVOICES, args=[ids], queue=INVOICING_QUEUE, argsrepr=argsrepr
        )
        signatures.append(signature)
    sender.send_after_commit(session, signatures)
    return len(signatures)


def _require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware instant, got {now!r}")


def parse_as_of(value: str | None) -> dt.datetime:
    """The instant to close or reconcile as of: ISO-8601 with an offset (or `Z`), in UTC;
    the current instant if None."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    instant = parse_instant(value)
    if instant is None:
        raise ValueError(
            f"{value!r} is not an ISO-8601 instant with a UTC offset, such as "
            "'2026-03-08T05:00:00Z' (a time without an offset would depend on the machine)"
        )
    return instant


# --- Celery tasks: thin adapters --------------------------------------------------------


@app.task(name="billing.periods.close_due", base=BillingTask, bind=True)
def close_due_task(self: BillingTask, as_of: str | None = None) -> dict[str, int]:
    """Close every period that has ended by `as_of` (default: now)."""
    now = parse_as_of(as_of)
    with unit_of_work() as session:
        summary = close_due(session, now=now, batch_size=settings().close_batch_size)
    return summary.as_dict()


@app.task(name="billing.periods.reconcile", base=BillingTask, bind=True)
def reconcile_task(
    self: BillingTask, as_of: str | None = None, older_than: int | None = None
) -> dict[str, int]:
    """Re-queue invoice generation that has not happened `older_than` seconds after queuing."""
    conf = settings()
    seconds = conf.reconcile_after if older_than is None else older_than
    with unit_of_work() as session:
        summary = reconcile(
            session,
            now=parse_as_of(as_of),
            older_than=dt.timedelta(seconds=seconds),
            batch_size=conf.close_batch_size,
        )
    return summary.as_dict()
