"""The notification outbox mailer, against a real (minimal) SMTP server on a local socket."""

from __future__ import annotations

import datetime as dt
import email
import io
import socketserver
import threading
from decimal import Decimal

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from models import Notification
from tasks.charges import record_charge
from tasks.invoicing import generate_invoices
from tasks.notifications import send_notifications, smtp_transport
from tests.invoicing_factories import (
    billing_customer,
    charge_payload,
    close_period,
)
from worker.config import SMTPSettings, load_settings

NOW = dt.datetime(2026, 4, 19, 0, 5, tzinfo=dt.UTC)


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: greet, accept one message per DATA, refuse 'bad@'."""

    def _reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self._reply("220 test ESMTP")
        while raw := self.rfile.readline():
            command = raw.decode().strip()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self._reply("250 test")
            elif verb == "RCPT" and "bad@" in command:
                self._reply("550 no such mailbox")
            elif verb == "DATA":
                self._reply("354 go ahead")
                lines = []
                while (line := self.rfile.readline()) != b".\r\n":
                    lines.append(line)
                self.server.messages.append(b"".join(lines))  # type: ignore[attr-defined]
                self._reply("250 queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            else:  # MAIL, RSET, NOOP
                self._reply("250 ok")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.messages = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_outbox_is_mailed_with_the_invoice_attached(session, smtp_server) -> None:
    """Each recipient gets the text and the HTML invoice; a refused address counts a failure
    and stays pending until it has failed max_attempts times."""
    customer = billing_customer(
        session,
        name="Grace Hopper",
        class_fields={"notification_emails": ["ap@hopper.test", "bad@hopper.test"]},
    )
    period = close_period(session, customer, dt.date(2026, 3, 19), dt.date(2026, 4, 19))
    record_charge(
        session,
        charge_payload(customer, "7.50", dt.datetime(2026, 3, 20, tzinfo=dt.UTC), "k"),
        now=NOW,
    )
    generate_invoices(session, [period.id], now=NOW)
    # Issuing leaves the text to the mailer (the outbox is written set-based).
    assert set(session.scalars(select(Notification.subject))) == {None}
    port = smtp_server.server_address[1]
    conf = SMTPSettings.from_url(f"smtp://127.0.0.1:{port}?from=billing@acme.test")

    first = send_notifications(
        session, smtp_transport(conf), now=NOW, sender_address=conf.sender_address, max_attempts=2
    )
    second = send_notifications(
        session, smtp_transport(conf), now=NOW, sender_address=conf.sender_address, max_attempts=2
    )

    assert first.as_json() == {
        "status": "some_failed",
        "errors": [],
        "sent": 1,
        "failed": 1,
        "claimed": 2,
    }
    assert (second.sent, second.failed, second.claimed) == (0, 1, 1)
    rows = {n.recipient: n for n in session.scalars(select(Notification))}
    assert (rows["ap@hopper.test"].status, rows["ap@hopper.test"].sent_at) == ("sent", NOW)
    assert (rows["bad@hopper.test"].status, rows["bad@hopper.test"].attempts) == ("failed", 2)
    assert "550" in rows["bad@hopper.test"].last_error
    # composed once, kept with the row: the retried one is the same e-mail
    assert {n.subject for n in rows.values()} == {"Invoice 1 from Acme"}
    assert "$7.50" in rows["bad@hopper.test"].body_text
    (raw,) = smtp_server.messages
    message = email.message_from_bytes(raw)
    assert message["To"] == "ap@hopper.test"
    assert message["From"] == "billing@acme.test"
    assert message["Subject"] == "Invoice 1 from Acme"
    parts = {
        p.get_content_type(): p.get_payload(decode=True)
        for p in message.walk()
        if not p.is_multipart()
    }
    assert "$7.50" in parts["text/plain"].decode()
    assert "Grace Hopper" in parts["text/html"].decode()
    (attachment,) = [p for p in message.walk() if p.get_filename()]
    assert attachment.get_filename() == "invoice-1.pdf"
    text = PdfReader(io.BytesIO(parts["application/pdf"])).pages[0].extract_text()
    assert "Grace Hopper" in text
    assert "$7.50" in text


def test_the_customer_own_invoice_address_gets_a_factur_x_pdf_in_french(
    session, smtp_server
) -> None:
    """A customer with an invoice e-mail receives the invoice too (beside the class's list),
    in its locale, with the Factur-X PDF/A-3 its class asks for; the PDF carries the XML."""
    customer = billing_customer(
        session,
        name="Émile SARL",
        currency="EUR",
        class_fields={
            "notification_emails": ["ap@acme.test"],
            "einvoice_format": "factur-x",
            "tax_name": "TVA",
            "tax_rate": Decimal("0.2"),
        },
        customer_fields={"invoice_email": "factures@emile.test", "locale": "fr_FR"},
    )
    period = close_period(session, customer, dt.date(2026, 3, 19), dt.date(2026, 4, 19))
    record_charge(
        session,
        charge_payload(customer, "8.44", dt.datetime(2026, 3, 20, tzinfo=dt.UTC), "k"),
        now=NOW,
    )
    generate_invoices(session, [period.id], now=NOW)
    conf = SMTPSettings.from_url(f"smtp://127.0.0.1:{smtp_server.server_address[1]}")

    result = send_notifications(
        session, smtp_transport(conf), now=NOW, sender_address=conf.sender_address
    )

    assert (result.sent, result.failed) == (2, 0)
    messages = [email.message_from_bytes(raw) for raw in smtp_server.messages]
    assert sorted(m["To"] for m in messages) == ["ap@acme.test", "factures@emile.test"]
    for message in messages:
        assert message["Subject"] == "Facture 1 de Acme"
        (attachment,) = [p for p in message.walk() if p.get_filename()]
        assert attachment.get_filename() == "facture-1.pdf"
        pdf = PdfReader(io.BytesIO(attachment.get_payload(decode=True)))
        assert "10,13 €" in pdf.pages[0].extract_text().replace("\xa0", " ")
        assert list(pdf.attachments) == ["factur-x.xml"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.test", ("mail.test", 25, False, False, None, "billing@localhost")),
        (
            "smtps://u%40x:p%2Fw@mail.test:2465?from=inv@x.test",
            ("mail.test", 2465, True, False, "u@x", "inv@x.test"),
        ),
        (
            "smtp://mail.test:587?starttls=1",
            ("mail.test", 587, False, True, None, "billing@localhost"),
        ),
    ],
)
def test_smtp_urls_are_parsed(url, expected) -> None:
    """Host, port defaults per scheme, TLS mode, quoted credentials and the sender address."""
    conf = SMTPSettings.from_url(url)

    assert (conf.host, conf.port, conf.ssl, conf.starttls, conf.username, conf.sender_address) == (
        expected
    )


@pytest.mark.parametrize(
    "url", ["http://mail.test", "smtp://", "smtp://mail.test:notaport", "mail.test:25"]
)
def test_a_malformed_smtp_url_is_refused_clearly(url) -> None:
    """Anything but smtp:// or smtps:// with a host and a numeric port is a configuration
    error naming the variable."""
    with pytest.raises(ValueError, match="BILLING_SMTP_URL"):
        SMTPSettings.from_url(url)


def test_a_bad_smtp_url_fails_when_the_settings_are_read(monkeypatch) -> None:
    """The mailer's URL is parsed with the other settings, at start-up, not at the first
    e-mail; the password never appears in the message."""
    monkeypatch.setenv("BILLING_SMTP_URL", "smtp://user:s3cret@mail.test:port")
    with pytest.raises(ValueError, match="BILLING_SMTP_URL") as error:
        load_settings()
    assert "s3cret" not in str(error.value)


def test_tax_free_invoices_still_notify(session) -> None:
    """A zero-total invoice is issued and notified like any other."""
    customer = billing_customer(
        session, class_fields={"notification_emails": ["x@y.test"], "tax_rate": Decimal(0)}
    )
    period = close_period(session, customer, dt.date(2026, 3, 19), dt.date(2026, 4, 19))

    generate_invoices(session, [period.id], now=NOW)

    assert session.scalars(select(Notification.status)).all() == ["pending"]


def test_a_worker_with_a_bad_smtp_url_stops_at_start_up_in_one_line() -> None:
    """`celery -A worker worker` with a malformed BILLING_SMTP_URL exits 1 before starting,
    with one line naming the variable (no traceback, no password)."""
    import os
    import subprocess
    import sys

    from tests.support import REPO_ROOT

    env = {**os.environ, "BILLING_SMTP_URL": "smtp://user:s3cret@mail.test:port"}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "intake"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "BILLING_SMTP_URL" in lines[0]
    assert "s3cret" not in done.stderr
