"""Schema revisions upgrade a populated database, on PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from models.base import ExactDecimal, UTCDateTime
from tests.support import create_database, drop_database
from worker.db import make_engine
from worker.migrate import upgrade

pytestmark = pytest.mark.functional

CREATED = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
LAST_CHARGE = dt.datetime(2026, 3, 20, 17, 45, tzinfo=dt.UTC)
FEB = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)

# The tables as revision 0001 wrote them, so the rows below do not depend on today's models.
RESELLERS = sa.table("resellers", sa.column("id"), sa.column("name"), sa.column("display_name"))
MODELS = sa.table(
    "business_models",
    sa.column("id"),
    sa.column("name"),
    sa.column("service_type"),
    sa.column("description"),
)
CLASSES = sa.table(
    "customer_classes",
    sa.column("id"),
    sa.column("name"),
    sa.column("invoice_template"),
    sa.column("tax_name"),
    sa.column("tax_rate", ExactDecimal(6)),
    sa.column("notification_emails", sa.JSON()),
    sa.column("custom_fields", sa.JSON()),
)
CUSTOMERS = sa.table(
    "customers",
    sa.column("id"),
    sa.column("reseller_id"),
    sa.column("name"),
    sa.column("business_model_id"),
    sa.column("customer_class_id"),
    sa.column("billing_period"),
    sa.column("billing_timezone"),
    sa.column("balance_control"),
    sa.column("currency"),
    sa.column("credit_limit", ExactDecimal(4)),
    sa.column("balance", ExactDecimal(4)),
    sa.column("blocked", sa.Boolean()),
    sa.column("custom_data", sa.JSON()),
    sa.column("created_at", UTCDateTime()),
    sa.column("created_local_date", sa.Date()),
    sa.column("current_period_start", UTCDateTime()),
    sa.column("current_period_end", UTCDateTime()),
)
LEDGER = sa.table(
    "ledger_entries",
    sa.column("customer_id"),
    sa.column("entry_type"),
    sa.column("amount", ExactDecimal(4)),
    sa.column("balance_after", ExactDecimal(4)),
    sa.column("created_at", UTCDateTime()),
)
PERIODS = sa.table(
    "closed_periods",
    sa.column("id"),
    sa.column("customer_id"),
    sa.column("period_start", UTCDateTime()),
    sa.column("period_end", UTCDateTime()),
    sa.column("start_date", sa.Date()),
    sa.column("end_date", sa.Date()),
    sa.column("billing_period"),
    sa.column("billing_timezone"),
    sa.column("closed_at", UTCDateTime()),
    sa.column("invoiced", sa.Boolean()),
)
INVOICES = sa.table(
    "invoices",
    sa.column("id"),
    sa.column("closed_period_id"),
    sa.column("customer_id"),
    sa.column("reseller_id"),
    sa.column("number"),
    sa.column("status"),
    sa.column("currency"),
    sa.column("subtotal", ExactDecimal(4)),
    sa.column("tax_name"),
    sa.column("tax_rate", ExactDecimal(6)),
    sa.column("tax", ExactDecimal(4)),
    sa.column("total", ExactDecimal(4)),
    sa.column("period_start", UTCDateTime()),
    sa.column("period_end", UTCDateTime()),
    sa.column("covered_from", sa.Date()),
    sa.column("covered_to", sa.Date()),
    sa.column("issue_date", sa.Date()),
    sa.column("due_date", sa.Date()),
    sa.column("issued_at", UTCDateTime()),
)
CHARGES = sa.table(
    "charges",
    sa.column("id"),
    sa.column("customer_id"),
    sa.column("amount", ExactDecimal(4)),
    sa.column("currency"),
    sa.column("occurred_at", UTCDateTime()),
    sa.column("description"),
    sa.column("idempotency_key"),
    sa.column("recorded_at", UTCDateTime()),
    sa.column("invoice_id"),
)
LINES = sa.table(
    "invoice_lines",
    sa.column("invoice_id"),
    sa.column("charge_id"),
    sa.column("description"),
    sa.column("amount", ExactDecimal(4)),
)
NOTIFICATIONS = sa.table(
    "notifications",
    sa.column("invoice_id"),
    sa.column("recipient"),
    sa.column("subject"),
    sa.column("body_text"),
    sa.column("status"),
    sa.column("attempts"),
    sa.column("created_at", UTCDateTime()),
)
PAYMENTS = sa.table(
    "payments",
    sa.column("id"),
    sa.column("customer_id"),
    sa.column("amount", ExactDecimal(4)),
    sa.column("currency"),
    sa.column("received_at", UTCDateTime()),
    sa.column("description"),
    sa.column("idempotency_key"),
    sa.column("recorded_at", UTCDateTime()),
)
APPLICATIONS = sa.table(
    "invoice_applications",
    sa.column("invoice_id"),
    sa.column("source"),
    sa.column("amount", ExactDecimal(4)),
)
PAYMENT_REST = sa.table("payments", sa.column("id"), sa.column("unapplied", ExactDecimal(4)))
BLOCKS = sa.table(
    "customer_blocks",
    sa.column("customer_id"),
    sa.column("reason"),
    sa.column("since", UTCDateTime()),
)


def _customer(customer_id: int, name: str, control: str, blocked: bool) -> dict[str, object]:
    return {
        "id": customer_id,
        "reseller_id": 1,
        "name": name,
        "business_model_id": 1,
        "customer_class_id": 1,
        "billing_period": "monthly",
        "billing_timezone": "UTC",
        "balance_control": control,
        "currency": "USD",
        "credit_limit": Decimal("100.00") if control == "postpaid" else None,
        "balance": Decimal("120.00") if control == "postpaid" else Decimal(0),
        "blocked": blocked,
        "custom_data": {},
        "created_at": CREATED,
        "created_local_date": CREATED.date(),
        "current_period_start": CREATED,
        "current_period_end": dt.datetime(2026, 4, 1, tzinfo=dt.UTC),
    }


def _invoice(invoice_id: int, customer_id: int, total: str) -> dict[str, object]:
    return {
        "id": invoice_id,
        "closed_period_id": invoice_id,
        "customer_id": customer_id,
        "reseller_id": 1,
        "number": invoice_id,
        "status": "issued",
        "currency": "USD",
        "subtotal": Decimal(total),
        "tax_name": "Tax",
        "tax_rate": Decimal(0),
        "tax": Decimal(0),
        "total": Decimal(total),
        "period_start": FEB,
        "period_end": CREATED,
        "covered_from": FEB.date(),
        "covered_to": dt.date(2026, 2, 28),
        "issue_date": CREATED.date(),
        "due_date": CREATED.date(),
        "issued_at": CREATED,
    }


def _populate_invoices(conn: sa.Connection) -> None:
    """Two invoices as 0001 issued them (a postpaid and a prepaid one), with a charge, its
    line and the invoice e-mail; a postpaid payment and a prepaid top-up."""
    conn.execute(
        PERIODS.insert(),
        [
            {
                "id": i,
                "customer_id": customer_id,
                "period_start": FEB,
                "period_end": CREATED,
                "start_date": FEB.date(),
                "end_date": CREATED.date(),
                "billing_period": "monthly",
                "billing_timezone": "UTC",
                "closed_at": CREATED,
                "invoiced": True,
            }
            for i, customer_id in ((1, 3), (2, 2))
        ],
    )
    conn.execute(INVOICES.insert(), [_invoice(1, 3, "40.00"), _invoice(2, 2, "15.00")])
    conn.execute(
        CHARGES.insert(),
        {
            "id": 1,
            "customer_id": 3,
            "amount": Decimal("40.00"),
            "currency": "USD",
            "occurred_at": FEB,
            "description": "Calls",
            "idempotency_key": "c1",
            "recorded_at": FEB,
            "invoice_id": 1,
        },
    )
    conn.execute(
        LINES.insert(),
        {"invoice_id": 1, "charge_id": 1, "description": "Calls", "amount": Decimal("40.00")},
    )
    conn.execute(
        NOTIFICATIONS.insert(),
        {
            "invoice_id": 1,
            "recipient": "ar@acme.test",
            "subject": "Invoice 1",
            "body_text": "…",
            "status": "sent",
            "attempts": 1,
            "created_at": CREATED,
        },
    )
    conn.execute(
        PAYMENTS.insert(),
        [
            {
                "id": i,
                "customer_id": customer_id,
                "amount": Decimal(amount),
                "currency": "USD",
                "received_at": LAST_CHARGE,
                "description": "",
                "idempotency_key": f"p{i}",
                "recorded_at": LAST_CHARGE,
            }
            for i, customer_id, amount in ((1, 3, "25.00"), (2, 2, "10.00"))
        ],
    )


def _populate_0001(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(RESELLERS.insert(), {"id": 1, "name": "acme", "display_name": "Acme"})
        conn.execute(
            MODELS.insert(),
            {"id": 1, "name": "PBX", "service_type": "voice", "description": ""},
        )
        conn.execute(
            CLASSES.insert(),
            {
                "id": 1,
                "name": "Business",
                "invoice_template": "default.html",
                "tax_name": "Tax",
                "tax_rate": Decimal(0),
                "notification_emails": [],
                "custom_fields": [],
            },
        )
        conn.execute(
            CUSTOMERS.insert(),
            [
                _customer(1, "Over the limit", "postpaid", True),
                _customer(2, "Out of funds", "prepaid", True),
                _customer(3, "In good standing", "postpaid", False),
            ],
        )
        conn.execute(
            LEDGER.insert(),
            [
                {
                    "customer_id": 1,
                    "entry_type": "charge",
                    "amount": amount,
                    "balance_after": after,
                    "created_at": at,
                }
                for amount, after, at in (
                    (Decimal("60.00"), Decimal("60.00"), CREATED + dt.timedelta(days=1)),
                    (Decimal("60.00"), Decimal("120.00"), LAST_CHARGE),
                )
            ],
        )
        _populate_invoices(conn)


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The URL of an empty scratch database (PostgreSQL, or an embedded SQLite file)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/billing.sqlite3"
        return
    # The run's own test database serves as the admin connection for a scratch one.
    admin = request.getfixturevalue("database_url")
    url = make_url(admin)
    name = f"{url.database}_migrations"
    create_database(admin, name)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(admin, name)


def test_the_block_reasons_revision_records_why_each_blocked_customer_is_blocked(
    database,
) -> None:
    """Blocked postpaid customers get credit_limit, prepaid no_funds, since their last change."""
    upgrade(database, "0001")
    engine = make_engine(database)
    try:
        _populate_0001(engine)
        upgrade(database, "0002_customer_blocks")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(BLOCKS.c.customer_id, BLOCKS.c.reason, BLOCKS.c.since).order_by(
                    BLOCKS.c.customer_id
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            (1, "credit_limit", LAST_CHARGE),
            (2, "no_funds", CREATED),
        ]
        upgrade(database)  # and every later revision on top of the populated schema
    finally:
        engine.dispose()


def test_the_collections_revision_settles_what_was_paid_before_it(database) -> None:
    """On a populated database: the prepaid invoice is paid from funds, the postpaid payment
    becomes credit (the top-up does not), and the first collection run applies that credit
    to the open invoice; invoice lines and e-mails keep working."""
    from sqlalchemy.orm import Session

    from tasks.collections import run_collections

    upgrade(database, "0001")
    engine = make_engine(database)
    try:
        _populate_0001(engine)
        upgrade(database)
        with engine.connect() as conn:
            applied = conn.execute(sa.select(APPLICATIONS.c.invoice_id, APPLICATIONS.c.source))
            assert [tuple(r) for r in applied] == [(2, "prepaid_funds")]
            rests = conn.execute(sa.select(PAYMENT_REST).order_by(PAYMENT_REST.c.id)).all()
            assert [tuple(r) for r in rests] == [(1, Decimal("25.00")), (2, Decimal(0))]
            settled = sa.table("invoices", sa.column("id"), sa.column("settled_at", UTCDateTime()))
            marks = conn.execute(sa.select(settled).order_by(settled.c.id)).all()
            assert [tuple(r) for r in marks] == [(1, None), (2, CREATED)]
        with Session(engine) as session:
            summary = run_collections(session, now=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
            session.commit()
        assert summary.credit_applied == Decimal("25.00")
        with engine.connect() as conn:
            amounts = conn.execute(
                sa.select(APPLICATIONS.c.invoice_id, APPLICATIONS.c.amount).order_by(
                    APPLICATIONS.c.invoice_id
                )
            ).all()
            assert [tuple(r) for r in amounts] == [(1, Decimal("25.00")), (2, Decimal("15.00"))]
    finally:
        engine.dispose()


def test_the_set_based_invoicing_revision_keeps_the_outbox_and_its_downgrade_fills_texts(
    database,
) -> None:
    """0008 on a populated database keeps every outbox row's text and lets an invoice's
    rows wait without one (the mailer composes it); its downgrade writes a text into the
    rows still without one, so the NOT NULL columns come back with nothing lost."""
    from alembic import command

    from worker.migrate import alembic_config

    upgrade(database, "0001")
    engine = make_engine(database)
    try:
        _populate_0001(engine)
        upgrade(database)
        with engine.begin() as conn:
            kept = conn.execute(sa.select(NOTIFICATIONS.c.subject, NOTIFICATIONS.c.body_text))
            assert [tuple(r) for r in kept] == [("Invoice 1", "…")]
            conn.execute(
                NOTIFICATIONS.insert(),
                {
                    "invoice_id": 1,
                    "recipient": "ops@acme.test",
                    "subject": None,
                    "body_text": None,
                    "status": "pending",
                    "attempts": 0,
                    "created_at": CREATED,
                },
            )
        names = {index["name"] for index in sa.inspect(engine).get_indexes("charges")}
        assert "ix_charges_uninvoiced" in names
        command.downgrade(alembic_config(database), "0007_reseller_tenancy")
        with engine.connect() as conn:
            texts = conn.execute(
                sa.select(NOTIFICATIONS.c.recipient, NOTIFICATIONS.c.subject).order_by(
                    NOTIFICATIONS.c.recipient
                )
            ).all()
            assert [tuple(r) for r in texts] == [
                ("ar@acme.test", "Invoice 1"),
                ("ops@acme.test", "Invoice 1"),
            ]
            body = conn.scalar(
                sa.select(NOTIFICATIONS.c.body_text).where(
                    NOTIFICATIONS.c.recipient == "ops@acme.test"
                )
            )
            assert body is not None
            assert body.startswith("Invoice 1: ")
        names = {index["name"] for index in sa.inspect(engine).get_indexes("charges")}
        assert "ix_charges_uninvoiced" not in names
        upgrade(database)  # and back up again
    finally:
        engine.dispose()
