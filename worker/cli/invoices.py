"""`billing invoices …`: read issued invoices, queue their generation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select

from models.collections_rules import InvoiceState
from worker.cli._common import LIMIT, ROW_ID, SECONDS, check_output_paths, prepare_producer
from worker.db import unit_of_work


def _query() -> Any:
    from models import Customer, Invoice, Reseller

    return (
        select(Invoice, Customer.name, Reseller.name)
        .join(Customer, Customer.id == Invoice.customer_id)
        .join(Reseller, Reseller.id == Invoice.reseller_id)
    )


def _as_dict(invoice: Any, customer: str, reseller: str) -> dict[str, Any]:
    """An invoice as JSON-safe values; amounts in the currency's minor units."""
    from models.money import round_money

    def money(value: Any) -> str:
        return str(round_money(value, invoice.currency))

    return {
        "number": invoice.number,
        "reseller": reseller,
        "customer": customer,
        "status": invoice.status,
        "currency": invoice.currency,
        "subtotal": money(invoice.subtotal),
        "tax_name": invoice.tax_name,
        "tax_rate": str(invoice.tax_rate.normalize()),
        "tax": money(invoice.tax),
        "total": money(invoice.total),
        "covered_from": invoice.covered_from.isoformat(),
        "covered_to": invoice.covered_to.isoformat(),
        "issue_date": invoice.issue_date and invoice.issue_date.isoformat(),
        "due_date": invoice.due_date and invoice.due_date.isoformat(),
        "closed_period_id": invoice.closed_period_id,
        "invoice_id": invoice.id,
    }


@click.group("invoices")
def invoices() -> None:
    """Invoices: one per closed billing period, numbered without gaps per reseller."""


STATES = tuple(s.value for s in InvoiceState)


@invoices.command("list")
@click.option("--customer", help="Only this customer's invoices (name, any case).")
@click.option("--reseller", help="Only this reseller's invoices.")
@click.option(
    "--status",
    type=click.Choice(STATES),
    help="Only invoices in this state now (overdue: unpaid past the local due day).",
)
@click.option(
    "--limit", default=100, show_default=True, type=LIMIT, help="At most this many, newest first."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_invoices(
    customer: str | None, reseller: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List issued (and void) invoices, newest first, with what each still asks for."""
    from models import Customer, Invoice, InvoiceStatus, Reseller
    from tasks.base import database_clock
    from tasks.statements import standings

    query = _query().where(Invoice.status != InvoiceStatus.GENERATING)
    if status == InvoiceStatus.VOID:
        query = query.where(Invoice.status == InvoiceStatus.VOID)
    elif status is not None:
        query = query.where(Invoice.status == InvoiceStatus.ISSUED)
    if customer:
        query = query.where(func.lower(Customer.name) == func.lower(customer))
    if reseller:
        query = query.where(Reseller.name == reseller)
    query = query.order_by(Invoice.issued_at.desc(), Invoice.id.desc())
    items: list[dict[str, Any]] = []
    with unit_of_work() as session:
        now = database_clock(session)
        # The state depends on sums and on each billing zone's clock, so it is decided here,
        # a page of rows at a time, until `limit` invoices in the state are found.
        for page in session.execute(query.execution_options(yield_per=500)).partitions():
            standing = standings(session, [row[0] for row in page], at=now)
            for invoice, customer_name, reseller_name in page:
                state = standing[invoice.id]
                if status is None or state.state == status:
                    items.append(
                        _as_dict(invoice, customer_name, reseller_name)
                        | state.as_json(invoice.currency)
                    )
                if len(items) >= limit:
                    break
            if len(items) >= limit:
                break
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no invoices")
        return
    for item in items:
        click.echo(
            f"{item['reseller']:<12} {item['number']:>6}  {item['issue_date']}  "
            f"due {item['due_date']}  {item['customer']:<30} "
            f"{item['total']:>14} {item['currency']}  {item['state']:<14} "
            f"due now {item['amount_due']:>12}  "
            f"({item['covered_from']} .. {item['covered_to']})"
        )


@invoices.command("show")
@click.argument("number", type=ROW_ID)
@click.option("--reseller", help="The reseller whose NUMBER it is (needed if several have it).")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the invoice document (HTML) to this file.",
)
@click.option(
    "--pdf",
    "pdf_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the invoice as PDF (Factur-X PDF/A-3 when its class asks for an e-invoice).",
)
@click.option(
    "--xml",
    "xml_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write its EN 16931 e-invoice (Factur-X / ZUGFeRD CII XML) to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_invoice(
    number: int,
    reseller: str | None,
    html_path: Path | None,
    pdf_path: Path | None,
    xml_path: Path | None,
    as_json: bool,
) -> None:
    """Show invoice NUMBER with its lines; --html/--pdf/--xml FILE write its documents,
    rendered from the stored invoice (the same bytes every time)."""
    from models import Invoice, InvoiceLine, Reseller
    from models.invoicing_rules import format_rate
    from models.money import round_money
    from tasks.base import database_clock
    from tasks.invoice_documents import load_invoice_view
    from tasks.statements import standings

    check_output_paths(html_path, pdf_path, xml_path)
    query = _query().where(Invoice.number == number)
    if reseller:
        query = query.where(Reseller.name == reseller)
    with unit_of_work() as session:
        rows = session.execute(query).all()
        if not rows:
            raise click.ClickException(f"no invoice number {number}")
        if len(rows) > 1:
            names = ", ".join(sorted(r[2] for r in rows))
            raise click.ClickException(
                f"several resellers have an invoice {number} ({names}); give --reseller"
            )
        invoice, customer_name, reseller_name = rows[0]
        item = _as_dict(invoice, customer_name, reseller_name)
        standing = standings(session, [invoice], at=database_clock(session)).get(invoice.id)
        if standing is not None:
            item |= standing.as_json(invoice.currency)
        item["lines"] = [
            {
                "description": line.description,
                "amount": str(round_money(line.amount, invoice.currency)),
                "occurred_at": line.occurred_at and line.occurred_at.isoformat(),
            }
            for line in session.scalars(
                select(InvoiceLine)
                .where(InvoiceLine.invoice_id == invoice.id)
                .order_by(InvoiceLine.occurred_at, InvoiceLine.id)
            )
        ]
        view = load_invoice_view(session, invoice.id)
    written = _write_documents(view, html_path, pdf_path, xml_path)
    if as_json:
        click.echo(json.dumps(item, indent=2))
        return
    click.echo(f"Invoice {item['number']} ({item['reseller']}) for {item['customer']}")
    click.echo(f"  covers {item['covered_from']} .. {item['covered_to']}")
    click.echo(f"  issued {item['issue_date']}, due {item['due_date']}")
    for line in item["lines"]:
        click.echo(f"  {line['occurred_at'] or '':<32} {line['amount']:>14}  {line['description']}")
    click.echo(f"  subtotal {item['subtotal']} {item['currency']}")
    click.echo(f"  {item['tax_name']} ({format_rate(Decimal(item['tax_rate']))}) {item['tax']}")
    click.echo(f"  total {item['total']} {item['currency']}")
    if "state" in item:
        click.echo(f"  {item['state']}: {item['amount_due']} {item['currency']} due")
    for path in written:
        click.echo(f"document written to {path}")


def _write_documents(
    view: Any, html_path: Path | None, pdf_path: Path | None, xml_path: Path | None
) -> list[Path]:
    from models.invoice_view import EInvoiceFormat
    from tasks.invoice_documents import (
        RenderError,
        einvoice_xml,
        render_facturx_pdf,
        render_html,
        render_pdf,
    )
    from worker.config import settings

    wanted = [p for p in (html_path, pdf_path, xml_path) if p is not None]
    if not wanted:
        return []
    if view is None:
        raise click.ClickException("this invoice is not issued yet: it has no documents")
    template_dir = settings().template_dir
    try:
        if html_path is not None:
            html_path.write_text(render_html(view, template_dir=template_dir), encoding="utf-8")
        if pdf_path is not None:
            render = render_facturx_pdf if view.einvoice is EInvoiceFormat.FACTURX else render_pdf
            pdf_path.write_bytes(render(view, template_dir=template_dir))
        if xml_path is not None:
            xml_path.write_bytes(einvoice_xml(view))
    except RenderError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {error.filename}: {error.strerror}") from None
    return wanted


@invoices.command("generate")
@click.argument("closed_period_ids", nargs=-1, type=ROW_ID, required=True)
@click.option("--wait", is_flag=True, help="Wait for the worker's summary and print it.")
@click.option("--timeout", default=300.0, show_default=True, type=SECONDS)
def generate(closed_period_ids: tuple[int, ...], wait: bool, timeout: float) -> None:
    """Queue invoice generation for CLOSED_PERIOD_IDS (safe to repeat: nothing is doubled).

    With --wait, prints the worker's summary and exits 1 if any id failed or is missing."""
    from tasks.base import WorkFailed
    from tasks.invoicing import generate_invoices_task

    prepare_producer(generate_invoices_task.app, wait=wait)
    result = generate_invoices_task.apply_async(args=[list(closed_period_ids)])
    if not wait:
        click.echo(f"queued {result.id}")
        return
    try:
        summary = result.get(timeout=timeout)
    except WorkFailed as failed:
        click.echo(json.dumps(failed.summary, indent=2))
        click.echo(f"billing invoices generate: {failed}", err=True)
        raise SystemExit(1) from None
    click.echo(json.dumps(summary, indent=2))


COMMANDS = [invoices]
