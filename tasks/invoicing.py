"""Invoice generation: one invoice per closed period, numbered without gaps per reseller.

`generate_invoices(session, closed_period_ids, now=…)` runs in the caller's transaction in
two phases, each set-based: a statement does the whole batch, not one period.

1. For the whole batch in one savepoint: one `INSERT invoices … SELECT … ON CONFLICT
   (closed_period_id) DO NOTHING RETURNING` claims every invoice (a conflict with an
   issued invoice means "already invoiced"; a concurrent generator of the same period
   makes us wait for it, then skip); recurring fees are billed for the customers that have
   any subscription (`tasks.fees`); one `UPDATE charges … FROM invoices` attaches each
   customer's uninvoiced charges of `[period start, period end)` to its invoice (the row
   locks are the claim: a charge another generator took fails the re-checked `invoice_id
   IS NULL`), one `INSERT … SELECT` writes their lines, one `SELECT … GROUP BY` sums each
   invoice's lines, and the totals are computed. A period's own bad data (an unknown zone,
   an empty period) is found before anything is written; if the batch fails anyway, it is
   redone one period per savepoint, so only the bad period is reported and skipped.
2. At the end, per reseller in id order (so concurrent batches cannot deadlock): one
   `UPDATE resellers SET last_invoice_number = last_invoice_number + k RETURNING …`
   hands out k consecutive numbers; one statement issues the invoices (on PostgreSQL
   `UPDATE … FROM json_to_recordset`, one parameter), one writes their outbox rows, one
   marks the closed periods invoiced. The reseller row stays locked until commit, which
   serialises concurrent issuers; a rollback gives the numbers back, so numbers have no
   gaps. Holding the lock only for this short last step keeps concurrent generators from
   queueing behind each other's whole batch.

On PostgreSQL every id list is one array parameter (`worker.db.ids_in`) and every
statement is planned for its batch (`worker.db.plan_each_batch`).

Late charges: a charge recorded after its period's invoice was issued is not lost; it goes
on the customer's next invoice generated, as a line marked "late charge from <date>". A
charge waits for its own period's invoice while that period is closed but not yet invoiced,
so out-of-order generation (catch-up batches on several workers) never moves a charge to
the wrong invoice.

Notifications: each issued invoice writes one outbox row per address of the class's
notification list and the customer's invoice address (unique per invoice and recipient),
without its text: `tasks/notifications.py` composes the text from the stored invoice and
renders the documents when it mails them, never while invoicing.

Settlement: once a batch is issued, `tasks.settlement.settle_issued` pays its prepaid
invoices from funds and applies any postpaid customer's credit (see that module).

Tax is computed on the subtotal (see `models.invoicing_rules`). The issue date is the local
date of `now` in the period's billing timezone; due date = issue date + the class's grace
period.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from itertools import groupby
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from models import (
    Charge,
    ClosedPeriod,
    Customer,
    CustomerClass,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Notification,
    NotificationStatus,
    Reseller,
)
from models.base import UTCDateTime
from models.billing import LIVE_INVOICE
from models.invoice_view import Address, Party, document_locale, issue_snapshot
from models.invoicing_rules import (
    DEFAULT_LOCALE,
    Totals,
    covered_dates,
    due_date,
    format_long_date,
    invoice_totals,
    local_date,
)
from models.validation import Problem
from tasks.base import BillingTask, WorkFailed, database_clock, is_transient
from tasks.fees import ClosedPeriodFees, bill_fees_batch
from tasks.notifications import queue_mailing_after_commit
from tasks.settlement import settle_issued
from worker.celery_app import app
from worker.config import settings
from worker.db import dialect_insert, ids_in, plan_each_batch, unit_of_work


@dataclass
class _Period:
    """What generation needs about one closed period, read once for the whole batch."""

    closed_period_id: int
    invoiced: bool
    period_start: dt.datetime
    period_end: dt.datetime
    start_date: dt.date
    end_date: dt.date
    timezone: str
    customer_id: int
    customer_name: str
    currency: str
    reseller_id: int
    reseller_name: str
    tax_name: str
    tax_rate: Decimal
    grace_period_days: int
    template_name: str
    notification_emails: list[str]
    invoice_email: str | None
    snapshot: dict[str, Any]  # parties, locale, format: see models.invoice_view.issue_snapshot
    fees: ClosedPeriodFees


@dataclass
class _Prepared:
    period: _Period
    invoice_id: int
    totals: Totals
    issue_date: dt.date
    due_date: dt.date


def _load_periods(session: Session, ids: Sequence[int]) -> dict[int, _Period]:
    rows = session.execute(
        select(
            ClosedPeriod.id.label("closed_period_id"),
            ClosedPeriod.invoiced,
            ClosedPeriod.period_start,
            ClosedPeriod.period_end,
            ClosedPeriod.start_date,
            ClosedPeriod.end_date,
            ClosedPeriod.billing_timezone,
            Customer.id.label("customer_id"),
            Customer.name.label("customer_name"),
            Customer.currency,
            Customer.billing_address,
            Customer.tax_id.label("customer_tax_id"),
            Customer.invoice_email,
            Customer.locale.label("customer_locale"),
            Reseller.id.label("reseller_id"),
            CustomerClass.tax_name,
            CustomerClass.tax_rate,
            CustomerClass.grace_period_days,
            CustomerClass.invoice_template,
            CustomerClass.notification_emails,
            CustomerClass.einvoice_format,
            CustomerClass.locale.label("class_locale"),
            ClosedPeriod.billing_period,
            Customer.created_local_date,
        )
        .join(Customer, Customer.id == ClosedPeriod.customer_id)
        .join(Reseller, Reseller.id == Customer.reseller_id)
        .join(CustomerClass, CustomerClass.id == Customer.customer_class_id)
        .where(ids_in(session, ClosedPeriod.id, ids))
    ).all()
    sellers = _sellers(session, {row.reseller_id for row in rows})
    periods = {}
    for row in rows:
        seller, reseller_locale = sellers[row.reseller_id]
        periods[row.closed_period_id] = _Period(
            closed_period_id=row.closed_period_id,
            invoiced=row.invoiced,
            period_start=row.period_start,
            period_end=row.period_end,
            start_date=row.start_date,
            end_date=row.end_date,
            timezone=row.billing_timezone,
            customer_id=row.customer_id,
            customer_name=row.customer_name,
            currency=row.currency,
            reseller_id=row.reseller_id,
            reseller_name=seller.name,
            tax_name=row.tax_name,
            tax_rate=row.tax_rate,
            grace_period_days=row.grace_period_days,
            template_name=row.invoice_template,
            notification_emails=list(row.notification_emails or []),
            invoice_email=row.invoice_email,
            snapshot=issue_snapshot(
                seller,
                Party(
                    name=row.customer_name,
                    address=Address.from_json(row.billing_address),
                    tax_id=row.customer_tax_id or "",
                    email=row.invoice_email or "",
                ),
                locale=document_locale(
                    row.customer_locale, row.class_locale, reseller_locale, DEFAULT_LOCALE
                ),
                einvoice=row.einvoice_format,
                template=row.invoice_template,
            ),
            fees=ClosedPeriodFees(
                closed_period_id=row.closed_period_id,
                customer_id=row.customer_id,
                currency=row.currency,
                anchor=row.created_local_date,
                billing_period=row.billing_period,
                timezone=row.billing_timezone,
                period_start=row.period_start,
                period_end=row.period_end,
                start_date=row.start_date,
                end_date=row.end_date,
            ),
        )
    return periods


def _sellers(session: Session, reseller_ids: set[int]) -> dict[int, tuple[Party, str]]:
    """Each reseller as the seller on its invoices, with its default locale."""
    return {
        reseller.id: (
            Party(
                name=reseller.legal_name or reseller.display_name or reseller.name,
                address=Address.from_json(reseller.address),
                tax_id=reseller.tax_id,
                email=reseller.email,
                payment_text=reseller.payment_text,
                iban=reseller.iban,
                bic=reseller.bic,
            ),
            reseller.locale,
        )
        for reseller in session.scalars(select(Reseller).where(Reseller.id.in_(reseller_ids)))
    }


def _claim_invoices(
    session: Session, periods: list[_Period]
) -> tuple[dict[int, int], dict[int, int], list[int]]:
    """Claim the batch's invoices in one statement: `INSERT … SELECT … ON CONFLICT
    (closed_period_id) DO NOTHING RETURNING`. A conflict with a live invoice means another
    generator got there first: it made us wait for its outcome, and its invoice is either
    issued (the period is already invoiced) or still `generating` (left by an attempt that
    committed before issuing; we resume it, locked).

    Returns (created: closed period id -> invoice id, resumed: the same, already issued)."""
    ids = [period.closed_period_id for period in periods]
    postgresql = session.get_bind().dialect.name == "postgresql"
    day_before = (
        ClosedPeriod.end_date - 1 if postgresql else func.date(ClosedPeriod.end_date, "-1 day")
    )
    source = (
        select(
            ClosedPeriod.id,
            ClosedPeriod.customer_id,
            Customer.reseller_id,
            literal(InvoiceStatus.GENERATING.value),
            Customer.currency,
            CustomerClass.tax_name,
            CustomerClass.tax_rate,
            literal(0),
            literal(0),
            literal(0),
            ClosedPeriod.period_start,
            ClosedPeriod.period_end,
            ClosedPeriod.start_date,
            day_before,
        )
        .join(Customer, Customer.id == ClosedPeriod.customer_id)
        .join(CustomerClass, CustomerClass.id == Customer.customer_class_id)
        .where(ids_in(session, ClosedPeriod.id, ids))
        .order_by(ClosedPeriod.id)  # the order concurrent generators wait on each other in
    )
    columns = [
        "closed_period_id",
        "customer_id",
        "reseller_id",
        "status",
        "currency",
        "tax_name",
        "tax_rate",
        "subtotal",
        "tax",
        "total",
        "period_start",
        "period_end",
        "covered_from",
        "covered_to",
    ]
    created = {
        row.closed_period_id: row.id
        for row in session.execute(
            dialect_insert(session)(Invoice)
            .from_select(columns, source)
            .on_conflict_do_nothing(index_elements=["closed_period_id"], index_where=LIVE_INVOICE)
            .returning(Invoice.id, Invoice.closed_period_id)
        )
    }
    resumed: dict[int, int] = {}
    already: list[int] = []
    others = [i for i in ids if i not in created]
    if others:
        for row in session.execute(
            select(Invoice.id, Invoice.closed_period_id, Invoice.status)
            .where(ids_in(session, Invoice.closed_period_id, others), LIVE_INVOICE)
            .order_by(Invoice.closed_period_id)
            .with_for_update()
        ):
            if row.status == InvoiceStatus.ISSUED:
                already.append(row.closed_period_id)
            else:
                resumed[row.closed_period_id] = row.id
    return created, resumed, already


def _take_late_charges(session: Session, invoices: dict[int, _Period]) -> None:
    """Late charges (module doc) onto each customer's first invoice of the batch: the
    customer's uninvoiced charges from before that period whose own period is not waiting
    for its invoice. Rare, so their lines (which name the day) are written here."""
    first: dict[int, int] = {}  # customer id -> its first invoice of the batch
    for invoice_id, period in sorted(invoices.items(), key=lambda item: item[1].period_start):
        first.setdefault(period.customer_id, invoice_id)
    # A period whose invoice was voided waits for its reissue (tasks.corrections) like
    # an uninvoiced one: no live invoice.
    awaiting_reissue = ~exists().where(
        Invoice.closed_period_id == ClosedPeriod.id, Invoice.status != InvoiceStatus.VOID
    )
    own_period_pending = exists().where(
        ClosedPeriod.customer_id == Charge.customer_id,
        ClosedPeriod.period_start <= Charge.occurred_at,
        ClosedPeriod.period_end > Charge.occurred_at,
        or_(~ClosedPeriod.invoiced, awaiting_reissue),
    )
    # One statement claims and locks: UPDATE takes the row locks, and a row another
    # generator claimed meanwhile fails the re-checked `invoice_id IS NULL` and is skipped.
    target = aliased(Invoice)
    claimed = session.execute(
        update(Charge)
        .where(
            ids_in(session, target.id, first.values()),
            Charge.customer_id == target.customer_id,
            Charge.invoice_id.is_(None),
            Charge.occurred_at < target.period_start,
            ~own_period_pending,
        )
        .values(invoice_id=target.id)
        .returning(
            Charge.id, Charge.invoice_id, Charge.description, Charge.amount, Charge.occurred_at
        )
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return
    session.execute(
        dialect_insert(session)(InvoiceLine),
        [
            {
                "invoice_id": charge.invoice_id,
                "charge_id": charge.id,
                "description": _late_description(charge, invoices[charge.invoice_id].timezone),
                "amount": charge.amount,
                "occurred_at": charge.occurred_at,
            }
            for charge in sorted(claimed, key=lambda c: (c.occurred_at, c.id))
        ],
    )


def _late_description(charge: Any, timezone: str) -> str:
    day = format_long_date(local_date(charge.occurred_at, timezone))
    return f"{charge.description} (late charge from {day})"


def _take_charges(session: Session, invoices: dict[int, _Period]) -> None:
    """Attach every invoice's uninvoiced charges of its period, and the late ones, and
    write their lines: three statements for the whole batch, whatever its size."""
    _take_late_charges(session, invoices)
    ids = list(invoices)
    target = aliased(Invoice)
    session.execute(
        update(Charge)
        .where(
            ids_in(session, target.id, ids),
            Charge.customer_id == target.customer_id,
            Charge.invoice_id.is_(None),
            Charge.occurred_at >= target.period_start,
            Charge.occurred_at < target.period_end,
        )
        .values(invoice_id=target.id)
        .execution_options(synchronize_session=False)
    )
    # Every attached charge without its line yet: the ones just taken (and, on a resumed
    # invoice, none twice: a charge is on at most one live line).
    has_line = exists().where(InvoiceLine.charge_id == Charge.id, ~InvoiceLine.void)
    session.execute(
        dialect_insert(session)(InvoiceLine).from_select(
            ["invoice_id", "charge_id", "description", "amount", "occurred_at", "void"],
            select(
                Charge.invoice_id,
                Charge.id,
                Charge.description,
                Charge.amount,
                Charge.occurred_at,
                false(),
            )
            .where(ids_in(session, Charge.invoice_id, ids), ~has_line)
            .order_by(Charge.invoice_id, Charge.occurred_at, Charge.id),
        )
    )


def _subtotals(session: Session, invoice_ids: list[int]) -> dict[int, Decimal]:
    """The sum of each invoice's lines. Every line amount is already in the currency's
    minor units (charges refuse more decimals, fee lines are rounded), so this sum is the
    sum of the rounded lines that `invoice_totals` would make of them.

    An invoice being generated has no void lines (only a voided invoice's lines are), and
    saying `NOT void` here would let PostgreSQL filter through the whole live-line index
    (a bitmap AND with it) on every batch, a cost growing with all lines ever written."""
    return {
        row.invoice_id: row.subtotal
        for row in session.execute(
            select(InvoiceLine.invoice_id, func.sum(InvoiceLine.amount).label("subtotal"))
            .where(ids_in(session, InvoiceLine.invoice_id, invoice_ids))
            .group_by(InvoiceLine.invoice_id)
        )
    }


def _check_own_data(period: _Period, now: dt.datetime) -> None:
    """Raise for a period's own bad data (an unknown zone, an empty period), before
    anything is written for the batch."""
    _issue_date(now, period.timezone)
    covered_dates(period.start_date, period.end_date)


@lru_cache(maxsize=1024)
def _issue_date(now: dt.datetime, timezone: str) -> dt.date:
    return local_date(now, timezone)


def _prepare(
    session: Session, periods: list[_Period], now: dt.datetime
) -> tuple[list[_Prepared], list[int]]:
    """Phase 1 for a batch of periods, set-based: claim the invoices, bill the recurring
    fees, attach the charges, sum the lines, compute the totals and dates.

    Returns (prepared, ids of the periods already invoiced). The periods' own data was
    checked before (`_sound_periods`); whatever else fails, fails here, inside the caller's
    savepoint, never in phase 2 where the whole batch is numbered at once. Nothing is
    rendered: documents are made on demand
    from the stored invoice (tasks.invoice_documents)."""
    created, resumed, already = _claim_invoices(session, periods)
    by_id = {period.closed_period_id: period for period in periods}
    # Recurring fees are billed with the invoice row that records them, so a resumed
    # invoice already has its fee lines.
    bill_fees_batch(session, [(by_id[cp].fees, invoice_id) for cp, invoice_id in created.items()])
    invoices = {invoice_id: by_id[cp] for cp, invoice_id in sorted({**created, **resumed}.items())}
    if not invoices:
        return [], already
    _take_charges(session, invoices)
    subtotals = _subtotals(session, list(invoices))
    prepared = []
    for invoice_id, period in invoices.items():
        issue = _issue_date(now, period.timezone)
        prepared.append(
            _Prepared(
                period=period,
                invoice_id=invoice_id,
                totals=invoice_totals(
                    [subtotals.get(invoice_id, Decimal(0))], period.tax_rate, period.currency
                ),
                issue_date=issue,
                due_date=due_date(issue, period.grace_period_days),
            )
        )
    return prepared, already


def _issue(session: Session, prepared: list[_Prepared], now: dt.datetime) -> list[IssuedInvoice]:
    """Phase 2: number and issue every prepared invoice; write the outbox rows."""
    issued: list[IssuedInvoice] = []
    invoice_rows: list[dict[str, Any]] = []
    outbox: list[tuple[int, str]] = []
    ordered = sorted(
        prepared,
        key=lambda p: (p.period.reseller_id, p.period.period_end, p.period.closed_period_id),
    )
    for reseller_id, group in groupby(ordered, key=lambda p: p.period.reseller_id):
        items = list(group)
        last = session.execute(
            update(Reseller)
            .where(Reseller.id == reseller_id)
            .values(last_invoice_number=Reseller.last_invoice_number + len(items))
            .returning(Reseller.last_invoice_number)
        ).scalar_one()
        for number, item in enumerate(items, start=last - len(items) + 1):
            period = item.period
            invoice_rows.append(
                {
                    "id": item.invoice_id,
                    "number": number,
                    "subtotal": item.totals.subtotal,
                    "tax": item.totals.tax,
                    "total": item.totals.total,
                    "issue_date": item.issue_date,
                    "due_date": item.due_date,
                    "snapshot": period.snapshot,
                }
            )
            # The text is the mailer's to compose, from the stored invoice.
            recipients = [*period.notification_emails, *filter(None, [period.invoice_email])]
            outbox += [(item.invoice_id, recipient) for recipient in dict.fromkeys(recipients)]
            issued.append(
                IssuedInvoice(
                    period.closed_period_id, item.invoice_id, reseller_id, number, item.totals.total
                )
            )
    if invoice_rows:
        _write_issued(session, invoice_rows, now)
        session.execute(
            update(ClosedPeriod)
            .where(ids_in(session, ClosedPeriod.id, [p.period.closed_period_id for p in prepared]))
            .values(invoiced=True)
        )
    if outbox:
        _write_outbox(session, outbox, now)
    return issued


def _write_issued(session: Session, rows: list[dict[str, Any]], now: dt.datetime) -> None:
    """Issue the numbered invoices: on PostgreSQL one `UPDATE … FROM json_to_recordset`
    for the whole batch (one parameter, one statement), elsewhere one update per row."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(
            update(Invoice),
            [{**row, "status": InvoiceStatus.ISSUED, "issued_at": now} for row in rows],
        )
        return
    payload = json.dumps(
        [
            {
                **row,
                "subtotal": str(row["subtotal"]),
                "tax": str(row["tax"]),
                "total": str(row["total"]),
                "issue_date": row["issue_date"].isoformat(),
                "due_date": row["due_date"].isoformat(),
            }
            for row in rows
        ]
    )
    session.execute(
        text(
            "UPDATE invoices SET number = r.number, status = :issued, subtotal = r.subtotal,"
            " tax = r.tax, total = r.total, issue_date = r.issue_date, due_date = r.due_date,"
            " issued_at = :now, snapshot = r.snapshot"
            " FROM json_to_recordset(CAST(:rows AS json)) AS r(id bigint, number integer,"
            " subtotal numeric, tax numeric, total numeric, issue_date date, due_date date,"
            " snapshot json)"
            " WHERE invoices.id = r.id"
        ),
        {"rows": payload, "issued": InvoiceStatus.ISSUED.value, "now": now},
    )
    session.expire_all()  # invoices the caller holds were changed behind the ORM's back


def _write_outbox(session: Session, outbox: list[tuple[int, str]], now: dt.datetime) -> None:
    """One pending invoice e-mail per (invoice, recipient), unique: a rerun adds none."""
    insert = dialect_insert(session)
    if session.get_bind().dialect.name == "postgresql":
        invoice_ids, recipients = zip(*outbox, strict=True)
        rows = (
            func.unnest(
                literal(list(invoice_ids), ARRAY(BigInteger)),
                literal(list(recipients), ARRAY(String)),
            )
            .table_valued("invoice_id", "recipient")
            .render_derived()
        )
        statement = insert(Notification).from_select(
            ["invoice_id", "topic", "recipient", "status", "attempts", "created_at"],
            select(
                rows.c.invoice_id,
                literal("invoice"),
                rows.c.recipient,
                literal(NotificationStatus.PENDING.value),
                literal(0),
                literal(now, UTCDateTime()),
            ),
        )
        session.execute(
            statement.on_conflict_do_nothing(index_elements=["invoice_id", "topic", "recipient"])
        )
        return
    session.execute(
        insert(Notification).on_conflict_do_nothing(
            index_elements=["invoice_id", "topic", "recipient"]
        ),
        [
            {
                "invoice_id": invoice_id,
                "topic": "invoice",
                "recipient": recipient,
                "status": NotificationStatus.PENDING,
                "attempts": 0,
                "created_at": now,
            }
            for invoice_id, recipient in outbox
        ],
    )


class InvoicingStatus(StrEnum):
    DONE = "done"  # every period of the batch is invoiced (now or before)
    SOME_FAILED = "some_failed"  # some could not be: see `errors` and `failed`


# Codes of the per-period errors.
MISSING = "missing"  # no such closed period
GENERATION_FAILED = "generation_failed"  # its own data made generation fail
EARLIER_PERIOD_PENDING = "earlier_period_pending"  # held: an earlier period is not invoiced


@dataclass(frozen=True)
class IssuedInvoice:
    closed_period_id: int
    invoice_id: int
    reseller_id: int
    number: int
    total: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "closed_period_id": self.closed_period_id,
            "invoice_id": self.invoice_id,
            "reseller_id": self.reseller_id,
            "number": self.number,
            "total": str(self.total),
        }


@dataclass(frozen=True)
class PeriodFailure:
    closed_period_id: int
    code: str
    message: str

    def as_problem(self) -> Problem:
        return Problem(
            "closed_period_ids", self.code, f"closed period {self.closed_period_id}: {self.message}"
        )


@dataclass(frozen=True)
class InvoicingResult:
    """What one generation did: issued invoices, periods invoiced before, and failures."""

    invoices: tuple[IssuedInvoice, ...] = ()
    already_invoiced: tuple[int, ...] = ()
    failures: tuple[PeriodFailure, ...] = ()

    @property
    def status(self) -> InvoicingStatus:
        return InvoicingStatus.SOME_FAILED if self.failures else InvoicingStatus.DONE

    @property
    def issued(self) -> int:
        return len(self.invoices)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "errors": [failure.as_problem().as_dict() for failure in self.failures],
            "issued": self.issued,
            "invoices": [invoice.as_json() for invoice in self.invoices],
            "already_invoiced": list(self.already_invoiced),
            "missing": [f.closed_period_id for f in self.failures if f.code == MISSING],
            "failed": [f.closed_period_id for f in self.failures if f.code != MISSING],
        }


def _prepare_all(
    session: Session, periods: list[_Period], now: dt.datetime
) -> tuple[list[_Prepared], list[int], list[PeriodFailure]]:
    """Phase 1 for the batch: (prepared, already invoiced, failed). Optimistically the
    whole batch at once, set-based, in one savepoint; if that fails, again one period at a
    time, each in its own savepoint, so that only the bad one is reported and skipped.

    Periods go in id order, which is each customer's period order (a customer's periods
    close one after the other), and a customer's later period is held once an earlier one
    failed: its invoice is never numbered before the earlier one's. Concurrent generators
    claim invoices in that same order, so they wait on each other without deadlocking."""
    failures: list[PeriodFailure] = []
    sound = _sound_periods(periods, now, failures)
    try:
        with session.begin_nested():
            prepared, already = _prepare(session, sound, now)
        return prepared, already, failures
    except Exception as exc:
        if is_transient(exc):
            raise
    prepared, already = [], []
    failed_customers: set[int] = set()
    for period in sound:
        if period.customer_id in failed_customers:
            failures.append(_held(period))
            continue
        try:
            with session.begin_nested():
                one, done = _prepare(session, [period], now)
        except Exception as exc:
            if is_transient(exc):
                raise
            failed_customers.add(period.customer_id)
            failures.append(_failed(period, exc))
        else:
            prepared += one
            already += done
    return prepared, already, failures


def _sound_periods(
    periods: list[_Period], now: dt.datetime, failures: list[PeriodFailure]
) -> list[_Period]:
    """The periods whose own data (zone, dates) can be invoiced, found before anything is
    written; the others, and the later periods of their customers, go to `failures`."""
    failed_customers: set[int] = set()
    sound = []
    for period in periods:
        if period.customer_id in failed_customers:
            failures.append(_held(period))
            continue
        try:
            _check_own_data(period, now)
        except Exception as exc:
            failed_customers.add(period.customer_id)
            failures.append(_failed(period, exc))
        else:
            sound.append(period)
    return sound


def _held(period: _Period) -> PeriodFailure:
    return PeriodFailure(
        period.closed_period_id,
        EARLIER_PERIOD_PENDING,
        "held until the customer's earlier period is invoiced",
    )


def _failed(period: _Period, exc: Exception) -> PeriodFailure:
    return PeriodFailure(period.closed_period_id, GENERATION_FAILED, f"{type(exc).__name__}: {exc}")


def _earlier_uninvoiced(session: Session, periods: dict[int, _Period]) -> list[int]:
    """Closed periods not in the batch, not invoiced, that come before a batch period of
    the same customer: they are invoiced first, so that numbers follow period order."""
    latest: dict[int, dt.datetime] = {}
    for period in periods.values():
        if not period.invoiced:
            start = latest.get(period.customer_id)
            latest[period.customer_id] = (
                max(start, period.period_start) if start else period.period_start
            )
    if not latest:
        return []
    rows = session.execute(
        select(ClosedPeriod.id, ClosedPeriod.customer_id, ClosedPeriod.period_start).where(
            ~ClosedPeriod.invoiced, ids_in(session, ClosedPeriod.customer_id, latest)
        )
    ).all()
    rows = [row for row in rows if row.id not in periods]
    return [row.id for row in rows if row.period_start < latest[row.customer_id]]


def _record_failures(
    session: Session, failures: Sequence[PeriodFailure], now: dt.datetime, retry_after: dt.timedelta
) -> None:
    """Count each failed generation on its period and push its next re-queue further away
    (reconcile re-queues it after `retry_after`, then 2x, 4x, …; see ClosedPeriod)."""
    # A held period counts too: it is retried (and given up on) with the period holding it,
    # instead of being re-queued by every reconcile while that one cannot be invoiced.
    failed = [f for f in failures if f.code in {GENERATION_FAILED, EARLIER_PERIOD_PENDING}]
    if not failed:
        return
    attempts: dict[int, int] = {
        row.id: row.invoice_attempts
        for row in session.execute(
            select(ClosedPeriod.id, ClosedPeriod.invoice_attempts).where(
                ClosedPeriod.id.in_([f.closed_period_id for f in failed])
            )
        )
    }
    session.execute(
        update(ClosedPeriod),
        [
            {
                "id": f.closed_period_id,
                "invoice_attempts": attempts[f.closed_period_id] + 1,
                "invoice_error": f.message[:2000],
                "invoice_enqueued_at": now + retry_after * (2 ** attempts[f.closed_period_id] - 1),
            }
            for f in failed
        ],
    )


def generate_invoices(
    session: Session,
    closed_period_ids: Sequence[int],
    *,
    now: dt.datetime,
    retry_after: dt.timedelta = dt.timedelta(0),
) -> InvoicingResult:
    """Create and issue one invoice per closed period of the batch (and first, any earlier
    uninvoiced period of the same customers, so numbers follow period order).

    Safe to rerun and to run concurrently: a period already invoiced is skipped. A period
    that fails is reported and skipped, the rest of the batch is issued; the failure is
    recorded on the period (see `_record_failures`).
    """
    ids = sorted(set(closed_period_ids))
    plan_each_batch(session)
    periods = _load_periods(session, ids)
    extra = _earlier_uninvoiced(session, periods)
    if extra:
        periods.update(_load_periods(session, extra))
    failures = [PeriodFailure(i, MISSING, "no such closed period") for i in ids if i not in periods]
    already = [i for i in sorted(periods) if periods[i].invoiced]
    todo = [periods[i] for i in sorted(periods) if not periods[i].invoiced]
    prepared, already_now, failed = _prepare_all(session, todo, now)
    invoices = _issue(session, prepared, now)
    settle_issued(session, [i.invoice_id for i in invoices], now=now)
    _record_failures(session, failed, now, retry_after)
    return InvoicingResult(
        invoices=tuple(invoices),
        already_invoiced=tuple(i for i in sorted(already + already_now) if i in ids),
        failures=tuple(sorted(failures + failed, key=lambda f: f.closed_period_id)),
    )


@app.task(name="billing.invoices.generate", base=BillingTask, bind=True)
def generate_invoices_task(self: BillingTask, closed_period_ids: list[int]) -> dict[str, Any]:
    """Issue the invoices of a batch of closed periods (ids); reruns create nothing new.

    A period that could not be invoiced fails the task (FAILURE, in Flower too) once the
    rest of the batch has committed; the summary travels with the error."""
    ids = [int(i) for i in closed_period_ids]
    with unit_of_work() as session:
        result = generate_invoices(
            session,
            ids,
            now=database_clock(session),
            retry_after=dt.timedelta(seconds=settings().reconcile_after),
        )
        if result.issued:
            queue_mailing_after_commit(session)
    if result.failures:
        raise WorkFailed(result.as_json())
    return result.as_json()
