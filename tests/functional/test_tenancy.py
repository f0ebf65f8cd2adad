"""Resellers are tenants: names, keys, classes and invoices kept apart, nothing told across.

Through the real broker and worker (four intake outcomes, the invoices and their e-mail),
and through the services for every refusal that mentions another record.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Invoice, Notification
from models.catalog_file import parse_catalog
from tasks.catalog import load_catalog
from tests.factories import intake_payload
from tests.support import wait_for
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

CATALOG = """
resellers:
  - name: acme
    business_models: [{name: Hosted IP PBX, service_type: voice}]
    customer_classes:
      - name: Business
        tax_name: VAT
        tax_rate: "0.20"
        notification_emails: [billing@acme.example]
        custom_fields: [{name: tax_code, type: string, mandatory: true}]
  - name: northwind
    business_models: [{name: Hosted IP PBX, service_type: voice}]
    customer_classes:
      - name: Business
        tax_name: TVA
        tax_rate: "0.10"
        notification_emails: [factures@northwind.example, audit@northwind.example]
        custom_fields: [{name: tax_code, type: string, mandatory: true}]
"""


def _load(session: Session, text: str = CATALOG) -> None:
    load_catalog(session, parse_catalog(text))
    session.flush()


def _intake(reseller: str, **changes: Any) -> dict[str, Any]:
    defaults = {
        "billing_period": "monthly",
        "billing_timezone": "UTC",
        "created_at": "2026-03-01T00:00:00Z",
        "idempotency_key": "k1",
    }
    return intake_payload(**(defaults | changes | {"reseller": reseller}))


def test_two_resellers_each_have_globex_with_key_k1_and_their_own_class(clean_db, worker) -> None:
    """Four separate outcomes through the worker; each invoice has its own reseller's tax,
    number 1 of its own sequence, and e-mail to its own class's list."""
    from tasks.charges import record_charge_task
    from tasks.closing import close_due_task
    from tasks.intake import create_customer_task

    with unit_of_work() as session:
        _load(session)

    acme = create_customer_task.delay(_intake("acme", name="Globex Corp")).get(timeout=30)
    north = create_customer_task.delay(_intake("northwind", name="GLOBEX CORP")).get(timeout=30)
    acme_again = create_customer_task.delay(_intake("acme", name="Globex Corp")).get(timeout=30)
    north_again = create_customer_task.delay(_intake("NorthWind", name="globex corp")).get(
        timeout=30
    )
    assert acme["status"] == north["status"] == "created", (acme, north)
    assert acme["customer_id"] != north["customer_id"]
    assert "replayed" not in acme
    assert "replayed" not in north
    assert (acme_again["customer_id"], acme_again["replayed"]) == (acme["customer_id"], True)
    assert (north_again["customer_id"], north_again["replayed"]) == (north["customer_id"], True)

    for reseller in ("acme", "northwind"):  # the same charge key, once per reseller
        charge = record_charge_task.delay(
            {
                "reseller": reseller,
                "customer": "globex corp",
                "amount": "100.00",
                "currency": "USD",
                "occurred_at": "2026-03-10T12:00:00Z",
                "description": "Seats",
                "idempotency_key": "c1",
            }
        ).get(timeout=30)
        assert charge["status"] == "recorded", charge
        assert charge["replayed"] is False

    assert close_due_task.delay(as_of="2026-04-01T00:00:00Z").get(timeout=60)["closed"] == 2

    def issued() -> list[Any]:
        with unit_of_work() as session:
            rows = session.execute(
                select(Invoice.customer_id, Invoice.number, Invoice.tax_name, Invoice.tax)
                .where(Invoice.status == "issued")
                .order_by(Invoice.customer_id)
            ).all()
            return rows if len(rows) == 2 else []

    invoices = wait_for(issued, timeout=60, what="both invoices")
    assert [tuple(r) for r in invoices] == [
        (acme["customer_id"], 1, "VAT", Decimal("20.0000")),
        (north["customer_id"], 1, "TVA", Decimal("10.0000")),
    ]
    with unit_of_work() as session:
        sent = session.execute(
            select(Invoice.customer_id, Notification.recipient)
            .join(Invoice, Invoice.id == Notification.invoice_id)
            .order_by(Notification.recipient)
        ).all()
    assert sorted(tuple(r) for r in sent) == sorted(
        [
            (acme["customer_id"], "billing@acme.example"),
            (north["customer_id"], "audit@northwind.example"),
            (north["customer_id"], "factures@northwind.example"),
        ]
    )


# --------------------------------------------------------------------------------------------
# Nothing crosses the boundary

B_CATALOG = """
resellers:
  - name: acme
    business_models: [{name: Hosted IP PBX, service_type: voice}]
    customer_classes:
      - name: Business
        custom_fields: [{name: tax_code, type: string, mandatory: true}]
  - name: zenith-secret
    business_models: [{name: Zenith Hidden Model, service_type: voice}]
    customer_classes:
      - name: Zenith Hidden Class
        notification_emails: [hidden@zenith.example]
        custom_fields: [{name: zenith_hidden_field, type: string, mandatory: false}]
"""


def test_no_refusal_for_reseller_a_names_or_identifies_reseller_b_data(
    clean_db, db_session
) -> None:
    """Every intake, charge and payment refusal that mentions another record, sent by A
    while B has a customer, class, model and keys, contains nothing of B's."""
    from tasks.charges import record_charge, record_payment
    from tasks.intake import create_customer

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    _load(db_session, B_CATALOG)

    def intake(reseller: str, **changes: Any) -> dict[str, Any]:
        return create_customer(db_session, _intake(reseller, **changes), now=now)

    b = {
        "business_model": "Zenith Hidden Model",
        "customer_class": "Zenith Hidden Class",
        "custom_data": {},
    }
    b_customer = intake("zenith-secret", name="Zenith Holdings Secret", idempotency_key="zk-1", **b)
    assert b_customer["status"] == "created"
    b_id = b_customer["customer_id"]

    def money(kind: str, **changes: Any) -> dict[str, Any]:
        body = {
            "reseller": "zenith-secret",
            "customer": "Zenith Holdings Secret",
            "amount": "5.00",
            "currency": "USD",
            "idempotency_key": "zenith-money-key",
            "description": "Zenith usage",
            "occurred_at" if kind == "charge" else "received_at": "2026-05-01T00:00:00Z",
        } | changes
        record = record_charge if kind == "charge" else record_payment
        return record(db_session, body, now=now)

    for kind in ("charge", "payment"):
        assert money(kind)["status"] == "recorded"
    # B's data, as far as A could ever learn it.
    secrets = [
        "zenith",
        "Zenith Holdings Secret",
        "Zenith Hidden Class",
        "Zenith Hidden Model",
        "zenith_hidden_field",
        "hidden@zenith.example",
        "zk-1",
        "zenith-money-key",
    ]

    a_customer = intake("acme", name="Anvil Works", idempotency_key="ak-1")
    assert a_customer["status"] == "created"

    # Every A request whose refusal could mention a record; B's names are sent only where A
    # might guess them, and then the answer must still not confirm them.
    outcomes = {
        "name_taken": intake("acme", name="ANVIL WORKS", idempotency_key="ak-2"),
        "idempotency_key_reused": intake("acme", name="Other Co", idempotency_key="ak-1"),
        "class not_found": intake("acme", name="New Co", customer_class="Zenith Hidden Class"),
        "model not_found": intake("acme", name="New Co", business_model="Zenith Hidden Model"),
        "unknown_custom_field": intake(
            "acme", name="New Co", custom_data={"tax_code": "1", "zenith_hidden_field": "x"}
        ),
        "charge unknown_customer by id": money(
            "charge", reseller="acme", customer=None, customer_id=b_id
        ),
        "payment unknown_customer by id": money(
            "payment", reseller="acme", customer=None, customer_id=b_id
        ),
    }
    for kind in ("charge", "payment"):
        first = money(kind, reseller="acme", customer="Anvil Works", idempotency_key="a-1")
        assert first["status"] == "recorded", first
        outcomes[f"{kind} idempotency_conflict"] = money(
            kind, reseller="acme", customer="Anvil Works", idempotency_key="a-1", amount="6.00"
        )
        outcomes[f"{kind} currency_mismatch"] = money(
            kind, reseller="acme", customer="Anvil Works", idempotency_key="a-2", currency="EUR"
        )
    # A name or key that only B uses is simply free for A.
    assert intake("acme", name="Zenith Holdings Secret", idempotency_key="zk-1")["status"] == (
        "created"
    )
    for kind in ("charge", "payment"):
        free = money(kind, reseller="acme", customer="Anvil Works")  # B's key, A's customer
        assert free["status"] == "recorded", free

    for label, outcome in outcomes.items():
        assert outcome["status"] in {"rejected", "refused"}, (label, outcome)
        text = json.dumps(outcome["errors"]).lower()
        for secret in secrets:
            if secret.lower() in json.dumps(_sent_by_a(label)).lower():
                continue
            assert secret.lower() not in text, (label, secret, outcome)
        assert f"id {b_id}" not in text, (label, outcome)
        assert outcome.get("customer_id") != b_id


def _sent_by_a(label: str) -> list[str]:
    """What A itself typed in the request `label` (it may be echoed back to A)."""
    return {
        "class not_found": ["Zenith Hidden Class"],
        "model not_found": ["Zenith Hidden Model"],
        "unknown_custom_field": ["zenith_hidden_field"],
    }.get(label, [])


def test_a_missing_reseller_is_required_only_when_several_exist(clean_db, db_session) -> None:
    """A charge without `reseller` is taken while one reseller exists, refused once two do."""
    from tasks.charges import record_charge
    from tasks.intake import create_customer

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    _load(db_session, CATALOG.split("  - name: northwind")[0])
    assert create_customer(db_session, _intake("acme"), now=now)["status"] == "created"
    body = {
        "customer": "Globex Corp",
        "amount": "1.00",
        "currency": "USD",
        "occurred_at": "2026-05-01T00:00:00Z",
        "description": "x",
        "idempotency_key": "one",
    }
    assert record_charge(db_session, body, now=now)["status"] == "recorded"
    _load(db_session)
    refused = record_charge(db_session, body | {"idempotency_key": "two"}, now=now)
    assert refused["status"] == "refused"
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [
        ("reseller", "reseller_required")
    ]
