"""The charge and payment services on the embedded default database (SQLite)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Charge, Customer, LedgerEntry, Payment
from tasks.charges import balance_mismatches, record_charge, record_payment
from tests.invoicing_factories import (
    billing_customer,
    charge_payload,
    payment_payload,
)

NOW = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)
AT = dt.datetime(2026, 3, 25, 9, 30, tzinfo=dt.UTC)


def _counts(session: Session) -> tuple[int, int, int]:
    return (
        session.scalar(select(func.count()).select_from(Charge)),
        session.scalar(select(func.count()).select_from(Payment)),
        session.scalar(select(func.count()).select_from(LedgerEntry)),
    )


def test_a_charge_raises_the_postpaid_balance_and_writes_one_ledger_row(session) -> None:
    """The balance, the charge and the ledger row agree."""
    customer = billing_customer(session, credit_limit=Decimal("100.00"))

    result = record_charge(session, charge_payload(customer, "12.34", AT, "k1"), now=NOW)

    assert result["status"] == "recorded"
    assert result["balance"] == "12.34"
    assert result["blocked"] is False
    entry = session.scalars(select(LedgerEntry)).one()
    assert (entry.entry_type, entry.amount, entry.balance_after) == (
        "charge",
        Decimal("12.34"),
        Decimal("12.34"),
    )
    assert entry.charge_id == result["charge_id"]
    assert session.get(Customer, customer.id).balance == Decimal("12.34")
    assert balance_mismatches(session) == []


def test_a_replayed_key_returns_the_original_outcome_and_writes_nothing(session) -> None:
    """The same key twice: one charge, one ledger row, the same answer flagged replayed."""
    customer = billing_customer(session, credit_limit=Decimal("100.00"))
    payload = charge_payload(customer, "10.00", AT, "same")

    first = record_charge(session, payload, now=NOW)
    record_charge(session, charge_payload(customer, "1.00", AT, "other"), now=NOW)
    again = record_charge(session, payload, now=NOW)

    assert again == first | {"replayed": True}
    assert _counts(session) == (2, 0, 2)
    assert session.get(Customer, customer.id).balance == Decimal("11.00")


def test_a_key_reused_for_a_different_charge_is_refused(session) -> None:
    """Same key, different amount: idempotency_conflict, nothing stored."""
    customer = billing_customer(session)
    record_charge(session, charge_payload(customer, "10.00", AT, "k"), now=NOW)

    result = record_charge(session, charge_payload(customer, "11.00", AT, "k"), now=NOW)

    assert result["status"] == "refused"
    assert [e["code"] for e in result["errors"]] == ["idempotency_conflict"]
    assert _counts(session) == (1, 0, 1)


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"amount": "1.234"}, "amount", "too_many_decimals"),
        ({"amount": "-1"}, "amount", "not_positive"),
        ({"amount": "0"}, "amount", "not_positive"),
        ({"amount": 1.5}, "amount", "invalid_type"),
        ({"amount": "1E+2"}, "amount", "invalid_decimal"),
        ({"amount": "\u0661\u0662.\u0665\u0660"}, "amount", "invalid_decimal"),
        ({"amount": "12_000"}, "amount", "invalid_decimal"),
        ({"amount": "100000000000000"}, "amount", "too_large"),
        ({"currency": "EUR"}, "currency", "currency_mismatch"),
        ({"currency": "ZZZ"}, "currency", "unknown_currency"),
        ({"customer": "nobody"}, "customer", "unknown_customer"),
        ({"occurred_at": "2026-03-25T09:30:00"}, "occurred_at", "invalid_datetime"),
        ({"occurred_at": "9999-12-31T23:59:59-23:59"}, "occurred_at", "invalid_datetime"),
        ({"occurred_at": 1774430000}, "occurred_at", "invalid_type"),
        ({"occurred_at": "2026-04-01T12:02:01Z"}, "occurred_at", "in_future"),
        ({"idempotency_key": ""}, "idempotency_key", "blank"),
        ({"idempotency_key": "k\u0000"}, "idempotency_key", "control_characters"),
        ({"description": "Calls\u0000"}, "description", "control_characters"),
        ({"customer": "Acme\u0000"}, "customer", "control_characters"),
        ({"customer_id": 2**64}, "customer_id", "out_of_range"),
        ({"customer_id": "7"}, "customer_id", "invalid_type"),
        ({"colour": "red"}, "colour", "unknown_field"),
    ],
)
def test_bad_charges_are_refused_with_a_structured_reason(session, change, field, code) -> None:
    """Each malformed or mismatched payload is refused with its field and code; nothing stored."""
    customer = billing_customer(session)
    payload = charge_payload(customer, "1.00", AT, "k") | change

    result = record_charge(session, payload, now=NOW)

    assert result["status"] == "refused"
    assert {"field": field, "code": code} in [
        {"field": e["field"], "code": e["code"]} for e in result["errors"]
    ]
    assert all(e["message"] for e in result["errors"])
    assert _counts(session) == (0, 0, 0)


def test_a_missing_customer_reference_is_refused(session) -> None:
    """Neither customer nor customer_id: the customer field is required."""
    payload = charge_payload("x", "1.00", AT, "k")
    del payload["customer"]

    result = record_charge(session, payload, now=NOW)

    assert result["errors"][0]["field"] == "customer"
    assert result["errors"][0]["code"] == "required"


def test_postpaid_blocks_at_the_credit_limit_and_a_payment_unblocks(session) -> None:
    """The charge reaching the limit blocks; the next is refused; a payment under the limit
    unblocks and charges are accepted again."""
    customer = billing_customer(session, credit_limit=Decimal("50.00"))

    reaching = record_charge(session, charge_payload(customer, "50.00", AT, "a"), now=NOW)
    refused = record_charge(session, charge_payload(customer, "0.01", AT, "b"), now=NOW)
    paid = record_payment(session, payment_payload(customer, "0.01", NOW, "p"), now=NOW)
    accepted = record_charge(session, charge_payload(customer, "0.01", AT, "b"), now=NOW)

    assert (reaching["balance"], reaching["blocked"]) == ("50.00", True)
    assert refused["status"] == "refused"
    assert refused["errors"][0]["code"] == "credit_limit_reached"
    assert (paid["balance"], paid["blocked"]) == ("49.99", False)
    assert (accepted["status"], accepted["balance"], accepted["blocked"]) == (
        "recorded",
        "50.00",
        True,
    )
    assert balance_mismatches(session) == []


def test_prepaid_refuses_beyond_the_funds_blocks_at_zero_and_a_top_up_unblocks(session) -> None:
    """Funds 10: a charge of 10.01 is refused, 10.00 is accepted and blocks, a top-up unblocks."""
    customer = billing_customer(session, balance_control="prepaid", funds=Decimal("10.00"))

    too_much = record_charge(session, charge_payload(customer, "10.01", AT, "a"), now=NOW)
    exact = record_charge(session, charge_payload(customer, "10.00", AT, "b"), now=NOW)
    at_zero = record_charge(session, charge_payload(customer, "0.01", AT, "c"), now=NOW)
    top_up = record_payment(session, payment_payload(customer, "5.00", NOW, "t"), now=NOW)

    assert too_much["errors"][0]["code"] == "insufficient_funds"
    assert (exact["balance"], exact["blocked"]) == ("0.00", True)
    assert at_zero["errors"][0]["code"] == "insufficient_funds"
    assert (top_up["balance"], top_up["blocked"]) == ("5.00", False)
    stored = session.get(Customer, customer.id)
    assert (stored.balance, stored.blocked) == (Decimal("5.00"), False)
    assert balance_mismatches(session) == []


def test_a_balance_written_without_the_ledger_is_reported(session) -> None:
    """The ledger check finds a balance that no ledger row explains."""
    customer = billing_customer(session)
    record_charge(session, charge_payload(customer, "3.00", AT, "a"), now=NOW)
    session.get(Customer, customer.id).balance = Decimal("4.00")
    session.flush()

    assert balance_mismatches(session) == [
        {
            "customer_id": customer.id,
            "customer": customer.name,
            "balance": "4.0000",
            "ledger_sum": "3.0000",
            "last_balance_after": "3.0000",
        }
    ]


def test_zero_minor_unit_currencies_refuse_fractions(session) -> None:
    """A JPY charge with decimals is refused; a whole one is recorded exactly."""
    customer = billing_customer(session, currency="JPY")

    fraction = record_charge(session, charge_payload(customer, "10.5", AT, "a"), now=NOW)
    whole = record_charge(session, charge_payload(customer, "1050", AT, "b"), now=NOW)

    assert fraction["errors"][0]["code"] == "too_many_decimals"
    assert whole["amount"] == "1050"


def test_refusal_messages_write_amounts_in_the_currencys_minor_units(session) -> None:
    """`balance owed (1234.56 USD) … credit limit (1000.00 USD)`, never the stored 4 decimals."""
    customer = billing_customer(session, credit_limit=Decimal("1000.00"))
    record_charge(session, charge_payload(customer, "1234.56", AT, "a"), now=NOW)

    refused = record_charge(session, charge_payload(customer, "1.00", AT, "b"), now=NOW)

    message = refused["errors"][0]["message"]
    assert "(1234.56 USD)" in message
    assert "(1000.00 USD)" in message
    assert "0000" not in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"received_at": None}, "received_at is required"),
        ({"amount": True}, 'amount must be a decimal string such as "12.50"'),
        ({"colour": "red"}, "'colour' is not a known field; accepted: customer, customer_id"),
    ],
)
def test_payment_refusals_speak_plainly(session, change, message) -> None:
    """Messages are this project's sentences, never pydantic's ("Field required")."""
    customer = billing_customer(session)
    payload = {
        k: v
        for k, v in (payment_payload(customer, "1.00", AT, "p") | change).items()
        if v is not None
    }

    result = record_payment(session, payload, now=NOW)

    messages = [e["message"] for e in result["errors"]]
    assert any(m.startswith(message) for m in messages), messages
    assert not any("Field required" in m or "Input should" in m for m in messages)


@pytest.mark.parametrize("amount", ["1E+2", "\u0661\u0662.\u0665\u0660", "12_000", " 1.5e3", "NaN"])
def test_intake_and_charges_refuse_the_same_amount_text_with_the_same_code(session, amount) -> None:
    """One decimal parser: a credit limit and a charge amount are refused alike."""
    from models.intake import parse_intake
    from tests.factories import intake_payload

    customer = billing_customer(session)
    charge = record_charge(session, charge_payload(customer, amount, AT, "k"), now=NOW)
    draft = parse_intake(intake_payload(credit_limit=amount), now=NOW)

    intake_codes = {p.code for p in draft.problems if p.field == "credit_limit"}
    assert [e["code"] for e in charge["errors"]] == ["invalid_decimal"]
    assert intake_codes == {"invalid_decimal"}
