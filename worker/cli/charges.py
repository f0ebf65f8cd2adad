"""`billing charges …`, `billing payments …`, `billing balances …`: money in and out."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from worker.db import unit_of_work


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """(line number, payload) for every JSON object line, and the lines that are not one."""
    payloads, bad = [], []
    with path.open(encoding="utf-8") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                payload = json.loads(raw)
            except json.JSONDecodeError as exc:
                bad.append({"line": number, "errors": [_error("invalid_json", str(exc))]})
                continue
            if not isinstance(payload, dict):
                bad.append({"line": number, "errors": [_error("invalid", "not a JSON object")]})
                continue
            payloads.append((number, payload))
    return payloads, bad


def _error(code: str, message: str) -> dict[str, str]:
    return {"field": "payload", "code": code, "message": message}


def _load(
    task: Any, path: Path, reseller: str | None, wait: bool, timeout: float, as_json: bool
) -> None:
    """Send one task per line; with --wait, collect and summarise the outcomes."""
    payloads, bad = _read_jsonl(path)
    if reseller is not None:  # the lines' own `reseller` wins
        payloads = [(number, {"reseller": reseller, **payload}) for number, payload in payloads]
    sent = [(number, task.apply_async(args=[payload])) for number, payload in payloads]
    summary: dict[str, Any] = {"sent": len(sent), "unreadable": len(bad)}
    problems = list(bad)
    if wait:
        outcomes: Counter[str] = Counter()
        for number, async_result in sent:
            result = async_result.get(timeout=timeout)
            status = "replayed" if result.get("replayed") else result["status"]
            outcomes[status] += 1
            if result["status"] == "refused":
                problems.append({"line": number, "errors": result["errors"]})
        summary |= {k: outcomes.get(k, 0) for k in ("recorded", "replayed", "refused")}
    summary["problems"] = sorted(problems, key=lambda p: p["line"])
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in summary.items() if k != "problems")
        click.echo(counts)
        for problem in summary["problems"]:
            for error in problem["errors"]:
                click.echo(
                    f"line {problem['line']}: {error['field']}: {error['code']}: "
                    f"{error['message']}",
                    err=True,
                )
    if problems:
        raise SystemExit(1)


_file = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_wait = click.option("--wait", is_flag=True, help="Wait for every outcome and summarise them.")
_timeout = click.option(
    "--timeout", default=60.0, show_default=True, help="Seconds to wait for each outcome."
)
_json = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
_reseller = click.option(
    "--reseller",
    help="The reseller of lines that name none (a line's own `reseller` wins); lines may "
    "leave it out only while exactly one reseller exists.",
)


@click.group("charges")
def charges() -> None:
    """Charges: services used, billed to a customer's balance and invoiced once."""


@charges.command("load")
@_file
@_reseller
@_wait
@_timeout
@_json
def load_charges(
    file: Path, reseller: str | None, wait: bool, timeout: float, as_json: bool
) -> None:
    """Queue every charge of FILE (JSON lines) on the `charges` queue.

    Each line: {"reseller": NAME, "customer": NAME (or "customer_id": ID), "amount": "12.50",
    "currency": "USD", "occurred_at": ISO-8601 instant, "description": TEXT,
    "idempotency_key": KEY}. Loading the same file again records nothing twice. Exits 1 if
    any line was unreadable or (with --wait) refused.
    """
    from tasks.charges import record_charge_task

    _load(record_charge_task, file, reseller, wait, timeout, as_json)


@click.group("payments")
def payments() -> None:
    """Payments (postpaid) and top-ups (prepaid)."""


@payments.command("load")
@_file
@_reseller
@_wait
@_timeout
@_json
def load_payments(
    file: Path, reseller: str | None, wait: bool, timeout: float, as_json: bool
) -> None:
    """Queue every payment or top-up of FILE (JSON lines) on the `charges` queue.

    Each line: {"reseller": NAME, "customer": NAME (or "customer_id": ID), "amount": "50.00",
    "currency": "USD", "received_at": ISO-8601 instant, "description": TEXT (optional),
    "idempotency_key": KEY}.
    """
    from tasks.charges import record_payment_task

    _load(record_payment_task, file, reseller, wait, timeout, as_json)


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
    if mismatches:
        raise SystemExit(1)


COMMANDS = [charges, payments, balances]
