"""Customer intake end to end: real Redis broker, real worker processes, real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from models import Customer, LedgerEntry, Reseller
from models.catalog_file import parse_catalog
from tasks.catalog import load_catalog
from tests.factories import intake_payload
from worker.cli import main
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def catalog(clean_db, worker):  # type: ignore[no-untyped-def]
    """The example catalog, committed, with the session worker running."""
    with unit_of_work() as session:
        load_catalog(session, parse_catalog((EXAMPLES / "catalog.yaml").read_text()))
    return clean_db


payload = intake_payload


def send(body: Any) -> Any:
    from tasks.intake import create_customer_task

    return create_customer_task.apply_async(args=[body])


def customers() -> list[Customer]:
    with unit_of_work() as session:
        return list(session.scalars(select(Customer).order_by(Customer.id)))


def test_a_customer_sent_through_the_broker_is_stored(catalog) -> None:
    """A job on the intake queue is run by the worker and the customer can be read back."""
    result = send(payload(balance_control="prepaid", credit_limit=None, available_funds="100.00"))

    outcome = result.get(timeout=30)

    assert outcome["status"] == "created"
    [customer] = customers()
    assert customer.id == outcome["customer_id"]
    assert (customer.name, customer.billing_timezone, str(customer.balance)) == (
        "Globex Corp",
        "America/New_York",
        "100.0000",
    )
    assert (
        customer.current_period_end.isoformat().replace("+00:00", "Z")
        == (outcome["first_period"]["end"])
    )
    with unit_of_work() as session:
        ledger = session.scalars(select(LedgerEntry.amount)).all()
    assert [str(a) for a in ledger] == ["100.0000"]


def test_a_rejection_is_a_result_not_a_failure(catalog) -> None:
    """An invalid customer comes back as a rejected result (task succeeded, not retried)."""
    result = send(payload(currency="dollars", colour="red"))

    outcome = result.get(timeout=30)

    assert result.successful()
    assert outcome["status"] == "rejected"
    assert {(e["field"], e["code"]) for e in outcome["errors"]} == {
        ("currency", "unknown_currency"),
        ("colour", "unknown_field"),
    }
    assert customers() == []


def test_a_repeated_idempotency_key_creates_nothing_new(catalog) -> None:
    """Sending the same request with the same key twice stores one customer."""
    first = send(payload(idempotency_key="acme-globex")).get(timeout=30)
    second = send(payload(idempotency_key="acme-globex")).get(timeout=30)

    assert second == {**first, "replayed": True}
    assert len(customers()) == 1


def test_two_workers_racing_on_one_name_create_exactly_one_customer(catalog, tmp_path) -> None:
    """Concurrent jobs for one name (in any case) on two workers store one customer."""
    from tests.support import WorkerProcess
    from worker.celery_app import app

    second = WorkerProcess(app, tmp_path, name="racer", queues=["intake"], concurrency=2)
    second.start()
    try:
        names = ["Racing Co", "racing co", "RACING CO", " Racing Co "] * 5
        results = [send(payload(name=name)) for name in names]
        outcomes = [r.get(timeout=60) for r in results]
        ran_on = {r.worker for r in results}
    finally:
        second.stop()

    created = [o for o in outcomes if o["status"] == "created"]
    rejected = [o for o in outcomes if o["status"] == "rejected"]
    assert len(created) == 1
    assert len(rejected) == len(names) - 1
    assert {e["code"] for o in rejected for e in o["errors"]} == {"name_taken"}
    assert [c.name for c in customers()] == [created[0]["name"]]
    # Both workers took jobs from the queue (result_extended records which one ran each).
    assert second.nodename in ran_on
    assert len(ran_on) == 2


def test_enqueue_cli_reports_created_rejected_duplicate_and_malformed(catalog, tmp_path) -> None:
    """`billing customers enqueue --wait` on the example file summarises every line."""
    runner = CliRunner()
    results_file = tmp_path / "results.jsonl"
    source = str(EXAMPLES / "customers.jsonl")

    first = runner.invoke(
        main, ["customers", "enqueue", source, "--wait", "--results", str(results_file)]
    )
    second = runner.invoke(main, ["customers", "enqueue", source, "--wait"])

    assert first.exit_code == 1, first.output
    assert "created: 9, duplicate: 0, rejected: 2, malformed: 1" in first.stdout
    assert "line 12: not valid JSON" in first.stderr
    assert "line 10: rejected: name: a customer named 'Globex Corp' already exists" in (
        first.stdout
    )
    lines = [json.loads(line) for line in results_file.read_text().splitlines()]
    assert [r["line"] for r in lines] == list(range(1, 13))
    assert [r["status"] for r in lines].count("created") == 9
    assert lines[-1]["status"] == "malformed"
    # Lines with an idempotency key come back as duplicates; the others' names are taken.
    assert "created: 0, duplicate: 3, rejected: 8, malformed: 1" in second.stdout
    assert len(customers()) == 9


def test_enqueue_cli_reads_csv_with_custom_data_columns(catalog) -> None:
    """CSV columns map to payload keys, custom_data.<field> to custom data, blanks to absent."""
    runner = CliRunner()

    outcome = runner.invoke(
        main, ["customers", "enqueue", str(EXAMPLES / "customers.csv"), "--wait"]
    )

    assert outcome.exit_code == 1, outcome.output
    assert "created: 2, duplicate: 0, rejected: 1" in outcome.stdout
    assert "line 4: rejected" in outcome.stdout
    shown = runner.invoke(
        main, ["customers", "show", "vandelay industries", "--reseller", "acme", "--json"]
    )
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["custom_data"] == {"tax_code": "NY-7", "seats": 12}
    assert (data["credit_limit"], data["idempotency_key"]) == ("750.00", "acme-vandelay")
    listed = json.loads(runner.invoke(main, ["customers", "list", "--json"]).stdout)
    assert sorted(c["name"] for c in listed) == ["Kruger Fibre", "Vandelay Industries"]
    nobody = runner.invoke(main, ["customers", "show", "Nobody", "--reseller", "acme"])
    assert nobody.exit_code == 1
    assert "reseller 'acme' has no customer named 'Nobody'" in nobody.output
    unsaid = runner.invoke(main, ["customers", "show", "Kruger Fibre"])
    assert unsaid.exit_code == 1
    assert "--reseller is required" in unsaid.output
    # Kruger Fibre is northwind's: acme is told nothing about it.
    other = runner.invoke(main, ["customers", "show", "Kruger Fibre", "--reseller", "acme"])
    assert other.exit_code == 1
    assert "northwind" not in other.output


def test_enqueue_cli_without_wait_exits_zero_when_every_line_was_sent(catalog, tmp_path) -> None:
    """Without --wait, only malformed lines make the exit status non-zero."""
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps(payload(name="Fire And Forget")) + "\n\n")

    outcome = CliRunner().invoke(main, ["customers", "enqueue", str(source)])

    assert outcome.exit_code == 0, outcome.output
    assert "enqueued 1 job(s); 0 malformed" in outcome.stderr
    from tests.support import wait_for

    wait_for(lambda: customers(), timeout=30, what="the customer to be stored")


def test_catalog_cli_loads_once_and_refuses_invalid_files(clean_db, tmp_path) -> None:
    """`billing catalog load` is idempotent, and an invalid file stores nothing."""
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("resellers: [{name: fine, customer_classes: [{name: X, tax_rate: '3'}]}]\n")

    refused = runner.invoke(main, ["catalog", "load", str(bad)])
    with unit_of_work() as session:
        resellers_after_refusal = session.scalar(select(func.count()).select_from(Reseller))
    first = runner.invoke(main, ["catalog", "load", str(EXAMPLES / "catalog.yaml")])
    second = runner.invoke(main, ["catalog", "load", str(EXAMPLES / "catalog.yaml"), "--json"])

    assert refused.exit_code == 1
    assert "resellers[0].customer_classes[0].tax_rate" in refused.stderr
    assert resellers_after_refusal == 0
    assert first.exit_code == 0, first.output
    assert "customer classes: 5 created, 0 updated, 0 unchanged" in first.stdout
    summary = json.loads(second.stdout)
    assert all(
        summary[s]["created"] == summary[s]["updated"] == 0 for s in summary if s != "status"
    )
