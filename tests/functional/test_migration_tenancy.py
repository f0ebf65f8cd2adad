"""Migration 0007 (reseller tenancy) upgrades a populated database of the previous head.

The database is made at revision 0006_documents (the previous head) by Alembic and filled
through Core with rows of every table, as the code before tenancy wrote them (a class and
business models shared by two resellers, unused entries, charges, payments, ledger, a
block, closed periods, an invoice with lines and a notification, a dead letter). After
`upgrade head` every row is checked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from models.base import ExactDecimal, UTCDateTime
from models.names import name_key
from tests.conftest import ADMIN_DATABASE_URL, TEST_DATABASE
from tests.support import create_database, drop_database
from worker.db import make_engine
from worker.migrate import upgrade

T0 = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MONEY = ExactDecimal(4)
RATE = ExactDecimal(6)


def _t(name: str, *columns: Any) -> sa.TableClause:
    def column(c: Any) -> Any:
        if isinstance(c, sa.ColumnClause):
            return c
        return sa.column(c, MONEY) if c == "amount" else sa.column(c)

    return sa.table(name, *(column(c) for c in columns))


RESELLERS = _t("resellers", "id", "name", "display_name", "last_invoice_number")
MODELS = _t("business_models", "id", "name", "service_type", "description")
CLASSES = _t(
    "customer_classes",
    "id",
    "name",
    "grace_period_days",
    "invoice_template",
    "tax_name",
    sa.column("tax_rate", RATE),
    sa.column("notification_emails", sa.JSON),
    sa.column("custom_fields", sa.JSON),
    sa.column("reminder_days", sa.JSON),
    "suspend_after_days",
)
CUSTOMERS = _t(
    "customers",
    "id",
    "reseller_id",
    "name",
    "business_model_id",
    "customer_class_id",
    "billing_period",
    "billing_timezone",
    "balance_control",
    "currency",
    sa.column("credit_limit", MONEY),
    sa.column("balance", MONEY),
    "blocked",
    sa.column("custom_data", sa.JSON),
    sa.column("created_at", UTCDateTime()),
    "created_local_date",
    sa.column("current_period_start", UTCDateTime()),
    sa.column("current_period_end", UTCDateTime()),
    "intake_key",
)
_MOVE = ("id", "customer_id", "amount", "currency", "description")
CHARGES = _t(
    "charges",
    *_MOVE,
    sa.column("occurred_at", UTCDateTime()),
    "idempotency_key",
    sa.column("recorded_at", UTCDateTime()),
    "invoice_id",
)
PAYMENTS = _t(
    "payments",
    *_MOVE,
    sa.column("received_at", UTCDateTime()),
    "idempotency_key",
    sa.column("recorded_at", UTCDateTime()),
)
LEDGER = _t(
    "ledger_entries",
    "id",
    "customer_id",
    "entry_type",
    "amount",
    sa.column("balance_after", MONEY),
    "charge_id",
    "payment_id",
    sa.column("created_at", UTCDateTime()),
)
PERIODS = _t(
    "closed_periods",
    "id",
    "customer_id",
    sa.column("period_start", UTCDateTime()),
    sa.column("period_end", UTCDateTime()),
    "start_date",
    "end_date",
    "billing_period",
    "billing_timezone",
    sa.column("closed_at", UTCDateTime()),
    sa.column("invoice_enqueued_at", UTCDateTime()),
    "invoiced",
)
INVOICES = _t(
    "invoices",
    "id",
    "closed_period_id",
    "customer_id",
    "reseller_id",
    "number",
    "status",
    "currency",
    sa.column("subtotal", MONEY),
    "tax_name",
    sa.column("tax_rate", RATE),
    sa.column("tax", MONEY),
    sa.column("total", MONEY),
    sa.column("period_start", UTCDateTime()),
    sa.column("period_end", UTCDateTime()),
    "covered_from",
    "covered_to",
    "issue_date",
    "due_date",
    "document_html",
    sa.column("issued_at", UTCDateTime()),
)
LINES = _t(
    "invoice_lines",
    "id",
    "invoice_id",
    "charge_id",
    "description",
    "amount",
    sa.column("occurred_at", UTCDateTime()),
)
NOTIFICATIONS = _t(
    "notifications",
    "id",
    "invoice_id",
    "recipient",
    "subject",
    "body_text",
    "status",
    "attempts",
    sa.column("created_at", UTCDateTime()),
)
BLOCKS = _t(
    "customer_blocks", "id", "customer_id", "reason", sa.column("since", UTCDateTime()), "note"
)
DEAD = _t(
    "dead_letters",
    "id",
    sa.column("received_at", UTCDateTime()),
    "queue",
    "task",
    "task_id",
    "reason_code",
    "reason",
    "body",
    "headers",
)
PREVIOUS_HEAD = "0006_documents"
UNCHANGED = [LEDGER, PERIODS, INVOICES, LINES, NOTIFICATIONS, BLOCKS, DEAD]


def _customer(i: int, reseller: int, name: str, model: int, cls: int, **more: Any) -> dict:
    return {
        "id": i,
        "reseller_id": reseller,
        "name": name,
        "business_model_id": model,
        "customer_class_id": cls,
        "billing_period": "monthly",
        "billing_timezone": "Europe/Paris",
        "balance_control": "postpaid",
        "currency": "EUR",
        "credit_limit": Decimal("500.0000"),
        "balance": Decimal(0),
        "blocked": False,
        "custom_data": {"tax_code": f"T{i}"},
        "created_at": T0,
        "created_local_date": T0.date(),
        "current_period_start": T1,
        "current_period_end": T1 + dt.timedelta(days=30),
        "intake_key": None,
    } | more


def _populate(conn: sa.Connection, *, clash: bool = False) -> None:
    resellers = [
        {"id": 1, "name": "acme", "display_name": "ACME", "last_invoice_number": 1},
        {"id": 2, "name": "northwind", "display_name": "Northwind", "last_invoice_number": 0},
        {"id": 3, "name": "quiet", "display_name": "Quiet Ltd", "last_invoice_number": 0},
    ]
    if clash:
        resellers.append(
            {"id": 4, "name": "ACME", "display_name": "Shouty", "last_invoice_number": 0}
        )
    conn.execute(RESELLERS.insert(), resellers)
    conn.execute(
        MODELS.insert(),
        [
            {"id": 1, "name": "Hosted IP PBX", "service_type": "voice", "description": "PBX"},
            {"id": 2, "name": "Internet access", "service_type": "data", "description": ""},
            {"id": 3, "name": "Satellite", "service_type": "tv", "description": "unused"},
        ],
    )
    conn.execute(
        CLASSES.insert(),
        [
            {
                "id": 1,
                "name": "Business",
                "grace_period_days": 15,
                "invoice_template": "default.html",
                "tax_name": "VAT",
                "tax_rate": Decimal("0.200000"),
                "notification_emails": ["billing@acme.example"],
                "custom_fields": [{"name": "tax_code", "type": "string", "mandatory": True}],
                "reminder_days": [7, 1],
                "suspend_after_days": 10,
            },
            {
                "id": 2,
                "name": "Residential",
                "grace_period_days": 7,
                "invoice_template": "default.html",
                "tax_name": "Sales tax",
                "tax_rate": Decimal("0.088750"),
                "notification_emails": [],
                "custom_fields": [],
                "reminder_days": [],
                "suspend_after_days": None,
            },
            {
                "id": 3,
                "name": "Dormant",
                "grace_period_days": 0,
                "invoice_template": "default.html",
                "tax_name": "Tax",
                "tax_rate": Decimal(0),
                "notification_emails": [],
                "custom_fields": [],
                "reminder_days": [],
                "suspend_after_days": None,
            },
        ],
    )
    conn.execute(
        CUSTOMERS.insert(),
        [
            _customer(1, 1, "Globex Corp", 1, 1, intake_key="k1"),
            _customer(2, 1, "Émile SA", 2, 1),
            _customer(
                3,
                2,
                "Café Lumière",
                2,
                2,
                intake_key="k2",
                balance_control="prepaid",
                credit_limit=None,
                balance=Decimal("20.0000"),
            ),
            _customer(4, 2, "Straße GmbH", 1, 1, intake_key="task:abc"),
        ],
    )
    conn.execute(
        CHARGES.insert(),
        [
            {
                "id": 1,
                "customer_id": 1,
                "amount": Decimal("12.5000"),
                "currency": "EUR",
                "description": "Calls",
                "occurred_at": T0 + dt.timedelta(days=3),
                "idempotency_key": "c1",
                "recorded_at": T0,
                "invoice_id": None,
            },
            {
                "id": 2,
                "customer_id": 1,
                "amount": Decimal("7.5000"),
                "currency": "EUR",
                "description": "Seats",
                "occurred_at": T1 + dt.timedelta(days=2),
                "idempotency_key": "c2",
                "recorded_at": T1,
                "invoice_id": None,
            },
            {
                "id": 3,
                "customer_id": 3,
                "amount": Decimal("5.0000"),
                "currency": "EUR",
                "description": "Data",
                "occurred_at": T1 + dt.timedelta(days=1),
                "idempotency_key": "c1",
                "recorded_at": T1,
                "invoice_id": None,
            },
        ],
    )
    conn.execute(
        PAYMENTS.insert(),
        [
            {
                "id": 1,
                "customer_id": 1,
                "amount": Decimal("10.0000"),
                "currency": "EUR",
                "description": "Wire",
                "received_at": T1,
                "idempotency_key": "p1",
                "recorded_at": T1,
            },
            {
                "id": 2,
                "customer_id": 3,
                "amount": Decimal("25.0000"),
                "currency": "EUR",
                "description": "",
                "received_at": T0,
                "idempotency_key": "p1",
                "recorded_at": T0,
            },
        ],
    )
    conn.execute(
        LEDGER.insert(),
        [
            {
                "id": 1,
                "customer_id": 3,
                "entry_type": "opening",
                "amount": Decimal(0),
                "balance_after": Decimal(0),
                "charge_id": None,
                "payment_id": None,
                "created_at": T0,
            },
            {
                "id": 2,
                "customer_id": 3,
                "entry_type": "payment",
                "amount": Decimal(25),
                "balance_after": Decimal(25),
                "charge_id": None,
                "payment_id": 2,
                "created_at": T0,
            },
            {
                "id": 3,
                "customer_id": 1,
                "entry_type": "charge",
                "amount": Decimal("12.5"),
                "balance_after": Decimal("12.5"),
                "charge_id": 1,
                "payment_id": None,
                "created_at": T0,
            },
            {
                "id": 4,
                "customer_id": 1,
                "entry_type": "charge",
                "amount": Decimal("7.5"),
                "balance_after": Decimal(20),
                "charge_id": 2,
                "payment_id": None,
                "created_at": T1,
            },
            {
                "id": 5,
                "customer_id": 1,
                "entry_type": "payment",
                "amount": Decimal(-10),
                "balance_after": Decimal(10),
                "charge_id": None,
                "payment_id": 1,
                "created_at": T1,
            },
            {
                "id": 6,
                "customer_id": 3,
                "entry_type": "charge",
                "amount": Decimal(-5),
                "balance_after": Decimal(20),
                "charge_id": 3,
                "payment_id": None,
                "created_at": T1,
            },
        ],
    )
    conn.execute(
        PERIODS.insert(),
        [
            {
                "id": 1,
                "customer_id": 1,
                "period_start": T0,
                "period_end": T1,
                "start_date": T0.date(),
                "end_date": T1.date(),
                "billing_period": "monthly",
                "billing_timezone": "Europe/Paris",
                "closed_at": T1,
                "invoice_enqueued_at": T1,
                "invoiced": True,
            },
            {
                "id": 2,
                "customer_id": 3,
                "period_start": T0,
                "period_end": T1,
                "start_date": T0.date(),
                "end_date": T1.date(),
                "billing_period": "monthly",
                "billing_timezone": "Europe/Paris",
                "closed_at": T1,
                "invoice_enqueued_at": None,
                "invoiced": False,
            },
        ],
    )
    conn.execute(
        INVOICES.insert(),
        [
            {
                "id": 1,
                "closed_period_id": 1,
                "customer_id": 1,
                "reseller_id": 1,
                "number": 1,
                "status": "issued",
                "currency": "EUR",
                "subtotal": Decimal("12.5"),
                "tax_name": "VAT",
                "tax_rate": Decimal("0.2"),
                "tax": Decimal("2.5"),
                "total": Decimal(15),
                "period_start": T0,
                "period_end": T1,
                "covered_from": T0.date(),
                "covered_to": (T1 - dt.timedelta(days=1)).date(),
                "issue_date": T1.date(),
                "due_date": (T1 + dt.timedelta(days=15)).date(),
                "document_html": "<html>1</html>",
                "issued_at": T1,
            },
        ],
    )
    conn.execute(CHARGES.update().where(CHARGES.c.id == 1).values(invoice_id=1))
    conn.execute(
        LINES.insert(),
        [
            {
                "id": 1,
                "invoice_id": 1,
                "charge_id": 1,
                "description": "Calls",
                "amount": Decimal("12.5"),
                "occurred_at": T0 + dt.timedelta(days=3),
            }
        ],
    )
    conn.execute(
        NOTIFICATIONS.insert(),
        [
            {
                "id": 1,
                "invoice_id": 1,
                "recipient": "billing@acme.example",
                "subject": "Invoice 1",
                "body_text": "Hello",
                "status": "sent",
                "attempts": 1,
                "created_at": T1,
            }
        ],
    )
    conn.execute(
        BLOCKS.insert(),
        [{"id": 1, "customer_id": 3, "reason": "no_funds", "since": T1, "note": "empty"}],
    )
    conn.execute(
        DEAD.insert(),
        [
            {
                "id": 1,
                "received_at": T1,
                "queue": "intake",
                "task": "billing.customers.create",
                "task_id": "t-1",
                "reason_code": "undecodable",
                "reason": "not JSON",
                "body": "\\xff",
                "headers": "{}",
            }
        ],
    )
    if conn.dialect.name == "postgresql":  # the rows above gave their ids explicitly
        for table in (RESELLERS, MODELS, CLASSES, CUSTOMERS, CHARGES, PAYMENTS, *UNCHANGED):
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                    f" (SELECT max(id) FROM {table.name}))"
                )
            )


def _dump(conn: sa.Connection, table: sa.TableClause) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_previous_head(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of either backend at the revision before tenancy."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'billing.db'}"
        upgrade(url, PREVIOUS_HEAD)
        yield url
        return
    name = f"{TEST_DATABASE}_mig"
    create_database(ADMIN_DATABASE_URL, name)
    url = make_url(ADMIN_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url, PREVIOUS_HEAD)
        yield url
    finally:
        drop_database(ADMIN_DATABASE_URL, name)


def test_a_populated_database_upgrades_with_every_row_kept(url_at_previous_head: str) -> None:
    """Every row survives; shared classes and models are copied per reseller, customers
    point at their own reseller's copy, keys are filled and scoped per reseller."""
    engine = make_engine(url_at_previous_head)
    with engine.begin() as conn:
        _populate(conn)
        before = {t.name: _dump(conn, t) for t in [*UNCHANGED, CUSTOMERS, CHARGES, PAYMENTS]}
        old_classes = {r.id: r for r in conn.execute(sa.select(CLASSES))}
        old_models = {r.id: r for r in conn.execute(sa.select(MODELS))}
        old_resellers = _dump(conn, RESELLERS)
    engine.dispose()

    upgrade(url_at_previous_head)

    engine = make_engine(url_at_previous_head)
    with engine.connect() as conn:
        for table in UNCHANGED:  # not a column, nor a row, changed
            assert _dump(conn, table) == before[table.name], table.name
        for table in (CUSTOMERS, CHARGES, PAYMENTS):  # the 0001 columns are as they were,
            rows = _dump(conn, table)  # except each customer's (re-pointed) catalog ids
            if table is not CUSTOMERS:
                assert rows == before[table.name], table.name
            else:
                strip = [3, 4]
                assert [tuple(v for i, v in enumerate(r) if i not in strip) for r in rows] == [
                    tuple(v for i, v in enumerate(r) if i not in strip) for r in before["customers"]
                ]
        assert _dump(conn, RESELLERS) == old_resellers
        keys = dict(conn.execute(sa.text("SELECT name, name_key FROM resellers")).all())
        assert keys == {"acme": "acme", "northwind": "northwind", "quiet": "quiet"}

        customers = conn.execute(
            sa.text(
                "SELECT c.id, c.name, c.name_key, c.reseller_id, cc.reseller_id AS class_owner,"
                " cc.name AS class_name, bm.reseller_id AS model_owner, bm.name AS model_name,"
                " c.intake_key FROM customers c"
                " JOIN customer_classes cc ON cc.id = c.customer_class_id"
                " JOIN business_models bm ON bm.id = c.business_model_id ORDER BY c.id"
            )
        ).all()
        old_customers = {r[0]: r for r in before["customers"]}
        for row in customers:
            old = old_customers[row.id]
            assert row.name_key == name_key(row.name)
            assert row.class_owner == row.reseller_id == row.model_owner
            assert row.class_name == old_classes[old[4]].name
            assert row.model_name == old_models[old[3]].name
        assert [r.name_key for r in customers] == [
            "globex corp",
            "émile sa",
            "café lumière",
            "strasse gmbh",
        ]

        classes = conn.execute(
            sa.text(
                "SELECT id, reseller_id, name, name_key, tax_rate, notification_emails,"
                " grace_period_days, tax_name, invoice_template, custom_fields, reminder_days,"
                " suspend_after_days"
                " FROM customer_classes ORDER BY name, reseller_id"
            )
        ).all()
        # Used ones go to their users (lowest keeps the id); the unused one to everyone.
        assert [(c.name, c.reseller_id) for c in classes] == [
            ("Business", 1),
            ("Business", 2),
            ("Dormant", 1),
            ("Dormant", 2),
            ("Dormant", 3),
            ("Residential", 2),
        ]
        assert {(c.name, c.reseller_id): c.id for c in classes if c.id <= 3} == {
            ("Business", 1): 1,
            ("Residential", 2): 2,
            ("Dormant", 1): 3,
        }
        business = [c for c in classes if c.name == "Business"]
        assert business[0][4:] == business[1][4:]  # the copy has every field of the original
        models = conn.execute(
            sa.text(
                "SELECT name, reseller_id, name_key FROM business_models ORDER BY name, reseller_id"
            )
        ).all()
        assert [(m.name, m.reseller_id) for m in models] == [
            ("Hosted IP PBX", 1),
            ("Hosted IP PBX", 2),
            ("Internet access", 1),
            ("Internet access", 2),
            ("Satellite", 1),
            ("Satellite", 2),
            ("Satellite", 3),
        ]
        for table in ("charges", "payments"):
            scoped = conn.execute(
                sa.text(
                    f"SELECT t.reseller_id, c.reseller_id FROM {table} t"
                    " JOIN customers c ON c.id = t.customer_id"
                )
            ).all()
            assert scoped
            assert all(mine == theirs for mine, theirs in scoped)
    engine.dispose()

    _new_rules_hold(url_at_previous_head)


def _new_rules_hold(url: str) -> None:
    """After the upgrade: names and keys are unique per reseller, by key, on this backend."""
    engine = make_engine(url)
    row = _customer(10, 1, "GLOBEX CORP", 1, 1)
    del row["id"]
    row["name_key"] = name_key(row["name"])
    table = sa.table("customers", *(sa.column(k) for k in row))
    with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError), conn.begin():
            conn.execute(table.insert().values(**_typed(row)))
        with conn.begin():  # the same name under another reseller (its own class) is fine
            conn.execute(
                table.insert().values(
                    **_typed(
                        row | {"reseller_id": 3, "customer_class_id": 3, "business_model_id": 3}
                    )
                )
            )
        with pytest.raises(sa.exc.IntegrityError), conn.begin():  # k1 is acme's already
            conn.execute(
                table.insert().values(
                    **_typed(row | {"name": "Other", "name_key": "other", "intake_key": "k1"})
                )
            )
    engine.dispose()


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    types = {c.name: c.type for c in CUSTOMERS.c}
    return {k: sa.bindparam(k, v, type_=types.get(k)) for k, v in row.items()}


def test_resellers_that_differ_only_by_case_stop_the_upgrade_by_name(
    url_at_previous_head: str,
) -> None:
    """`acme` and `ACME` are not merged silently: the upgrade fails naming both, and the
    database stays at the previous revision with its rows."""
    from worker.migrate import current_revision

    engine = make_engine(url_at_previous_head)
    with engine.begin() as conn:
        _populate(conn, clash=True)
    with pytest.raises(Exception, match=r"'ACME' and 'acme'"):
        upgrade(url_at_previous_head)
    assert current_revision(engine) == PREVIOUS_HEAD
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 4
        assert "name_key" not in {c["name"] for c in sa.inspect(conn).get_columns("resellers")}
    engine.dispose()
