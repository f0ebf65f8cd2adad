"""The invoice outbox mailer: send the pending notification e-mails, at least once.

Issuing an invoice writes one outbox row per recipient (`tasks/invoicing.py`: the class's
notification list and the customer's own invoice address); this module mails them, with the
invoice's HTML and its PDF (a Factur-X PDF/A-3 when the class asks for it) rendered here,
from the stored invoice, never while invoicing.

With `BILLING_SMTP_URL` set (parsed once, at start-up, in `worker/config.py`),
`billing.notifications.send` runs after every batch that issued invoices and requeues
itself while a full page was sent; without it the rows wait in the outbox for whatever
mailer reads it.
"""

from __future__ import annotations

import datetime as dt
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum
from typing import Any

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Invoice, Notification, NotificationStatus
from tasks.base import BillingTask, send_after_commit, utcnow
from tasks.invoice_documents import (
    Attachment,
    RenderError,
    invoice_attachments,
    issue_notification_text,
    load_invoice_view,
    render_html,
)
from worker.celery_app import app
from worker.config import SMTPSettings, settings
from worker.db import unit_of_work

SEND_NOTIFICATIONS = "billing.notifications.send"

# Hands one e-mail to the mail system (an SMTP transport, or a test's list).
Transport = Callable[[EmailMessage], object]


class MailingStatus(StrEnum):
    DONE = "done"  # every claimed e-mail was handed over (or there was nothing to send)
    SOME_FAILED = "some_failed"  # some were refused; they stay pending until max attempts
    DISABLED = "disabled"  # no BILLING_SMTP_URL: the outbox keeps the rows


@dataclass(frozen=True)
class MailingResult:
    status: MailingStatus
    sent: int = 0
    failed: int = 0
    claimed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "errors": [],
            "sent": self.sent,
            "failed": self.failed,
            "claimed": self.claimed,
        }


def send_notifications(
    session: Session,
    transport: Transport,
    *,
    now: dt.datetime,
    sender_address: str,
    limit: int = 100,
    max_attempts: int = 5,
    template_dir: str = "",
) -> MailingResult:
    """Send up to `limit` pending outbox e-mails through `transport`; mark each sent or
    count the failure.

    Rows are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent mailers share the outbox.
    Delivery is at least once: a crash between the SMTP hand-off and the commit sends that
    e-mail again. After `max_attempts` failures a row is `failed` and left for an operator.
    """
    rows = session.scalars(
        select(Notification)
        .where(Notification.status == NotificationStatus.PENDING)
        .order_by(Notification.created_at, Notification.id)
        .limit(limit)
        .with_for_update(of=Notification, skip_locked=True)
    ).all()
    compose_invoice_texts(session, [n for n in rows if n.subject is None])
    sent = failed = 0
    documents: dict[int, tuple[str, list[Attachment]] | None] = {}
    for notification in rows:
        message = EmailMessage()
        message["From"] = sender_address
        message["To"] = notification.recipient
        message["Subject"] = notification.subject or ""
        message.set_content(notification.body_text or "")
        notification.attempts += 1
        try:
            # The invoice itself carries its documents; reminders and notices are text only.
            if notification.topic == "invoice" and notification.invoice_id not in documents:
                documents[notification.invoice_id] = _documents(
                    session, notification.invoice_id, template_dir
                )
            document = documents.get(notification.invoice_id)
            if document is not None and notification.topic == "invoice":
                html, attachments = document
                message.add_alternative(html, subtype="html")
                for attachment in attachments:
                    maintype, subtype = attachment.mime_type.split("/", 1)
                    message.add_attachment(
                        attachment.content,
                        maintype=maintype,
                        subtype=subtype,
                        filename=attachment.filename,
                    )
            transport(message)
        except (smtplib.SMTPException, OSError, RenderError, jinja2.TemplateError) as exc:
            notification.last_error = f"{type(exc).__name__}: {exc}"
            if notification.attempts >= max_attempts:
                notification.status = NotificationStatus.FAILED
            failed += 1
        else:
            notification.status = NotificationStatus.SENT
            notification.sent_at = now
            sent += 1
    session.flush()
    return MailingResult(
        MailingStatus.SOME_FAILED if failed else MailingStatus.DONE, sent, failed, len(rows)
    )


def compose_invoice_texts(session: Session, notifications: list[Notification]) -> None:
    """Write the subject and text of invoice e-mails issued without them: issuing writes
    the outbox set-based and leaves the text to the mailer, which composes it once, from
    the stored invoice (number, dates, total, snapshot), the first time it claims the row."""
    ids = {n.invoice_id for n in notifications}
    if not ids:
        return
    invoices = {
        row.id: row
        for row in session.execute(
            select(
                Invoice.id,
                Invoice.snapshot,
                Invoice.number,
                Invoice.covered_from,
                Invoice.covered_to,
                Invoice.total,
                Invoice.currency,
                Invoice.due_date,
            ).where(Invoice.id.in_(sorted(ids)))
        )
    }
    for notification in notifications:
        row = invoices[notification.invoice_id]
        notification.subject, notification.body_text = issue_notification_text(
            row.snapshot,
            row.number,
            (row.covered_from, row.covered_to),
            row.total,
            row.currency,
            row.due_date,
        )


def _documents(
    session: Session, invoice_id: int, template_dir: str
) -> tuple[str, list[Attachment]] | None:
    """The invoice's HTML and its attachments (PDF, or Factur-X PDF), rendered from the
    stored invoice once per invoice of the page, however many recipients it has."""
    view = load_invoice_view(session, invoice_id)
    if view is None:
        return None
    html = render_html(view, template_dir=template_dir)
    return html, invoice_attachments(view, template_dir=template_dir)


def smtp_transport(conf: SMTPSettings) -> Transport:
    """One SMTP connection per e-mail, with the TLS mode and login `conf` says."""

    def send(message: EmailMessage) -> object:
        factory = smtplib.SMTP_SSL if conf.ssl else smtplib.SMTP
        with factory(conf.host, conf.port, timeout=30) as smtp:
            if conf.starttls:
                smtp.starttls()
            if conf.username:
                smtp.login(conf.username, conf.password or "")
            return smtp.send_message(message)

    return send


def queue_mailing_after_commit(session: Session) -> None:
    """Have the mailer run once `session` commits, if there is a mailer."""
    if settings().smtp is not None:
        send_after_commit(session, send_notifications_task.s())


@app.task(name=SEND_NOTIFICATIONS, base=BillingTask, bind=True)
def send_notifications_task(self: BillingTask) -> dict[str, Any]:
    """Send pending invoice e-mails through BILLING_SMTP_URL; requeue itself while some remain."""
    conf = settings().smtp
    if conf is None:
        return MailingResult(MailingStatus.DISABLED).as_json()
    with unit_of_work() as session:
        result = send_notifications(
            session,
            smtp_transport(conf),
            now=utcnow(),
            sender_address=conf.sender_address,
            template_dir=settings().template_dir,
        )
        if result.claimed and result.sent == result.claimed:
            send_after_commit(session, send_notifications_task.s())
    return result.as_json()
