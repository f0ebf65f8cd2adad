"""`billing charges load` in batches through Redis and real workers against PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from models import Charge, Customer, LedgerEntry
from tests.invoicing_factories import billing_customer, charge_payload
from tests.support import WorkerProcess, truncate_all
from tests.unit.test_charges_batch import charge_lines, check_batch_equals_single
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

AT = dt.datetime(2026, 3, 25, 9, 30, tzinfo=dt.UTC)


def _seed() -> list[Customer]:
    with unit_of_work() as session:
        customers = [
            billing_customer(session, name=f"Post {i}", credit_limit=Decimal("10.00"))
            for i in range(4)
        ] + [
            billing_customer(session, name="Pre", balance_control="prepaid", funds=Decimal("9")),
            billing_customer(session, name="Open", credit_limit=None),
        ]
        for customer in customers:
            session.expunge(customer)
    return customers


def _file(tmp_path, customers: list[Customer]):
    """Charges whose file order is not their `occurred_at` order, so which ones the credit
    limit (or the funds) refuses depends on applying them in instant order."""
    rng = random.Random(14)
    lines = []
    for customer in customers:
        for i in range(9):
            amount = f"{rng.randint(100, 450) / 100:.2f}"
            lines.append(
                charge_payload(
                    customer,
                    amount,
                    AT + dt.timedelta(minutes=rng.randint(0, 5)),
                    f"{customer.name}-{i}",
                )
            )
    rng.shuffle(lines)
    lines.insert(7, {"customer": "Post 1", "amount": "1.001", "currency": "USD"})
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _load(path, *extra: str) -> dict:
    from worker.cli import main

    outcome = CliRunner().invoke(
        main, ["charges", "load", str(path), "--wait", "--json", "--batch-size", "3", *extra]
    )
    assert outcome.exit_code in (0, 1), outcome.output
    return json.loads(outcome.stdout)


def _results(summary: dict) -> list:
    return summary["problems"]


def _stored() -> tuple:
    with unit_of_work() as session:
        balances = session.execute(
            select(Customer.name, Customer.balance, Customer.blocked).order_by(Customer.name)
        ).all()
        ledger = session.execute(
            select(
                Customer.name, Charge.idempotency_key, LedgerEntry.amount, LedgerEntry.balance_after
            )
            .join(Charge, Charge.id == LedgerEntry.charge_id)
            .join(Customer, Customer.id == LedgerEntry.customer_id)
            .order_by(Customer.name, LedgerEntry.id)
        ).all()
    return balances, ledger


def _with_one_process(celery_app, worker, tmp_path, path) -> dict:
    """Load `path` with the charges queue consumed by a single worker process only."""
    celery_app.control.cancel_consumer("charges", destination=[worker.nodename], reply=True)
    single = WorkerProcess(
        celery_app, tmp_path, name="charges-one", queues=["charges"], concurrency=1
    )
    try:
        single.start()
        return _load(path)
    finally:
        single.stop()
        celery_app.control.add_consumer("charges", destination=[worker.nodename], reply=True)


def test_a_file_gives_the_same_outcome_with_one_or_two_worker_processes(
    celery_app, worker, clean_db, engine, tmp_path
) -> None:
    """The same file (order-dependent credit-limit and funds refusals, a bad line) gives the
    same per-line results, balances and ledger with 1 and with 2 worker processes, and a
    second load records nothing twice."""
    customers = _seed()
    path = _file(tmp_path, customers)
    one = _with_one_process(celery_app, worker, tmp_path, path)
    one_stored = _stored()

    truncate_all(engine)
    _file(tmp_path, _seed())  # the same names, amounts and keys
    two = _load(path)
    again = _load(path)

    assert one["refused"] > 3, one
    assert one["recorded"] > 20, one
    assert (one["sent"], one["recorded"], one["refused"]) == (
        two["sent"],
        two["recorded"],
        two["refused"],
    )
    assert _results(one) == _results(two)
    assert _stored() == one_stored
    assert again["replayed"] == two["recorded"]
    assert again["recorded"] == 0
    assert _stored() == one_stored
    ledger = one_stored[1]
    running: dict[str, Decimal] = {}
    for name, _key, amount, balance_after in ledger:
        start = Decimal(9) if name == "Pre" else Decimal(0)
        running[name] = running.get(name, start) + amount
        assert balance_after == running[name]


def test_single_charges_during_a_batch_load_stay_exact(worker, clean_db, tmp_path) -> None:
    """Single `billing.charges.record` messages for the same customers while a file loads in
    batches: every charge recorded once, each balance the sum of its ledger."""
    from tasks.charges import balance_mismatches, record_charge_task

    with unit_of_work() as session:
        customers = [billing_customer(session, credit_limit=None) for _ in range(3)]
        for customer in customers:
            session.expunge(customer)
    lines = [
        charge_payload(customers[i % 3], "1.25", AT + dt.timedelta(seconds=i), f"file-{i}")
        for i in range(300)
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    singles = [
        record_charge_task.delay(
            charge_payload(customers[i % 3], "0.50", AT + dt.timedelta(seconds=i), f"one-{i}")
        )
        for i in range(60)
    ]

    summary = _load(path, "--batch-size", "20")

    assert [s.get(timeout=60)["status"] for s in singles] == ["recorded"] * 60
    assert summary["recorded"] == 300
    with unit_of_work() as session:
        assert balance_mismatches(session) == []
        balances = [session.get(Customer, c.id).balance for c in customers]
    assert balances == [Decimal("125.00") + Decimal("10.00")] * 3


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(lines=charge_lines(), rerun=st.booleans())
def test_the_postgresql_batch_gives_what_single_charges_give(db_session, lines, rerun) -> None:
    """Random charges on PostgreSQL (its own array statements): the batch equals single
    charges line by line in order, also when re-sent."""
    check_batch_equals_single(db_session, lines, rerun)
