"""The intake and catalog services against the real PostgreSQL (rolled back after each test)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from models import BlockReason, BusinessModel, Customer, CustomerClass, LedgerEntry, Reseller
from models.catalog_file import parse_catalog
from models.periods import first_period
from tasks.blocks import block_reasons
from tasks.catalog import load_catalog
from tasks.intake import create_customer
from tests.factories import DROP, intake_payload

pytestmark = pytest.mark.functional

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"
NOW = dt.datetime(2026, 3, 19, 3, 30, tzinfo=dt.UTC)  # still March 18 in New York


@pytest.fixture
def empty_session(clean_db, db_session):  # type: ignore[no-untyped-def]
    """A rolled-back session on empty tables (other tests commit rows and leave them)."""
    return db_session


@pytest.fixture
def session(empty_session):  # type: ignore[no-untyped-def]
    db_session = empty_session
    load_catalog(db_session, parse_catalog(EXAMPLE.read_text()))
    return db_session


def payload(**changes: Any) -> dict[str, Any]:
    """A valid job with a custom field given as text (as CSV cells are); None drops a key."""
    changes = {k: DROP if v is None else v for k, v in changes.items()}
    return intake_payload(**{"custom_data": {"tax_code": "X1", "seats": "25"}, **changes})


def count(session, model) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(model))


def test_a_customer_is_stored_with_its_first_period_in_its_timezone(session) -> None:
    """The customer row holds the catalog ids, the local creation date and the engine's period."""
    result = create_customer(session, payload(), now=NOW)

    customer = session.get(Customer, result["customer_id"])
    assert result["status"] == "created"
    assert customer.name == "Globex Corp"
    assert customer.reseller_id == session.scalar(
        select(Reseller.id).where(Reseller.name == "acme")
    )
    assert customer.created_at == NOW
    assert customer.created_local_date == dt.date(2026, 3, 18)
    expected = first_period("monthly_anniversary", dt.date(2026, 3, 18), "America/New_York")
    assert customer.current_period_start == expected.start
    assert customer.current_period_end == expected.end
    assert customer.current_period_end == dt.datetime(2026, 4, 18, 4, 0, tzinfo=dt.UTC)
    assert result["first_period"] == {
        "start": "2026-03-18T04:00:00Z",
        "end": "2026-04-18T04:00:00Z",
        "first_day": "2026-03-18",
        "last_day": "2026-04-17",
    }
    assert customer.custom_data == {"tax_code": "X1", "seats": 25}
    assert (customer.balance, customer.credit_limit, customer.blocked) == (
        Decimal(0),
        Decimal("500.00"),
        False,
    )
    assert count(session, LedgerEntry) == 0


def test_a_prepaid_customer_gets_an_opening_ledger_entry(session) -> None:
    """Available funds become the balance and an opening ledger entry that sums to it."""
    result = create_customer(
        session,
        payload(balance_control="prepaid", credit_limit=None, available_funds="100.00"),
        now=NOW,
    )

    customer = session.get(Customer, result["customer_id"])
    entries = session.scalars(select(LedgerEntry)).all()
    assert (customer.balance, customer.credit_limit, customer.blocked) == (
        Decimal("100.00"),
        None,
        False,
    )
    assert [(e.entry_type, e.amount, e.balance_after) for e in entries] == [
        ("opening", Decimal("100.00"), Decimal("100.00"))
    ]
    assert entries[0].customer_id == customer.id


def test_a_prepaid_customer_without_funds_starts_blocked(session) -> None:
    """Prepaid at zero funds is blocked from the start."""
    result = create_customer(
        session, payload(balance_control="prepaid", credit_limit=None), now=NOW
    )

    customer = session.get(Customer, result["customer_id"])
    assert (customer.balance, customer.blocked) == (Decimal(0), True)
    assert block_reasons(session, customer.id) == {BlockReason.NO_FUNDS: NOW}


def test_a_postpaid_customer_without_credit_limit_has_no_limit(session) -> None:
    """Leaving credit_limit out stores no limit."""
    result = create_customer(session, payload(credit_limit=None), now=NOW)

    assert session.get(Customer, result["customer_id"]).credit_limit is None


def test_a_taken_name_is_rejected_ignoring_case_and_nothing_is_stored(session) -> None:
    """A second customer whose name differs only in case is rejected as name_taken."""
    create_customer(session, payload(), now=NOW)

    result = create_customer(session, payload(name=" GLOBEX corp "), now=NOW)

    assert result["status"] == "rejected"
    assert [(e["field"], e["code"]) for e in result["errors"]] == [("name", "name_taken")]
    assert count(session, Customer) == 1


def test_a_repeated_idempotency_key_returns_the_original_outcome(session) -> None:
    """The same key again creates nothing and returns the first customer, marked replayed."""
    first = create_customer(session, payload(idempotency_key="order-1"), now=NOW)
    again = create_customer(
        session, payload(idempotency_key="order-1"), now=NOW + dt.timedelta(days=40)
    )

    assert again == {**first, "replayed": True}
    assert count(session, Customer) == 1


def test_a_key_reused_for_another_customer_is_rejected(session) -> None:
    """A key that created one customer cannot silently stand for a different one."""
    create_customer(session, payload(idempotency_key="order-1"), now=NOW)

    result = create_customer(session, payload(name="Initech", idempotency_key="order-1"), now=NOW)

    assert [(e["field"], e["code"]) for e in result["errors"]] == [
        ("idempotency_key", "idempotency_key_reused")
    ]
    assert count(session, Customer) == 1


def test_a_rejected_request_does_not_burn_its_idempotency_key(session) -> None:
    """After a rejection, a corrected request with the same key succeeds."""
    bad = create_customer(session, payload(currency="usd", idempotency_key="order-2"), now=NOW)
    good = create_customer(session, payload(idempotency_key="order-2"), now=NOW)

    assert bad["status"] == "rejected"
    assert good["status"] == "created"
    assert "replayed" not in good


def test_the_delivery_key_makes_a_redelivered_message_a_replay(session) -> None:
    """Without an idempotency key, the task id given as delivery key identifies the request."""
    first = create_customer(session, payload(), now=NOW, delivery_key="task:abc")
    redelivered = create_customer(session, payload(), now=NOW, delivery_key="task:abc")
    other = create_customer(session, payload(), now=NOW, delivery_key="task:def")

    assert redelivered == {**first, "replayed": True}
    assert [e["code"] for e in other["errors"]] == ["name_taken"]


def test_an_imported_customer_stores_its_first_period_even_if_long_past(session) -> None:
    """An old created_at stores the first period; the closer catches up from there."""
    result = create_customer(
        session,
        payload(created_at="2025-01-31T18:00:00-08:00", billing_timezone="America/Los_Angeles"),
        now=NOW,
    )

    customer = session.get(Customer, result["customer_id"])
    assert customer.created_local_date == dt.date(2025, 1, 31)
    assert customer.current_period_start == dt.datetime(2025, 1, 31, 8, 0, tzinfo=dt.UTC)
    assert customer.current_period_end == dt.datetime(2025, 2, 28, 8, 0, tzinfo=dt.UTC)


def test_catalog_rules_come_from_the_database(session) -> None:
    """Unknown catalog names and the stored class's custom fields are checked; the class and
    model are looked up among the reseller's own (northwind's Wholesale is not acme's)."""
    unknown_reseller = create_customer(
        session, payload(reseller="nobody", custom_data={"seats": 3}), now=NOW
    )
    wrong_fields = create_customer(
        session,
        payload(reseller="ACME", customer_class="Residential", custom_data={"seats": 3}),
        now=NOW,
    )
    other_resellers_class = create_customer(
        session, payload(customer_class="Wholesale", custom_data={}), now=NOW
    )

    assert [(e["field"], e["code"]) for e in unknown_reseller["errors"]] == [
        ("reseller", "not_found"),
    ]
    assert [(e["field"], e["code"]) for e in wrong_fields["errors"]] == [
        ("custom_data.seats", "unknown_custom_field"),
    ]
    assert [e["message"] for e in other_resellers_class["errors"]] == [
        "there is no customer class named 'Wholesale' for reseller 'acme'"
    ]
    assert count(session, Customer) == 0


def test_garbage_is_rejected_without_touching_the_database(session) -> None:
    """A payload that is not an object is rejected as such."""
    assert create_customer(session, ["not", "an", "object"], now=NOW) == {
        "status": "rejected",
        "errors": [
            {
                "field": None,
                "code": "not_an_object",
                "message": "the payload must be a JSON object of customer fields",
            }
        ],
    }


# --- catalog loading ------------------------------------------------------------------------


def _snapshot(session) -> list[tuple]:  # type: ignore[no-untyped-def]
    rows = []
    for model in (Reseller, BusinessModel, CustomerClass):
        table = model.__table__
        rows += [tuple(r) for r in session.execute(select(table).order_by(table.c.id))]
    return rows


def test_loading_the_same_catalog_twice_changes_nothing(clean_db, db_session) -> None:
    """A second load reports nothing created or updated and leaves every row as it was."""
    catalog = parse_catalog(EXAMPLE.read_text())
    first = load_catalog(db_session, catalog)
    before = _snapshot(db_session)

    second = load_catalog(db_session, catalog)

    assert first["customer_classes"] == {"created": 5, "updated": 0, "unchanged": 0}
    assert second == {
        "resellers": {"created": 0, "updated": 0, "unchanged": 2},
        "business_models": {"created": 0, "updated": 0, "unchanged": 4},
        "customer_classes": {"created": 0, "updated": 0, "unchanged": 5},
        "plans": {"created": 0, "updated": 0, "unchanged": 4},
    }
    db_session.expire_all()
    assert _snapshot(db_session) == before


def test_a_changed_entry_is_updated_by_name(clean_db, db_session) -> None:
    """Loading an edited file updates only the entry that changed, within its reseller; a
    name whose case changed is the same entry, renamed."""
    load_catalog(db_session, parse_catalog(EXAMPLE.read_text()))
    edited = (
        EXAMPLE.read_text()
        .replace('tax_rate: "0.08875"', 'tax_rate: "0.09"')
        .replace("name: Wholesale", "name: WHOLESALE")
    )

    summary = load_catalog(db_session, parse_catalog(edited))

    assert summary["customer_classes"] == {"created": 0, "updated": 2, "unchanged": 3}
    rates = db_session.execute(
        select(Reseller.name, CustomerClass.tax_rate)
        .join(Reseller, Reseller.id == CustomerClass.reseller_id)
        .where(CustomerClass.name == "Residential")
        .order_by(Reseller.name)
    ).all()
    assert [tuple(r) for r in rates] == [("acme", Decimal("0.09")), ("northwind", Decimal("0.2"))]
    names = db_session.scalars(select(CustomerClass.name).order_by(CustomerClass.name)).all()
    assert names == ["Business", "Business", "Residential", "Residential", "WHOLESALE"]
