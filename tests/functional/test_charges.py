"""Charges and payments through Redis and a real worker against PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import random
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from models import Charge, Customer, LedgerEntry
from tests.invoicing_factories import billing_customer, charge_payload, payment_payload
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

AT = dt.datetime(2026, 3, 25, 9, 30, tzinfo=dt.UTC)


def _customer(**fields):
    with unit_of_work() as session:
        customer = billing_customer(session, **fields)
        session.expunge(customer)
    return customer


def _stored(customer_id):
    with unit_of_work() as session:
        customer = session.get(Customer, customer_id)
        ledger = session.execute(
            select(func.count(), func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.customer_id == customer_id
            )
        ).one()
        return customer.balance, customer.blocked, ledger[0], Decimal(ledger[1])


def test_concurrent_charges_leave_the_exact_balance(worker, clean_db) -> None:
    """80 charges sent at once to the worker's two processes and from 8 threads in-process:
    no update is lost, every charge has one ledger row and the ledger matches the balance."""
    from tasks.charges import balance_mismatches, record_charge, record_charge_task

    customer = _customer(credit_limit=None)
    rng = random.Random(7)
    amounts = [Decimal(rng.randint(1, 99999)).scaleb(-2) for _ in range(80)]
    payloads = [
        charge_payload(customer, str(a), AT + dt.timedelta(seconds=i), f"c{i}")
        for i, a in enumerate(amounts)
    ]

    sent = [record_charge_task.delay(p) for p in payloads[:40]]

    def in_process(payload):
        with unit_of_work() as session:
            return record_charge(session, payload, now=AT)

    with ThreadPoolExecutor(max_workers=8) as pool:
        local = list(pool.map(in_process, payloads[40:]))
    remote = [r.get(timeout=60) for r in sent]

    assert all(r["status"] == "recorded" for r in local + remote)
    assert _stored(customer.id) == (sum(amounts), False, 80, sum(amounts))
    with unit_of_work() as session:
        assert balance_mismatches(session) == []
        entries = session.execute(
            select(LedgerEntry.amount, LedgerEntry.balance_after)
            .where(LedgerEntry.customer_id == customer.id)
            .order_by(LedgerEntry.id)
        ).all()
    # Each entry's balance_after is the previous one plus its amount: the changes were
    # serialised on the customer row, none was computed from a stale balance.
    running = Decimal(0)
    for amount, balance_after in entries:
        running += amount
        assert balance_after == running


def test_postpaid_customer_is_blocked_at_the_credit_limit(worker, clean_db) -> None:
    """Through the worker: reaching the limit blocks, the next charge is refused with its
    reason, and a payment that brings the balance under the limit unblocks."""
    from tasks.charges import record_charge_task, record_payment_task

    customer = _customer(credit_limit=Decimal("100.00"))

    first = record_charge_task.delay(charge_payload(customer, "60.00", AT, "a")).get(timeout=30)
    second = record_charge_task.delay(charge_payload(customer, "40.00", AT, "b")).get(timeout=30)
    third = record_charge_task.delay(charge_payload(customer, "1.00", AT, "c")).get(timeout=30)

    assert (first["blocked"], second["blocked"]) == (False, True)
    assert third["status"] == "refused"
    assert third["errors"][0]["code"] == "credit_limit_reached"
    assert "credit limit" in third["errors"][0]["message"]
    assert _stored(customer.id) == (Decimal("100.00"), True, 2, Decimal("100.00"))

    paid = record_payment_task.delay(payment_payload(customer, "30.00", AT, "p")).get(timeout=30)

    assert (paid["status"], paid["balance"], paid["blocked"]) == ("recorded", "70.00", False)
    assert _stored(customer.id) == (Decimal("70.00"), False, 3, Decimal("70.00"))


def test_prepaid_customer_is_refused_at_zero_and_a_top_up_unblocks(worker, clean_db) -> None:
    """Through the worker: funds run out exactly, the next charge is refused, a top-up helps."""
    from tasks.charges import record_charge_task, record_payment_task

    customer = _customer(balance_control="prepaid", funds=Decimal("25.00"))

    spend = record_charge_task.delay(charge_payload(customer, "25.00", AT, "a")).get(timeout=30)
    refused = record_charge_task.delay(charge_payload(customer, "0.01", AT, "b")).get(timeout=30)

    assert (spend["balance"], spend["blocked"]) == ("0.00", True)
    assert refused["errors"][0]["code"] == "insufficient_funds"
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Charge)) == 1

    top_up = record_payment_task.delay(payment_payload(customer, "10.00", AT, "t")).get(timeout=30)
    again = record_charge_task.delay(charge_payload(customer, "0.01", AT, "b")).get(timeout=30)

    assert (top_up["balance"], top_up["blocked"]) == ("10.00", False)
    assert (again["status"], again["balance"]) == ("recorded", "9.99")
    # opening + charge + top-up + charge, and the ledger explains the balance
    assert _stored(customer.id) == (Decimal("9.99"), False, 4, Decimal("9.99"))


def test_charges_load_records_a_file_once_and_reports_bad_lines(worker, clean_db, tmp_path) -> None:
    """`billing charges load FILE --wait`: good lines recorded, bad ones reported with their
    line numbers; loading the file again records nothing twice."""
    from worker.cli import main

    customer = _customer(credit_limit=None)
    lines = [
        json.dumps(charge_payload(customer, "1.50", AT, "one")),
        "{not json",
        json.dumps(charge_payload(customer, "2.50", AT, "two")),
        json.dumps(charge_payload(customer, "2.50", AT, "three") | {"currency": "EUR"}),
    ]
    path = tmp_path / "charges.jsonl"
    path.write_text("\n".join(lines) + "\n")

    first = CliRunner().invoke(main, ["charges", "load", str(path), "--wait", "--json"])
    second = CliRunner().invoke(main, ["charges", "load", str(path), "--wait", "--json"])

    assert first.exit_code == 1, first.output
    summary = json.loads(first.stdout)
    assert (summary["sent"], summary["recorded"], summary["refused"]) == (3, 2, 1)
    assert [(p["line"], p["errors"][0]["code"]) for p in summary["problems"]] == [
        (2, "invalid_json"),
        (4, "currency_mismatch"),
    ]
    assert json.loads(second.stdout)["replayed"] == 2
    assert _stored(customer.id) == (Decimal("4.00"), False, 2, Decimal("4.00"))
    check = CliRunner().invoke(main, ["balances", "check"])
    assert check.exit_code == 0, check.output
