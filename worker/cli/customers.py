"""`billing customers …`: enqueue customer-creation jobs, and look at stored customers.

`enqueue FILE` reads JSON Lines (one JSON object per line) or CSV (header row = payload
keys, `custom_data.<field>` columns for custom data, an empty cell = key absent), sends one
`billing.customers.create` job per well-formed line, and reports malformed lines as
`line N: …` on stderr without stopping. With `--wait` it waits for every result and prints
a summary: created, duplicate (a repeated idempotency key: the original customer), rejected
with reasons per line, failed.

Exit status: 0 when every line was enqueued (and, with `--wait`, created or a duplicate);
1 when any line was malformed, rejected, failed, timed out, is still queued for want of a
worker, or has no known outcome because the broker or result backend was lost.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from models.catalog import BusinessModel, CustomerClass, Reseller
from models.customer import Customer
from models.intake import MAX_IMPORT_CHUNK, claimed_identities
from models.money import MoneyError, quantum
from worker.cli._common import (
    SECONDS,
    Line,
    Outcome,
    Report,
    count_lines,
    describe,
    exit_status,
    format_of,
    iso_utc,
    lines_to_resend,
    open_input,
    open_output,
    prepare_producer,
    read_lines,
    record_malformed,
    send_and_collect,
    send_or_note,
)
from worker.cli._common import _collect as collect_results
from worker.cli._reseller import customer_or_fail, reseller_option, reseller_or_fail
from worker.config import settings
from worker.db import unit_of_work

TASK_NAME = "billing.customers.create"
IMPORT_TASK = "billing.customers.import"


def _describe_errors(errors: list[dict[str, Any]]) -> str:
    return "; ".join(describe(e) for e in errors)


def _input_file(command: Any) -> Any:
    """FILE and --format, as every command reading customer lines takes them."""
    command = click.option(
        "--format",
        "fmt",
        type=click.Choice(["auto", "jsonl", "csv"]),
        default="auto",
        show_default=True,
        help="Input format; auto means CSV for *.csv, JSON Lines otherwise.",
    )(command)
    return click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))(command)


_progress = click.option(
    "--progress/--no-progress", default=None, help="Progress bars (default: on a tty)."
)


def _results_option(verb: str) -> Any:
    return click.option(
        "--results",
        "results_path",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        help=f"{verb} one JSON line per input line (its outcome) to this file.",
    )


def _prepare(
    file: str, fmt: str, results_path: Path | None, progress: bool | None
) -> tuple[IO[str] | None, bool, str, bool]:
    """Before anything is sent: the input exists, the results file is open, the data folder
    is there; (results, progress bars shown, format, whether it was guessed)."""
    if file != "-" and not Path(file).is_file():
        raise click.BadParameter(f"{file} is not a file", param_hint="FILE")
    results = open_output(results_path)
    settings().ensure_data_dir()
    show_progress = sys.stderr.isatty() if progress is None else progress
    return (results, show_progress, *format_of(file, fmt))


@click.group("customers")
def customers() -> None:
    """Customer intake and the stored customers."""


@customers.command("enqueue")
@_input_file
@click.option("--wait", is_flag=True, help="Wait for every result and print a summary.")
@click.option(
    "--timeout",
    type=SECONDS,
    default=600.0,
    show_default=True,
    help="With --wait: seconds to wait for all results.",
)
@_results_option("With --wait: write")
@_progress
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
    results, show_progress, fmt, guessed = _prepare(file, fmt, results_path, progress)
    with open_input(file) as stream:
        report = send_and_collect(
            app,
            TASK_NAME,
            read_lines(stream, fmt, guessed=guessed),
            queue="intake",
            wait=wait,
            timeout=timeout,
            progress=show_progress,
            total=count_lines(file),
        )
    click.echo(
        f"enqueued {report.sent} job(s); {report.malformed} malformed line(s) skipped", err=True
    )
    for note in report.notes:
        click.echo(note, err=True)
    if not wait:
        exit_status(bool(report.malformed or report.notes))
        return
    _summarise(report, results)


def _summarise(report: Report, results: IO[str] | None) -> None:
    """Per-line problems on stdout, the counts, the lines to send again, the results file;
    and the exit status (`enqueue --wait` and `import` alike)."""
    counts = report.counts(_kind)
    for number in sorted(report.outcomes):
        outcome = report.outcomes[number]
        kind = _kind(outcome)
        if kind == "rejected":
            click.echo(f"line {number}: rejected: {_describe_errors(outcome.result['errors'])}")
        elif kind == "failed":
            click.echo(f"line {number}: failed: {outcome.result.get('error')}")
    click.echo(
        ", ".join(
            f"{kind}: {counts.get(kind, 0)}"
            for kind in _KINDS
            if kind in _ALWAYS_SHOWN or counts.get(kind)
        )
    )
    resend = lines_to_resend(report, ("timeout", "unknown", "not_sent"))
    if resend:
        click.echo(f"lines without an outcome (send them again): {resend}", err=True)
    if results is not None:
        with results:
            for number in sorted(report.outcomes):
                outcome = report.outcomes[number]
                results.write(json.dumps(outcome.as_json()) + "\n")
    exit_status(any(counts[k] for k in _KINDS if k not in {"created", "duplicate"}))


# --------------------------------------------------------------------------------------------
# Bulk import: chunks of lines per message


@customers.command("import")
@_input_file
@click.option(
    "--chunk-size",
    type=click.IntRange(1, MAX_IMPORT_CHUNK),
    default=1000,
    show_default=True,
    help="Lines per message.",
)
@click.option(
    "--timeout",
    type=SECONDS,
    default=3600.0,
    show_default=True,
    help="Seconds to wait for all results.",
)
@_results_option("Write")
@_progress
def import_command(
    file: str,
    fmt: str,
    chunk_size: int,
    timeout: float,
    results_path: Path | None,
    progress: bool | None,
) -> None:
    """Import the customers of FILE in chunks (JSON Lines or CSV; - for stdin) and wait.

    Each chunk of lines is one `billing.customers.import` message, validated with the
    intake rules and stored set-based; outcomes, summary, results file and exit status are
    those of `enqueue --wait`.
    """
    from worker.celery_app import app

    results, show_progress, fmt, guessed = _prepare(file, fmt, results_path, progress)
    prepare_producer(app, wait=True)
    deadline = time.monotonic() + timeout
    report = Report()
    chunks = 0
    with open_input(file) as stream:
        wave: Iterable[Line] = read_lines(stream, fmt, guessed=guessed)
        while True:
            sent, later = _send_wave(app, wave, report, chunk_size, progress=show_progress)
            chunks += len(sent)
            _collect_wave(app, sent, report, deadline=deadline, progress=show_progress)
            if not later:
                break
            if report.notes:
                for line in later:
                    report.outcomes[line.number] = Outcome(line.number, "not_sent")
                break
            wave = later
    click.echo(
        f"sent {report.sent} line(s) in {chunks} chunk(s); "
        f"{report.malformed} malformed line(s) skipped",
        err=True,
    )
    for note in report.notes:
        click.echo(note, err=True)
    _summarise(report, results)


Chunk = tuple[list[int], Any]  # line numbers, and the message's AsyncResult


def _send_wave(
    app: Any, lines: Iterable[Line], report: Report, size: int, *, progress: bool
) -> tuple[list[Chunk], list[Line]]:
    """Send `lines` in chunks of `size`; return the chunks sent and the lines kept for a
    later wave. Lines claiming the same name or idempotency key are decided in file order:
    a line sharing a claim with a line of an earlier chunk of this wave (which may run at
    the same time on another worker) waits for the next wave, and so does every later line
    sharing a claim with a waiting one."""
    sent: list[Chunk] = []
    later: list[Line] = []
    owner: dict[tuple[str, str, str], int] = {}  # claim -> chunk index; -1: a later wave
    current: list[Line] = []

    def send(chunk: list[Line]) -> None:
        numbers = [line.number for line in chunk]
        if not report.notes:
            body = [[line.number, line.payload] for line in chunk]
            result = send_or_note(app, IMPORT_TASK, body, report, numbers[0])
            if result is not None:
                sent.append((numbers, result))
                report.sent += len(chunk)
                return
        for number in numbers:
            report.outcomes[number] = Outcome(number, "not_sent")

    with tqdm(unit="line", desc="send", disable=not progress, file=sys.stderr) as bar:
        for line in lines:
            bar.update(1)
            if line.payload is None:
                record_malformed(report, line, bar)
                continue
            claims = claimed_identities(line.payload)
            index = len(sent)
            if any(owner.get(claim, index) != index for claim in claims):
                later.append(line)
                owner.update(dict.fromkeys(claims, -1))
                continue
            current.append(line)
            owner.update(dict.fromkeys(claims, index))
            if len(current) >= size:
                send(current)
                current = []
        if current:
            send(current)
    return sent, later


def _collect_wave(
    app: Any, sent: list[Chunk], report: Report, *, deadline: float, progress: bool
) -> None:
    """Wait for every chunk of a wave; each line gets its own outcome from its chunk's."""
    if not sent:
        return
    chunk_report = Report()
    pending = [(index, result) for index, (_, result) in enumerate(sent)]
    timeout = max(deadline - time.monotonic(), 0.1)
    collect_results(app, pending, chunk_report, queue="intake", timeout=timeout, progress=progress)
    report.notes.extend(chunk_report.notes)
    for index, (numbers, result) in enumerate(sent):
        chunk = chunk_report.outcomes[index]
        lines = chunk.result.get("results")
        if chunk.status == "imported" and isinstance(lines, list) and len(lines) == len(numbers):
            for number, value in zip(numbers, lines, strict=True):
                report.outcomes[number] = Outcome(
                    number, str(value.get("status")), {**value, "task_id": result.id}
                )
        else:
            status = "failed" if chunk.status in {"imported", "rejected"} else chunk.status
            detail = {k: v for k, v in chunk.result.items() if k in {"task_id", "error"}}
            if status == "failed" and "error" not in detail:
                detail["error"] = repr(chunk.result)
            for number in numbers:
                report.outcomes[number] = Outcome(number, status, dict(detail))
    if chunk_report.notes:
        # The backend is gone: a result must not try to unsubscribe from it later.
        for _, result in sent:
            result.backend = None


_ALWAYS_SHOWN = ("created", "duplicate", "rejected", "malformed", "failed", "timeout")
_KINDS = (*_ALWAYS_SHOWN, "queued", "unknown", "not_sent")


def _kind(outcome: Outcome) -> str:
    if outcome.status == "created" and outcome.result.get("replayed"):
        return "duplicate"
    return outcome.status


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
    return iso_utc(value) if value is not None else None


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
