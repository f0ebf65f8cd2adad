"""Invoice generation: one invoice per closed period, numbered without gaps per reseller.

`generate_invoices(session, closed_period_ids, now=…)` runs in the caller's transaction in
two phases:

1. Per closed period, inside its own savepoint (a bad period is reported and skipped, the
   rest of the batch goes on): `INSERT invoice … ON CONFLICT (closed_period_id) DO
   NOTHING` (a conflict with an issued invoice means "already invoiced"; a concurrent
   generator of the same period makes us wait for it, then skip), take the customer's
   uninvoiced charges that occurred in `[period start, period end)` with `FOR UPDATE` and
   attach them, compute the totals.
2. At the end, per reseller in id order (so concurrent batches cannot deadlock): one
   `UPDATE resellers SET last_invoice_number = last_invoice_number + k RETURNING …`
   hands out k consecutive numbers; the invoices are rendered, issued and their
   notifications written to the outbox, and their closed periods marked invoiced. The
   reseller row stays locked until commit, which serialises concurrent issuers; a rollback
   gives the numbers back, so numbers have no gaps. Holding the lock only for this short
   last step keeps concurrent generators from queueing behind each other's whole batch.

Late charges: a charge recorded after its period's invoice was issued is not lost; it goes
on the customer's next invoice generated, as a line marked "late charge from <date>". A
charge waits for its own period's invoice while that period is closed but not yet invoiced,
so out-of-order generation (catch-up batches on several workers) never moves a charge to
the wrong invoice.

Notifications: each issued invoice writes one outbox row per address of the class's
notification list (unique per invoice and recipient). When BILLING_SMTP_URL is set, the
`billing.notifications.send` task mails them (at least once) and is queued after every
batch that issued invoices; without it, the rows wait for whatever mailer reads the outbox.

Settlement: once a batch is issued, `tasks.settlement.settle_issued` pays its prepaid
invoices from funds and applies any postpaid customer's credit (see that module).

Tax is computed on the subtotal (see `models.invoicing_rules`). The issue date is the local
date of `now` in the period's billing timezone; due date = issue date + the class's grace
period.
"""

from __future__ import annotations

import datetime as dt
import smtplib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from email.message import EmailMessage
from functools import cache
from itertools import groupby
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jinja2
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from models import (
    Charge,
    ClosedPeriod,
    Customer,
    CustomerClass,
    Invoice,
    InvoiceLine,
    Notification,
    Reseller,
)
from models.billing import LIVE_INVOICE
from models.invoicing_rules import (
    Totals,
    covered_dates,
    covered_dates_text,
    due_date,
    format_long_date,
    format_money,
    format_rate,
    invoice_totals,
    local_date,
)
from tasks.base import BillingTask, is_transient, send_after_commit, utcnow
from tasks.settlement import settle_issued
from worker.celery_app import app
from worker.config import settings
from worker.db import dialect_insert, unit_of_work

ISSUED = "issued"
GENERATING = "generating"


@cache
def template_environment() -> jinja2.Environment:
    """Templates from BILLING_TEMPLATE_DIR (if set) first, then the packaged ones.

    Autoescaping is on for every template: customer names and charge descriptions come
    from outside and must never become markup.
    """
    loaders: list[jinja2.BaseLoader] = []
    custom = settings().template_dir
    if custom:
        loaders.append(jinja2.FileSystemLoader(custom))
    loaders.append(jinja2.PackageLoader("models", "templates"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


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


@dataclass
class _Line:
    description: str
    amount: Decimal
    occurred_at: dt.datetime | None


@dataclass
class _Prepared:
    period: _Period
    invoice_id: int
    template: jinja2.Template
    lines: list[_Line]
    totals: Totals
    covered: tuple[dt.date, dt.date]


def _load_periods(session: Session, ids: Sequence[int]) -> dict[int, _Period]:
    rows = session.execute(
        select(
            ClosedPeriod.id,
            ClosedPeriod.invoiced,
            ClosedPeriod.period_start,
            ClosedPeriod.period_end,
            ClosedPeriod.start_date,
            ClosedPeriod.end_date,
            ClosedPeriod.billing_timezone,
            Customer.id,
            Customer.name,
            Customer.currency,
            Reseller.id,
            Reseller.display_name,
            Reseller.name,
            CustomerClass.tax_name,
            CustomerClass.tax_rate,
            CustomerClass.grace_period_days,
            CustomerClass.invoice_template,
            CustomerClass.notification_emails,
        )
        .join(Customer, Customer.id == ClosedPeriod.customer_id)
        .join(Reseller, Reseller.id == Customer.reseller_id)
        .join(CustomerClass, CustomerClass.id == Customer.customer_class_id)
        .where(ClosedPeriod.id.in_(ids))
    ).all()
    return {
        row[0]: _Period(
            closed_period_id=row[0],
            invoiced=row[1],
            period_start=row[2],
            period_end=row[3],
            start_date=row[4],
            end_date=row[5],
            timezone=row[6],
            customer_id=row[7],
            customer_name=row[8],
            currency=row[9],
            reseller_id=row[10],
            reseller_name=row[11] or row[12],
            tax_name=row[13],
            tax_rate=row[14],
            grace_period_days=row[15],
            template_name=row[16],
            notification_emails=list(row[17] or []),
        )
        for row in rows
    }


def _claim_invoice(session: Session, period: _Period) -> tuple[int, bool] | None:
    """(id of this period's invoice still to be issued, whether it was just created), or
    None if it is already issued."""
    insert = dialect_insert(session)
    covered_from, covered_to = covered_dates(period.start_date, period.end_date)
    invoice_id: int | None = session.execute(
        insert(Invoice)
        .values(
            closed_period_id=period.closed_period_id,
            customer_id=period.customer_id,
            reseller_id=period.reseller_id,
            status=GENERATING,
            currency=period.currency,
            tax_name=period.tax_name,
            tax_rate=period.tax_rate,
            subtotal=Decimal(0),
            tax=Decimal(0),
            total=Decimal(0),
            period_start=period.period_start,
            period_end=period.period_end,
            covered_from=covered_from,
            covered_to=covered_to,
        )
        .on_conflict_do_nothing(index_elements=["closed_period_id"], index_where=LIVE_INVOICE)
        .returning(Invoice.id)
    ).scalar_one_or_none()
    if invoice_id is not None:
        return invoice_id, True
    # The invoice exists (committed: a concurrent insert made us wait for its outcome).
    existing = session.execute(
        select(Invoice.id, Invoice.status)
        .where(Invoice.closed_period_id == period.closed_period_id, LIVE_INVOICE)
        .with_for_update()
    ).one()
    return None if existing.status == ISSUED else (int(existing.id), False)


def _take_charges(session: Session, period: _Period, invoice_id: int) -> list[_Line]:
    """Attach the period's uninvoiced charges (and late ones, see module doc) to the invoice."""
    own_period_pending = exists().where(
        ClosedPeriod.customer_id == Charge.customer_id,
        ClosedPeriod.period_start <= Charge.occurred_at,
        ClosedPeriod.period_end > Charge.occurred_at,
        ClosedPeriod.id != period.closed_period_id,
        ClosedPeriod.invoiced.is_(False),
    )
    # One statement claims and locks: UPDATE takes the row locks, and a row another
    # generator claimed meanwhile fails the re-checked `invoice_id IS NULL` and is skipped.
    claimed = session.execute(
        update(Charge)
        .where(
            Charge.customer_id == period.customer_id,
            Charge.invoice_id.is_(None),
            Charge.occurred_at < period.period_end,
            or_(
                Charge.occurred_at >= period.period_start,
                and_(Charge.occurred_at < period.period_start, ~own_period_pending),
            ),
        )
        .values(invoice_id=invoice_id)
        .returning(Charge.id, Charge.description, Charge.amount, Charge.occurred_at)
        .execution_options(synchronize_session=False)
    ).all()
    charges = sorted(claimed, key=lambda c: (c.occurred_at, c.id))
    lines = []
    for charge in charges:
        description = charge.description
        if charge.occurred_at < period.period_start:
            day = format_long_date(local_date(charge.occurred_at, period.timezone))
            description = f"{description} (late charge from {day})"
        lines.append(_Line(description, charge.amount, charge.occurred_at))
    if charges:
        session.execute(
            dialect_insert(session)(InvoiceLine),
            [
                {
                    "invoice_id": invoice_id,
                    "charge_id": charge.id,
                    "description": line.description,
                    "amount": line.amount,
                    "occurred_at": line.occurred_at,
                }
                for charge, line in zip(charges, lines, strict=True)
            ],
        )
    return lines


def _existing_lines(session: Session, invoice_id: int) -> list[_Line]:
    return [
        _Line(row.description, row.amount, row.occurred_at)
        for row in session.execute(
            select(InvoiceLine.description, InvoiceLine.amount, InvoiceLine.occurred_at)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.occurred_at, InvoiceLine.id)
        )
    ]


def _prepare(session: Session, period: _Period) -> _Prepared | None:
    """Phase 1 for one period: claim the invoice, attach the charges, compute the totals."""
    template = template_environment().get_template(period.template_name)
    claimed = _claim_invoice(session, period)
    if claimed is None:
        return None
    invoice_id, created = claimed
    # An invoice left `generating` by an earlier attempt keeps the lines it already has.
    resumed = [] if created else _existing_lines(session, invoice_id)
    lines = resumed + _take_charges(session, period, invoice_id)
    totals = invoice_totals((line.amount for line in lines), period.tax_rate, period.currency)
    return _Prepared(
        period=period,
        invoice_id=invoice_id,
        template=template,
        lines=lines,
        totals=totals,
        covered=covered_dates(period.start_date, period.end_date),
    )


def render_invoice(item: _Prepared, number: int, issue: dt.date, due: dt.date) -> str:
    period = item.period

    def money(amount: Decimal) -> str:
        return format_money(amount, period.currency)

    return item.template.render(
        invoice={
            "number": number,
            "issue_date": format_long_date(issue),
            "due_date": format_long_date(due),
            "covered": covered_dates_text(*item.covered),
            "covered_from": item.covered[0].isoformat(),
            "covered_to": item.covered[1].isoformat(),
            "currency": period.currency,
            "subtotal": money(item.totals.subtotal),
            "tax_name": period.tax_name,
            "tax_rate": format_rate(period.tax_rate),
            "tax": money(item.totals.tax),
            "total": money(item.totals.total),
            "timezone": period.timezone,
        },
        reseller={"name": period.reseller_name},
        customer={"name": period.customer_name},
        lines=[
            {
                "date": ""
                if line.occurred_at is None
                else format_long_date(local_date(line.occurred_at, period.timezone)),
                "description": line.description,
                "amount": money(line.amount),
            }
            for line in item.lines
        ],
    )


def _issue(session: Session, prepared: list[_Prepared], now: dt.datetime) -> list[dict[str, Any]]:
    """Phase 2: number, render and issue every prepared invoice; write the outbox rows."""
    issued: list[dict[str, Any]] = []
    invoice_rows: list[dict[str, Any]] = []
    notification_rows: list[dict[str, Any]] = []
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
            issue = local_date(now, period.timezone)
            due = due_date(issue, period.grace_period_days)
            invoice_rows.append(
                {
                    "id": item.invoice_id,
                    "number": number,
                    "status": ISSUED,
                    "subtotal": item.totals.subtotal,
                    "tax": item.totals.tax,
                    "total": item.totals.total,
                    "issue_date": issue,
                    "due_date": due,
                    "issued_at": now,
                    "document_html": render_invoice(item, number, issue, due),
                }
            )
            total_text = format_money(item.totals.total, period.currency)
            for recipient in dict.fromkeys(period.notification_emails):
                notification_rows.append(
                    {
                        "invoice_id": item.invoice_id,
                        "topic": "invoice",
                        "recipient": recipient,
                        "subject": f"Invoice {number} from {period.reseller_name}",
                        "body_text": (
                            f"Invoice {number} for {period.customer_name}, covering "
                            f"{covered_dates_text(*item.covered)}: {total_text}, due "
                            f"{format_long_date(due)}."
                        ),
                        "status": "pending",
                        "attempts": 0,
                        "created_at": now,
                    }
                )
            issued.append(
                {
                    "closed_period_id": period.closed_period_id,
                    "invoice_id": item.invoice_id,
                    "reseller_id": reseller_id,
                    "number": number,
                    "total": str(item.totals.total),
                }
            )
    if invoice_rows:
        session.execute(update(Invoice), invoice_rows)
        session.execute(
            update(ClosedPeriod)
            .where(ClosedPeriod.id.in_([p.period.closed_period_id for p in prepared]))
            .values(invoiced=True)
        )
    if notification_rows:
        insert = dialect_insert(session)
        session.execute(
            insert(Notification).on_conflict_do_nothing(
                index_elements=["invoice_id", "topic", "recipient"]
            ),
            notification_rows,
        )
    return issued


def _prepare_all(
    session: Session, periods: list[_Period], summary: dict[str, Any]
) -> list[_Prepared]:
    """Phase 1 for the batch. Optimistically all periods in one savepoint (two round trips
    fewer per invoice); if one of them fails, again one savepoint per period, so that only
    the bad one is reported and skipped."""
    try:
        with session.begin_nested():
            outcomes = [(period, _prepare(session, period)) for period in periods]
    except Exception as exc:
        if is_transient(exc):
            raise
        outcomes = []
        for period in periods:
            try:
                with session.begin_nested():
                    outcomes.append((period, _prepare(session, period)))
            except Exception as exc:
                if is_transient(exc):
                    raise
                summary["failed"].append(
                    {
                        "closed_period_id": period.closed_period_id,
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
    prepared = []
    for period, item in outcomes:
        if item is None:
            summary["already_invoiced"].append(period.closed_period_id)
        else:
            prepared.append(item)
    return prepared


def generate_invoices(
    session: Session, closed_period_ids: Sequence[int], *, now: dt.datetime
) -> dict[str, Any]:
    """Create and issue one invoice per closed period of the batch; returns a JSON summary.

    Safe to rerun and to run concurrently: a period already invoiced is skipped.
    """
    ids = sorted(set(closed_period_ids))
    periods = _load_periods(session, ids)
    summary: dict[str, Any] = {
        "issued": 0,
        "already_invoiced": [],
        "missing": [i for i in ids if i not in periods],
        "failed": [],
        "invoices": [],
    }
    todo = []
    for period_id in ids:
        period = periods.get(period_id)
        if period is None:
            continue
        if period.invoiced:
            summary["already_invoiced"].append(period_id)
        else:
            todo.append(period)
    prepared = _prepare_all(session, todo, summary)
    summary["invoices"] = _issue(session, prepared, now)
    summary["issued"] = len(summary["invoices"])
    settle_issued(session, [i["invoice_id"] for i in summary["invoices"]], now=now)
    return summary


Sender = Callable[[EmailMessage], object]


def send_notifications(
    session: Session,
    send: Sender,
    *,
    now: dt.datetime,
    sender_address: str,
    limit: int = 100,
    max_attempts: int = 5,
) -> dict[str, Any]:
    """Send up to `limit` pending outbox e-mails with `send`; mark each sent or count the failure.

    Rows are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent mailers share the outbox.
    Delivery is at least once: a crash between the SMTP hand-off and the commit sends that
    e-mail again. After `max_attempts` failures a row is `failed` and left for an operator.
    """
    rows = session.execute(
        select(Notification, Invoice.document_html)
        .join(Invoice, Invoice.id == Notification.invoice_id)
        .where(Notification.status == "pending")
        .order_by(Notification.created_at, Notification.id)
        .limit(limit)
        .with_for_update(of=Notification, skip_locked=True)
    ).all()
    sent = failed = 0
    for notification, document in rows:
        message = EmailMessage()
        message["From"] = sender_address
        message["To"] = notification.recipient
        message["Subject"] = notification.subject
        message.set_content(notification.body_text)
        if document and notification.topic == "invoice":  # not on reminders and notices
            message.add_alternative(document, subtype="html")
        try:
            send(message)
        except (smtplib.SMTPException, OSError) as exc:
            notification.attempts += 1
            notification.last_error = f"{type(exc).__name__}: {exc}"
            if notification.attempts >= max_attempts:
                notification.status = "failed"
            failed += 1
        else:
            notification.attempts += 1
            notification.status = "sent"
            notification.sent_at = now
            sent += 1
    session.flush()
    return {"sent": sent, "failed": failed, "claimed": len(rows)}


@dataclass(frozen=True)
class SMTPSettings:
    """`BILLING_SMTP_URL`: smtp://[user:password@]host[:port][?starttls=1&from=ADDRESS], or
    smtps://… for implicit TLS."""

    host: str
    port: int
    ssl: bool
    starttls: bool
    username: str | None
    password: str | None
    sender_address: str

    @classmethod
    def from_url(cls, url: str) -> SMTPSettings:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError(
                f"BILLING_SMTP_URL must be smtp://host[:port] or smtps://…, got {url!r}"
            )
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if parts.scheme == "smtps" else 25),
            ssl=parts.scheme == "smtps",
            starttls=query.get("starttls", ["0"])[0].lower() in {"1", "true", "yes"},
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender_address=query.get("from", ["billing@localhost"])[0],
        )

    def sender(self) -> Callable[[EmailMessage], object]:
        def send(message: EmailMessage) -> object:
            factory = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
            with factory(self.host, self.port, timeout=30) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                return smtp.send_message(message)

        return send


@cache
def smtp_settings() -> SMTPSettings | None:
    """The mailer's settings, read once; None when BILLING_SMTP_URL is not set (no mailer)."""
    url = settings().smtp_url
    return SMTPSettings.from_url(url) if url else None


@app.task(name="billing.invoices.generate", base=BillingTask, bind=True)
def generate_invoices_task(self: BillingTask, closed_period_ids: list[int]) -> dict[str, Any]:
    """Issue the invoices of a batch of closed periods (ids); reruns create nothing new."""
    ids = [int(i) for i in closed_period_ids]
    with unit_of_work() as session:
        summary = generate_invoices(session, ids, now=utcnow())
        if summary["issued"] and smtp_settings() is not None:
            send_after_commit(session, send_notifications_task.s())
        return summary


@app.task(name="billing.notifications.send", base=BillingTask, bind=True)
def send_notifications_task(self: BillingTask) -> dict[str, Any]:
    """Send pending invoice e-mails through BILLING_SMTP_URL; requeue itself while some remain."""
    conf = smtp_settings()
    if conf is None:
        return {"status": "disabled", "reason": "BILLING_SMTP_URL is not set"}
    with unit_of_work() as session:
        result = send_notifications(
            session, conf.sender(), now=utcnow(), sender_address=conf.sender_address
        )
        if result["claimed"] and result["sent"] == result["claimed"]:
            send_after_commit(session, send_notifications_task.s())
    return {"status": "ok", **result}
