"""`billing customers …`: enqueue customer-creation jobs, and look at stored customers.

`enqueue FILE` reads JSON Lines (one JSON object per line) or CSV (header row = payload
keys, `custom_data.<field>` columns for custom data, an empty cell = key absent), sends one
`billing.customers.create` job per well-formed line, and reports malformed lines as
`line N: …` on stderr without stopping. With `--wait` it waits for every result and prints
a summary: created, duplicate (a repeated idempotency key: the original customer), rejected
with reasons per line, failed.

Exit status: 0 when every line was enqueued (and, with `--wait`, created or a duplicate);
1 when any line was malformed, rejected, failed or timed out.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import click
from celery.exceptions import TimeoutError as ResultTimeout
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from models.catalog import BusinessModel, CustomerClass, Reseller
from models.customer import Customer
from models.money import MoneyError, quantum
from worker.cli._reseller import customer_or_fail, reseller_option, reseller_or_fail
from worker.config import settings
from worker.db import unit_of_work

TASK_NAME = "billing.customers.create"


@dataclass
class Line:
    """One input record: its line number, and either a payload or why it is malformed."""

    number: int
    payload: dict[str, Any] | None = None
    error: str | None = None


def read_jsonl(stream: IO[str]) -> Iterator[Line]:
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text.rstrip("\r\n"))
        except ValueError as error:  # JSONDecodeError, or an integer too long to read
            where = (
                f"{error.msg} at column {error.colno}"
                if isinstance(error, json.JSONDecodeError)
                else str(error)
            )
            yield Line(number, error=f"not valid JSON ({where})")
            continue
        if not isinstance(value, dict):
            yield Line(number, error=f"not a JSON object (got {type(value).__name__})")
            continue
        yield Line(number, payload=value)


def read_csv(stream: IO[str]) -> Iterator[Line]:
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        yield Line(1, error=f"not valid CSV: {error}")
        return
    columns = [h.strip() for h in header]
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield Line(reader.line_num, error=f"not valid CSV: {error}")
            continue
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            yield Line(number, error=f"{len(cells)} cells but only {len(columns)} columns")
            continue
        payload: dict[str, Any] = {}
        for column, cell in zip(columns, cells, strict=False):
            if cell == "":
                continue
            if column.startswith("custom_data."):
                payload.setdefault("custom_data", {})[column.removeprefix("custom_data.")] = cell
            else:
                payload[column] = cell
        yield Line(number, payload=payload)


def _open_input(path: str) -> IO[str]:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig", newline="")


def _format_of(path: str, given: str) -> str:
    if given != "auto":
        return given
    return "csv" if path.lower().endswith(".csv") else "jsonl"


def _count_lines(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as stream:
        return sum(1 for _ in stream)


def _describe_errors(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e.get('field') or '(payload)'}: {e.get('message')}" for e in errors)


@click.group("customers")
def customers() -> None:
    """Customer intake and the stored customers."""


@customers.command("enqueue")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv"]),
    default="auto",
    show_default=True,
    help="Input format; auto means CSV for *.csv, JSON Lines otherwise.",
)
@click.option("--wait", is_flag=True, help="Wait for every result and print a summary.")
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="With --wait: seconds to wait for all results.",
)
@click.option(
    "--results",
    "results_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="With --wait: write one JSON line per input line (its outcome) to this file.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a tty).")
def enqueue_command(
    file: str,
    fmt: str,
    wait: bool,
    timeout: float,
    results_path: Path | None,
    progress: bool | None,
) -> None:
    """Send one customer-creation job per line of FILE (JSON Lines or CSV; - for stdin)."""
    from worker.celery_app import app

    if results_path is not None and not wait:
        raise click.UsageError("--results needs --wait")
    if file != "-" and not Path(file).is_file():
        raise click.BadParameter(f"{file} is not a file", param_hint="FILE")
    settings().ensure_data_dir()
    show_progress = sys.stderr.isatty() if progress is None else progress
    reader = read_csv if _format_of(file, fmt) == "csv" else read_jsonl
    outcomes: dict[int, dict[str, Any]] = {}
    sent: list[tuple[int, Any]] = []
    malformed = 0
    with (
        _open_input(file) as stream,
        tqdm(
            total=_count_lines(file),
            unit="line",
            desc="enqueue",
            disable=not show_progress,
            file=sys.stderr,
        ) as bar,
    ):
        for line in reader(stream):
            bar.update(line.number - bar.n)
            if line.payload is None:
                malformed += 1
                bar.write(f"line {line.number}: {line.error}", file=sys.stderr)
                outcomes[line.number] = {"status": "malformed", "error": line.error}
                continue
            result = app.send_task(TASK_NAME, args=[line.payload])
            sent.append((line.number, result))
    click.echo(f"enqueued {len(sent)} job(s); {malformed} malformed line(s) skipped", err=True)
    if not wait:
        sys.exit(1 if malformed else 0)
    _collect(sent, outcomes, timeout=timeout, show_progress=show_progress)
    counts = Counter(_kind(outcome) for outcome in outcomes.values())
    for number in sorted(outcomes):
        outcome = outcomes[number]
        kind = _kind(outcome)
        if kind == "rejected":
            click.echo(f"line {number}: rejected: {_describe_errors(outcome['errors'])}")
        elif kind in {"failed", "timeout"}:
            click.echo(f"line {number}: {kind}: {outcome.get('error')}")
    click.echo(
        ", ".join(
            f"{kind}: {counts.get(kind, 0)}"
            for kind in ("created", "duplicate", "rejected", "malformed", "failed", "timeout")
        )
    )
    if results_path is not None:
        with results_path.open("w", encoding="utf-8") as out:
            for number in sorted(outcomes):
                out.write(json.dumps({"line": number, **outcomes[number]}) + "\n")
    bad = sum(counts[k] for k in ("rejected", "malformed", "failed", "timeout"))
    sys.exit(1 if bad else 0)


def _kind(outcome: dict[str, Any]) -> str:
    status = str(outcome.get("status"))
    if status == "created" and outcome.get("replayed"):
        return "duplicate"
    return status


def _collect(
    sent: list[tuple[int, Any]],
    outcomes: dict[int, dict[str, Any]],
    *,
    timeout: float,
    show_progress: bool,
) -> None:
    deadline = time.monotonic() + timeout
    with tqdm(
        total=len(sent), unit="job", desc="results", disable=not show_progress, file=sys.stderr
    ) as bar:
        for number, result in sent:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                value = result.get(timeout=remaining, propagate=False)
            except ResultTimeout:
                outcomes[number] = {"status": "timeout", "task_id": result.id, "error": "no result"}
                bar.update(1)
                continue
            if result.successful() and isinstance(value, dict):
                outcomes[number] = {**value, "task_id": result.id}
            else:
                outcomes[number] = {"status": "failed", "task_id": result.id, "error": repr(value)}
            bar.update(1)


# --------------------------------------------------------------------------------------------
# Reading what was stored


def _customer_rows(  # type: ignore[no-untyped-def]
    session: Session, *, customer_id: int | None = None, reseller_id: int | None = None
):
    statement = (
        select(
            Customer,
            Reseller.name.label("reseller"),
            BusinessModel.name.label("business_model"),
            CustomerClass.name.label("customer_class"),
        )
        .join(Reseller, Reseller.id == Customer.reseller_id)
        .join(BusinessModel, BusinessModel.id == Customer.business_model_id)
        .join(CustomerClass, CustomerClass.id == Customer.customer_class_id)
        .order_by(Customer.id)
    )
    if customer_id is not None:
        statement = statement.where(Customer.id == customer_id)
    if reseller_id is not None:
        statement = statement.where(Customer.reseller_id == reseller_id)
    return session.execute(statement).all()


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _amount(value: Decimal | None, currency: str) -> str | None:
    """An amount as text with its currency's decimals (stored with four)."""
    if value is None:
        return None
    try:
        return str(value.quantize(quantum(currency)))
    except MoneyError:
        return str(value)


def customer_json(row: Any) -> dict[str, Any]:
    customer: Customer = row.Customer
    return {
        "id": customer.id,
        "name": customer.name,
        "reseller": row.reseller,
        "business_model": row.business_model,
        "customer_class": row.customer_class,
        "billing_period": customer.billing_period,
        "billing_timezone": customer.billing_timezone,
        "balance_control": customer.balance_control,
        "currency": customer.currency,
        "credit_limit": _amount(customer.credit_limit, customer.currency),
        "balance": _amount(customer.balance, customer.currency),
        "blocked": customer.blocked,
        "status": customer.status,
        "custom_data": customer.custom_data,
        "created_at": _iso(customer.created_at),
        "created_local_date": customer.created_local_date.isoformat(),
        "current_period_start": _iso(customer.current_period_start),
        "current_period_end": _iso(customer.current_period_end),
        "idempotency_key": (
            customer.intake_key
            if customer.intake_key and not customer.intake_key.startswith("task:")
            else None
        ),
    }


@customers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--reseller", help="Only this reseller's customers (name, any case).")
def list_command(as_json: bool, reseller: str | None) -> None:
    """List the stored customers (of every reseller, or of --reseller)."""
    with unit_of_work() as session:
        reseller_id = reseller_or_fail(session, reseller).id if reseller is not None else None
        rows = [customer_json(r) for r in _customer_rows(session, reseller_id=reseller_id)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no customers")
        return
    headers = ["id", "name", "reseller", "class", "period", "timezone", "balance", "period ends"]
    table = [
        [
            str(r["id"]),
            r["name"],
            r["reseller"],
            r["customer_class"],
            r["billing_period"],
            r["billing_timezone"],
            f"{r['balance']} {r['currency']} ({r['balance_control']})",
            r["current_period_end"],
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


@customers.command("show")
@click.argument("name")
@reseller_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(name: str, reseller: str | None, as_json: bool) -> None:
    """Show the reseller's customer called NAME (ignoring case)."""
    with unit_of_work() as session:
        _, found = customer_or_fail(session, reseller, name)
        customer = customer_json(_customer_rows(session, customer_id=found.id)[0])
    if as_json:
        click.echo(json.dumps(customer, indent=2, ensure_ascii=False))
        return
    width = max(len(k) for k in customer)
    for key, value in customer.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
        click.echo(f"{key.ljust(width)}  {'' if shown is None else shown}")


COMMANDS = [customers]
