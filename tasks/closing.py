"""Closing billing periods, and the reconcile step that heals lost invoice messages.

`close_due` finds every active customer whose current period has ended
(`current_period_end <= now`), records every period of it that has ended by `now` (each
missed period its own row, in order), moves the customer to the first period that has not
ended and, after each batch commits, queues invoice generation for what it closed (sent by
a background thread while the next batch is written; see `BackgroundSender`), a customer's
periods together and in order. A batch records at most `period_limit` periods: a customer
behind by more (or a batch of many far-behind customers) is claimed again by a later batch
of the same run and goes on from where it stopped.

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
statement. Only one batch is ever held in memory, and it is bounded by `period_limit`.
"""

from __future__ import annotations

import datetime as dt
import logging
from bisect import bisect_left
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, func, or_, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models import ClosedPeriod, Customer, CustomerStatus
from models.closed_period import MAX_INVOICE_ATTEMPTS
from models.closing_rules import CatchUp, GroupedPeriods, anchor_key
from models.validation import Problem, parse_instant
from tasks.base import BackgroundSender, BillingTask, WorkFailed, database_clock, one_line
from tasks.period_changes import close_switching_periods
from worker.broker_queues import queued_closed_period_ids
from worker.celery_app import app
from worker.config import settings
from worker.db import unit_of_work

logger = logging.getLogger(__name__)

GENERATE_INVOICES = "billing.invoices.generate"
INVOICING_QUEUE = "invoicing"

# (rule, timezone, local end date) -> closed periods, for the operator's report.
GroupCounts = Counter[tuple[str, str, dt.date]]

# Closed periods one close transaction records at most (or one per claimed customer, if
# the batch is larger): a customer 20,000 daily periods behind closes in one transaction,
# and a batch of such customers shares the budget and comes back for the rest.
PERIOD_LIMIT = 50_000


class CloseStatus(StrEnum):
    DONE = "done"
    SOME_FAILED = "some_failed"  # some customers could not be closed (see `errors`)
    NOT_SENT = "not_sent"  # closed, but the broker refused the invoice messages


@dataclass
class _Tally:
    closed: int = 0
    already_closed: int = 0
    advanced: int = 0
    batches: int = 0
    invoice_messages: int = 0
    by_boundary: GroupCounts = field(default_factory=Counter)


@dataclass(frozen=True)
class CloseSummary:
    closed: int = 0  # closed-period rows this run created
    already_closed: int = 0  # claimed periods another run had recorded (conflict = done)
    advanced: int = 0  # periods customers moved past (closed here, or already by another run)
    batches: int = 0
    invoice_messages: int = 0
    period_computations: int = 0  # distinct groups the period engine was asked about
    unclosable: tuple[Problem, ...] = ()  # customers the engine refuses (logged, skipped)
    # Periods closed whose invoice messages the broker did not take (reconcile sends them).
    unsent: int = 0
    send_error: str | None = None
    by_boundary: GroupCounts = field(default_factory=Counter)

    @property
    def status(self) -> CloseStatus:
        if self.unsent or self.send_error:
            return CloseStatus.NOT_SENT
        return CloseStatus.SOME_FAILED if self.unclosable else CloseStatus.DONE

    def as_json(self) -> dict[str, Any]:
        """The JSON-safe summary a task returns."""
        errors = [p.as_dict() for p in self.unclosable]
        if self.send_error:
            errors.append(
                Problem(
                    None,
                    "broker_unavailable",
                    f"{self.unsent} closed period(s) have no invoice message yet: "
                    f"{self.send_error}; reconcile queues them at its next run",
                ).as_dict()
            )
        return {
            "status": self.status.value,
            "errors": errors,
            "closed": self.closed,
            "already_closed": self.already_closed,
            "advanced": self.advanced,
            "batches": self.batches,
            "invoice_messages": self.invoice_messages,
            "period_computations": self.period_computations,
            "unclosable": len(self.unclosable),
            "unsent": self.unsent,
        }


@dataclass(frozen=True)
class ReconcileSummary:
    requeued: int = 0  # closed periods whose invoice generation was queued again
    invoice_messages: int = 0
    still_queued: int = 0  # stale, but their message is still in the broker: not re-sent

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "done",
            "errors": [],
            "requeued": self.requeued,
            "invoice_messages": self.invoice_messages,
            "still_queued": self.still_queued,
        }


def close_due(
    session: Session,
    *,
    now: dt.datetime,
    batch_size: int,
    invoice_batch_size: int | None = None,
    period_limit: int = PERIOD_LIMIT,
) -> CloseSummary:
    """Close every period that has ended at `now`, committing one batch at a time (a crash
    loses at most the batch in flight); invoice messages go out after each commit."""
    _require_aware(now)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if period_limit < 1:
        raise ValueError(f"period_limit must be at least 1, got {period_limit}")
    invoice_batch = invoice_batch_size or settings().invoice_batch_size
    groups = GroupedPeriods()
    tally = _Tally()
    # A customer whose stored period the engine refuses (data no intake would write) is
    # logged and left alone for the rest of the run, so it cannot stop everyone else's close.
    unclosable: dict[int, str] = {}
    # Closed periods committed whose messages are not yet known to be sent.
    unconfirmed: list[int] = []
    committed = _Tally()  # the tally as of the last commit
    sender = BackgroundSender()
    try:
        with sender:
            while True:
                _plan_batch(session)
                claimed = session.execute(
                    _claim_due(session, now, batch_size, set(unclosable))
                ).all()
                if claimed:
                    written = _close_batch(
                        session, claimed, groups, now, unclosable, tally, period_limit
                    )
                    closed_ids = written.ids
                    chunks = _customer_chunks(written.ids, written.customers, invoice_batch)
                else:
                    # Customers whose period ends where a rule or zone change waits are
                    # closed one by one (tasks.period_changes); they may then be due again.
                    switched, closed_ids = close_switching_periods(
                        session, now=now, limit=batch_size
                    )
                    if not switched:
                        break
                    tally.batches += 1
                    tally.advanced += switched
                    tally.closed += len(closed_ids)
                    tally.already_closed += switched - len(closed_ids)
                    chunks = _chunks(closed_ids, invoice_batch)
                tally.invoice_messages += _queue_invoices(session, sender, chunks)
                # The previous batch's messages went out while this batch was being written.
                sender.wait()
                session.commit()
                unconfirmed = closed_ids
                committed = replace(tally, by_boundary=Counter(tally.by_boundary))
            session.commit()  # release the (empty) claim transaction
            sender.wait()
            unconfirmed = []
        send_error = None
    except Exception as exc:
        if exc is not sender.error:
            raise
        # The broker refused the messages: what this run committed stays closed, and the
        # periods whose messages may be lost are marked never queued, for reconcile.
        session.rollback()
        tally = committed  # the batch in flight was rolled back
        if unconfirmed:
            session.execute(
                update(ClosedPeriod)
                .where(ClosedPeriod.id.in_(unconfirmed))
                .values(invoice_enqueued_at=None)
            )
            session.commit()
        send_error = one_line(exc)
        logger.error(
            "the broker refused invoice messages (%s): %s closed period(s) left for reconcile",
            send_error,
            len(unconfirmed),
        )
    return CloseSummary(
        closed=tally.closed,
        already_closed=tally.already_closed,
        advanced=tally.advanced,
        batches=tally.batches,
        invoice_messages=tally.invoice_messages,
        period_computations=groups.computations,
        unclosable=tuple(
            Problem("customer_ids", "unclosable", f"customer {cid} cannot be closed: {why}")
            for cid, why in sorted(unclosable.items())
        ),
        unsent=len(unconfirmed) if send_error else 0,
        send_error=send_error,
        by_boundary=tally.by_boundary,
    )


def _close_batch(
    session: Session,
    claimed: Sequence[Any],
    groups: GroupedPeriods,
    now: dt.datetime,
    unclosable: dict[int, str],
    tally: _Tally,
    period_limit: int,
) -> _Written:
    """Close one claimed batch (not committed): the closed periods it created."""
    write = _write_postgresql if session.get_bind().dialect.name == "postgresql" else _write_sqlite
    rows = [(row, _id_list(row[-1])) for row in claimed]
    # The claim comes oldest period end first, so the customers furthest behind take what
    # the budget leaves after one period for each customer still to come.
    waiting = sum(len(ids) for _row, ids in rows)
    budget = period_limit
    steps = []
    for (rule, tz, created, start, end, pending_from, _ids), ids in rows:
        waiting -= len(ids)
        limit = max(1, (budget - waiting) // len(ids))
        try:
            catch_up = groups.catch_up(
                rule, created, tz, start, end, until=now, stop=pending_from, limit=limit
            )
        except ValueError as exc:
            for customer_id in ids:
                logger.error("customer %s cannot be closed: %s", customer_id, exc)
                unclosable[customer_id] = str(exc)
            continue
        steps.append((ids, rule, tz, anchor_key(rule, created), catch_up))
        budget -= len(ids) * len(catch_up.periods)
    written = write(session, steps, now) if steps else _Written([], [], {})
    advanced = sum(len(ids) * len(catch_up.periods) for ids, *_, catch_up in steps)
    tally.batches += 1
    tally.advanced += advanced
    tally.closed += len(written.ids)
    tally.already_closed += advanced - len(written.ids)
    tally.by_boundary.update(written.counts)
    return written


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
            Customer.pending_from,
        )
        .where(
            Customer.status == CustomerStatus.ACTIVE.value,
            Customer.current_period_end <= now,
            # A period ending where a rule or zone change waits: see close_switching_periods.
            or_(
                Customer.pending_from.is_(None),
                Customer.current_period_end != Customer.pending_from,
            ),
        )
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
        claimed.c.pending_from,
    )
    ids: ColumnElement[Any]
    if session.get_bind().dialect.name == "postgresql":
        ids = func.array_agg(claimed.c.id)
    else:
        ids = func.group_concat(claimed.c.id)
    # Instants first: sorting on them mostly avoids comparing text. Oldest end first: see
    # _close_batch.
    return select(*shared, ids).group_by(*reversed(shared)).order_by(claimed.c.current_period_end)


def _id_list(ids: list[int] | str) -> list[int]:
    return [int(i) for i in ids.split(",")] if isinstance(ids, str) else ids


class _Written(NamedTuple):
    """What a batch recorded: closed-period ids ordered by customer then period start, the
    customer of each, and the count per (rule, timezone, local end date)."""

    ids: list[int]
    customers: list[int]
    counts: dict[tuple[str, str, dt.date], int]


# (customer ids, rule, timezone, anchor key, the periods they close and where they move)
Steps = Sequence[tuple[list[int], str, str, int, CatchUp]]

# One round trip per batch: move the claimed customers to their next open period and
# record every period they leave (a conflict means another run recorded it). Per customer
# only its id and the number of its group travel; what a group shares (where it moves,
# the range of its periods in the period arrays) is sent once per group, and each period
# once, all looked up by subscript. Customers are read once, by primary key, in the
# UPDATE; its RETURNING hands the rule and zone to the INSERT, which writes a customer's
# periods in order (generate_series over its group's range).
_CLOSE_BATCH_POSTGRESQL = text(
    """
    WITH g AS (
        SELECT CAST(:next_starts AS timestamptz[]) AS next_starts,
               CAST(:next_ends AS timestamptz[]) AS next_ends,
               CAST(:firsts AS integer[]) AS firsts,
               CAST(:lasts AS integer[]) AS lasts,
               CAST(:period_starts AS timestamptz[]) AS period_starts,
               CAST(:period_ends AS timestamptz[]) AS period_ends,
               CAST(:start_dates AS date[]) AS start_dates,
               CAST(:end_dates AS date[]) AS end_dates
    ), batch AS (
        SELECT b.customer_id, b.n, g.next_starts[b.n] AS next_start, g.next_ends[b.n] AS next_end
        FROM unnest(CAST(:customer_ids AS bigint[]), CAST(:group_numbers AS integer[]))
                 AS b(customer_id, n),
             g
    ), advanced AS (
        UPDATE customers c
        SET current_period_start = b.next_start, current_period_end = b.next_end
        FROM batch b
        WHERE c.id = b.customer_id
        RETURNING c.id, b.n, c.billing_period, c.billing_timezone
    ), closed AS (
        INSERT INTO closed_periods (
            customer_id, period_start, period_end, start_date, end_date,
            billing_period, billing_timezone, closed_at, invoice_enqueued_at
        )
        SELECT a.id, g.period_starts[i], g.period_ends[i], g.start_dates[i], g.end_dates[i],
               a.billing_period, a.billing_timezone, :now, :now
        FROM advanced a, g, generate_series(g.firsts[a.n], g.lasts[a.n]) AS i
        ON CONFLICT (customer_id, period_start) DO NOTHING
        RETURNING id, customer_id, period_start, billing_period, billing_timezone, end_date
    ), counted AS (
        SELECT billing_period, billing_timezone, end_date, count(*) AS closed
        FROM closed
        GROUP BY billing_period, billing_timezone, end_date
    )
    SELECT (SELECT array_agg(id ORDER BY customer_id, period_start) FROM closed),
           (SELECT array_agg(customer_id ORDER BY customer_id, period_start) FROM closed),
           array_agg(billing_period), array_agg(billing_timezone), array_agg(end_date),
           array_agg(closed)
    FROM counted
    """
)


# Cost must follow the due work, not the customer base, whatever the statistics say (a
# small table, a plan cached while the table was small, a batch as large as what is due):
# - the claim walks `ix_customers_due` in end order and stops at its limit; a sequential
#   or bitmap scan reads every due customer (or every customer) to sort them, each batch;
# - left to itself the planner joins a batch of thousands to `customers` by hashing a
#   sequential scan of the whole table; a batch is always a small part of the table, so
#   the primary-key index is right.
# JIT compilation costs more than it saves on statements this short. Set per transaction
# (SET LOCAL), before the claim.
_BATCH_PLAN_POSTGRESQL = text(
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off"
)


def _plan_batch(session: Session) -> None:
    """The planner settings of a close transaction (PostgreSQL), before its claim."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_BATCH_PLAN_POSTGRESQL)


def _write_postgresql(session: Session, steps: Steps, now: dt.datetime) -> _Written:
    numbers: dict[tuple[str, str, int, dt.datetime, int], int] = {}
    next_starts: list[dt.datetime] = []
    next_ends: list[dt.datetime] = []
    period_starts: list[dt.datetime] = []
    period_ends: list[dt.datetime] = []
    start_dates: list[dt.date] = []
    end_dates: list[dt.date] = []
    firsts: list[int] = []
    lasts: list[int] = []
    customer_ids: list[int] = []
    group_numbers: list[int] = []
    for ids, rule, tz, anchor, catch_up in steps:
        # Groups that differ only in creation date but share the anchor walk the same
        # periods: their periods are sent once.
        periods = catch_up.periods
        key = (rule, tz, anchor, periods[0].start, len(periods))
        number = numbers.get(key)
        if number is None:
            firsts.append(len(period_starts) + 1)  # SQL arrays count from 1
            for period in periods:
                period_starts.append(period.start)
                period_ends.append(period.end)
                start_dates.append(period.start_date)
                end_dates.append(period.end_date)
            lasts.append(len(period_starts))
            next_starts.append(catch_up.next_start)
            next_ends.append(catch_up.next_end)
            number = numbers[key] = len(firsts)
        customer_ids.extend(ids)
        group_numbers.extend([number] * len(ids))
    ids, customers, rules, tzs, dates, counts = session.execute(
        _CLOSE_BATCH_POSTGRESQL,
        {
            "customer_ids": _array_literal(customer_ids),
            "group_numbers": _array_literal(group_numbers),
            "next_starts": next_starts,
            "next_ends": next_ends,
            "firsts": _array_literal(firsts),
            "lasts": _array_literal(lasts),
            "period_starts": period_starts,
            "period_ends": period_ends,
            "start_dates": start_dates,
            "end_dates": end_dates,
            "now": now,
        },
    ).one()
    if ids is None:  # every period had been recorded by another run
        return _Written([], [], {})
    return _Written(
        ids, customers, dict(zip(zip(rules, tzs, dates, strict=True), counts, strict=True))
    )


def _array_literal(numbers: list[int]) -> str:
    # PostgreSQL's text form of an integer array: psycopg adapting a list checks every
    # element's type and size, about four times what joining them costs.
    return "{" + ",".join(map(str, numbers)) + "}"


def _write_sqlite(session: Session, steps: Steps, now: dt.datetime) -> _Written:
    # The embedded default: same statements, written with the ORM's portable constructs
    # (SQLite has no arrays to unnest); one UPDATE per distinct next period.
    records: list[dict[str, Any]] = []
    moving: dict[tuple[dt.datetime, dt.datetime], list[int]] = {}
    for ids, rule, tz, _anchor, catch_up in steps:
        records.extend(
            {
                "customer_id": customer_id,
                "period_start": period.start,
                "period_end": period.end,
                "start_date": period.start_date,
                "end_date": period.end_date,
                "billing_period": rule,
                "billing_timezone": tz,
                "closed_at": now,
                "invoice_enqueued_at": now,
            }
            for customer_id in ids
            for period in catch_up.periods
        )
        moving.setdefault((catch_up.next_start, catch_up.next_end), []).extend(ids)
    inserted = list(
        session.execute(
            sqlite_insert(ClosedPeriod)
            .on_conflict_do_nothing(index_elements=["customer_id", "period_start"])
            .returning(
                ClosedPeriod.id,
                ClosedPeriod.customer_id,
                ClosedPeriod.period_start,
                ClosedPeriod.billing_period,
                ClosedPeriod.billing_timezone,
                ClosedPeriod.end_date,
            ),
            records,
        )
    )
    inserted.sort(key=lambda row: (row.customer_id, row.period_start))
    counts = Counter((row.billing_period, row.billing_timezone, row.end_date) for row in inserted)
    for (next_start, next_end), customer_ids in moving.items():
        session.execute(
            update(Customer)
            .where(Customer.id.in_(customer_ids))
            .values(current_period_start=next_start, current_period_end=next_end)
        )
    return _Written(
        [row.id for row in inserted], [row.customer_id for row in inserted], dict(counts)
    )


def reconcile(
    session: Session,
    *,
    now: dt.datetime,
    older_than: dt.timedelta,
    batch_size: int,
    invoice_batch_size: int | None = None,
    still_queued: Collection[int] = frozenset(),
) -> ReconcileSummary:
    """Queue invoice generation again for closed periods whose invoice message is lost.

    A closed period still not invoiced `older_than` after it was queued (its message was
    lost, or the worker generating it died, leaving its invoice in `generating`: a period
    is marked invoiced only in the transaction that issues its invoice), or never queued at
    all (the close could not send it: `invoice_enqueued_at` is null), is queued again,
    unless its id is in `still_queued` (the ids carried by the invoice messages still in
    the broker, waiting or being worked on): when invoicing is merely behind, nothing is
    sent twice. Either way its `invoice_enqueued_at` moves to `now`, so the next run leaves
    it alone for another `older_than`. A period whose generation failed
    `MAX_INVOICE_ATTEMPTS` times is left to an operator. The query walks the partial index
    of uninvoiced periods, oldest first, and costs what is stale, not what is stored.
    """
    _require_aware(now)
    invoice_batch = invoice_batch_size or settings().invoice_batch_size
    cutoff = now - older_than
    requeued = messages = skipped = 0
    with BackgroundSender() as sender:
        while True:
            ids = session.scalars(
                select(ClosedPeriod.id)
                .where(
                    ~ClosedPeriod.invoiced,
                    or_(
                        ClosedPeriod.invoice_enqueued_at.is_(None),
                        ClosedPeriod.invoice_enqueued_at < cutoff,
                    ),
                    ClosedPeriod.invoice_attempts < MAX_INVOICE_ATTEMPTS,
                )
                .order_by(ClosedPeriod.invoice_enqueued_at)
                .limit(batch_size)
                .with_for_update(skip_locked=True, key_share=True)  # see _claim_due
            ).all()
            if not ids:
                break
            session.execute(
                update(ClosedPeriod).where(ClosedPeriod.id.in_(ids)).values(invoice_enqueued_at=now)
            )
            lost = sorted(i for i in ids if i not in still_queued)
            requeued += len(lost)
            skipped += len(ids) - len(lost)
            messages += _queue_invoices(session, sender, _chunks(lost, invoice_batch))
            sender.wait()
            session.commit()
        session.commit()
    return ReconcileSummary(requeued=requeued, invoice_messages=messages, still_queued=skipped)


def _chunks(closed_ids: Sequence[int], chunk: int) -> list[Sequence[int]]:
    return [closed_ids[offset : offset + chunk] for offset in range(0, len(closed_ids), chunk)]


def _customer_chunks(
    closed_ids: Sequence[int], customers: Sequence[int], chunk: int
) -> list[Sequence[int]]:
    """`closed_ids` (ordered by customer, then period) in pieces of at most `chunk`, cut
    between customers: a customer's periods travel together, in order, unless they alone
    are more than `chunk` (then in consecutive pieces). Invoicing issues a customer's
    earlier periods first anyway; one message saves it waiting on another."""
    pieces = []
    offset = 0
    while offset < len(closed_ids):
        cut = offset + chunk
        if cut < len(closed_ids) and customers[cut - 1] == customers[cut]:
            # The cut splits a customer: end the piece before that customer's first period,
            # unless the piece would then be empty.
            first = bisect_left(customers, customers[cut], offset, cut)
            cut = first if first > offset else cut
        pieces.append(closed_ids[offset:cut])
        offset = cut
    return pieces


def _queue_invoices(
    session: Session, sender: BackgroundSender, chunks: Sequence[Sequence[int]]
) -> int:
    """Queue invoice generation, one message per chunk of closed-period ids, after the
    commit."""
    signatures = []
    for chunk in chunks:
        ids = list(chunk)
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


def parse_as_of(value: str) -> dt.datetime:
    """The instant to close or reconcile as of: ISO-8601 with an offset (or `Z`), in UTC."""
    instant = parse_instant(value)
    if instant is None:
        raise ValueError(
            f"{value!r} is not an ISO-8601 instant with a UTC offset, such as "
            "'2026-03-08T05:00:00Z' (a time without an offset would depend on the machine)"
        )
    return instant


# --- Celery tasks: thin adapters --------------------------------------------------------


@app.task(name="billing.periods.close_due", base=BillingTask, bind=True)
def close_due_task(self: BillingTask, as_of: str | None = None) -> dict[str, Any]:
    """Close every period that has ended by `as_of` (default: now, by the database's clock).

    Customers that could not be closed, or invoice messages the broker refused, fail the
    task (FAILURE in Flower) once everything else is committed."""
    with unit_of_work() as session:
        now = database_clock(session) if as_of is None else parse_as_of(as_of)
        summary = close_due(session, now=now, batch_size=settings().close_batch_size)
    if summary.status is not CloseStatus.DONE:
        raise WorkFailed(summary.as_json())
    return summary.as_json()


@app.task(name="billing.periods.reconcile", base=BillingTask, bind=True)
def reconcile_task(
    self: BillingTask, as_of: str | None = None, older_than: int | None = None
) -> dict[str, Any]:
    """Re-queue invoice generation that has not happened `older_than` seconds after queuing
    and whose message is no longer in the broker."""
    conf = settings()
    seconds = conf.reconcile_after if older_than is None else older_than
    queued = queued_closed_period_ids(conf, queue=INVOICING_QUEUE, task=GENERATE_INVOICES)
    with unit_of_work() as session:
        summary = reconcile(
            session,
            now=database_clock(session) if as_of is None else parse_as_of(as_of),
            older_than=dt.timedelta(seconds=seconds),
            batch_size=conf.close_batch_size,
            still_queued=queued or frozenset(),
        )
    return summary.as_json()
