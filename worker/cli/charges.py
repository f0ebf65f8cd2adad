"""`billing charges …`, `billing payments …`, `billing balances …`: money in and out."""

from __future__ import annotations

import json
from typing import Any

import click

from worker.cli._common import (
    SECONDS,
    Outcome,
    Report,
    describe,
    exit_status,
    lines_to_resend,
    open_input,
    read_lines,
    send_and_collect,
    send_and_collect_batches,
)
from worker.cli.charge_order import BATCH_SIZE, CustomerOrder
from worker.config import settings
from worker.db import unit_of_work


def _load(task_name: str, file: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Send one task per line; with --wait, collect and summarise the outcomes."""
    from worker.celery_app import app

    settings().ensure_data_dir()
    with open_input(file) as stream:
        report = send_and_collect(
            app,
            task_name,
            read_lines(stream, "jsonl"),
            queue="charges",
            wait=wait,
            timeout=timeout,
            progress=False,
            total=None,
        )
    _summarise(report, wait, as_json)


def _load_batches(file: str, batch_size: int, wait: bool, timeout: float, as_json: bool) -> None:
    """Send the file's charges in batches, in order per customer (`worker.cli.charge_order`)."""
    from worker.celery_app import app

    settings().ensure_data_dir()
    with open_input(file) as stream, CustomerOrder() as order:
        malformed = []
        for line in read_lines(stream, "jsonl"):
            if line.payload is None:
                malformed.append(line)
            else:
                order.add(line.number, line.payload)
        report = send_and_collect_batches(
            app,
            "billing.charges.record_batch",
            order.runs(batch_size),
            queue="charges",
            wait=wait,
            timeout=timeout,
        )
    for line in malformed:
        assert line.problem is not None
        click.echo(f"line {line.number}: {line.problem.message}", err=True)
        report.malformed += 1
        report.outcomes[line.number] = Outcome(
            line.number, "malformed", {"errors": [line.problem.as_json()]}
        )
    _summarise(report, wait, as_json)


def _summarise(report: Report, wait: bool, as_json: bool) -> None:
    summary: dict[str, Any] = {"sent": report.sent, "unreadable": report.malformed}
    if wait:
        counts = report.counts(_kind)
        summary |= {k: counts.get(k, 0) for k in _KINDS if k in _ALWAYS_SHOWN or counts.get(k)}
    problems = [
        {"line": number, "status": outcome.status, "errors": outcome.result["errors"]}
        for number, outcome in sorted(report.outcomes.items())
        if outcome.result.get("errors")
    ]
    summary["problems"] = problems
    resend = lines_to_resend(report, ("timeout", "unknown", "not_sent", "failed"))
    summary["notes"] = report.notes + (
        [f"lines without an outcome (send them again): {resend}"] if resend else []
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            ", ".join(f"{k} {v}" for k, v in summary.items() if k not in {"problems", "notes"})
        )
        for problem in problems:
            for error in problem["errors"]:
                click.echo(f"line {problem['line']}: {error['code']}: {describe(error)}", err=True)
        for note in summary["notes"]:
            click.echo(note, err=True)
    exit_status(bool(problems or summary["notes"]))


_ALWAYS_SHOWN = ("recorded", "replayed", "refused")
_KINDS = (*_ALWAYS_SHOWN, "failed", "timeout", "queued", "unknown", "not_sent")


def _kind(outcome: Outcome) -> str:
    if outcome.status == "recorded" and outcome.result.get("replayed"):
        return "replayed"
    return outcome.status


_file = click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
_wait = click.option("--wait", is_flag=True, help="Wait for every outcome and summarise them.")
_timeout = click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=SECONDS,
    help="With --wait: seconds to wait for all outcomes.",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


@click.group("charges")
def charges() -> None:
    """Charges: services used, billed to a customer's balance and invoiced once."""


@charges.command("load")
@_file
@_wait
@_timeout
@_json
@click.option(
    "--batch-size",
    default=BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Charges per message (a customer's lines stay together when they fit).",
)
def load_charges(file: str, wait: bool, timeout: float, as_json: bool, batch_size: int) -> None:
    """Queue every charge of FILE (JSON Lines; - reads stdin) on the `charges` queue, in
    batches of about --batch-size charges (`billing.charges.record_batch`).

    Each line: {"reseller": NAME (optional while one reseller exists), "customer": NAME
    (or "customer_id": ID), "amount": "12.50",
    "currency": "USD", "occurred_at": ISO-8601 instant, "description": TEXT,
    "idempotency_key": KEY}. A customer's charges apply in `occurred_at` order, then file
    order, whatever the number of workers: the file is sorted by customer first (on disk,
    bounded memory), and a customer's lines never go into batches that could run at the
    same time. Loading the same file again records nothing twice. Exits 1 if any line was
    unreadable or (with --wait) refused.
    """
    _load_batches(file, batch_size, wait, timeout, as_json)


@click.group("payments")
def payments() -> None:
    """Payments (postpaid) and top-ups (prepaid)."""


@payments.command("load")
@_file
@_wait
@_timeout
@_json
def load_payments(file: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Queue every payment or top-up of FILE (JSON Lines; - reads stdin) on the `charges`
    queue.

    Each line: {"reseller": NAME (optional while one reseller exists), "customer": NAME
    (or "customer_id": ID), "amount": "50.00",
    "currency": "USD", "received_at": ISO-8601 instant, "description": TEXT (optional),
    "idempotency_key": KEY}.
    """
    _load("billing.payments.record", file, wait, timeout, as_json)


@click.group("balances")
def balances() -> None:
    """Customer balances and their ledger."""


@balances.command("check")
@_json
def check_balances(as_json: bool) -> None:
    """Recompute every balance from the ledger; exit 1 and list the customers that differ."""
    from tasks.charges import balance_mismatches

    with unit_of_work() as session:
        mismatches = balance_mismatches(session)
    if as_json:
        click.echo(json.dumps(mismatches, indent=2))
    elif not mismatches:
        click.echo("every balance matches its ledger")
    for m in mismatches if not as_json else []:
        click.echo(
            f"{m['customer']}: balance {m['balance']}, ledger sum {m['ledger_sum']}, "
            f"last balance_after {m['last_balance_after']}",
            err=True,
        )
    exit_status(bool(mismatches))


COMMANDS = [charges, payments, balances]
