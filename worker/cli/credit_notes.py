"""`billing credit-notes show`: a credit note and its documents (HTML, PDF, EN 16931 XML)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from sqlalchemy import select

from worker.cli.invoices import _write_documents
from worker.db import unit_of_work

_FILE = click.Path(dir_okay=False, writable=True, path_type=Path)


@click.group("credit-notes")
def credit_notes() -> None:
    """Credit notes: corrections of issued invoices, numbered without gaps per reseller."""


@credit_notes.command("show")
@click.argument("number", type=int)
@click.option("--reseller", required=True, help="The reseller whose credit note NUMBER it is.")
@click.option("--html", "html_path", type=_FILE, help="Write the credit note as HTML.")
@click.option("--pdf", "pdf_path", type=_FILE, help="Write it as PDF (Factur-X if the class asks).")
@click.option("--xml", "xml_path", type=_FILE, help="Write its EN 16931 CII XML (type 381).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_credit_note(
    number: int,
    reseller: str,
    html_path: Path | None,
    pdf_path: Path | None,
    xml_path: Path | None,
    as_json: bool,
) -> None:
    """Show credit note NUMBER of RESELLER; --html/--pdf/--xml FILE write its documents,
    rendered from the stored credit note and its invoice (the same bytes every time)."""
    from models import CreditNote, Reseller
    from tasks.invoice_documents import load_credit_note_view

    with unit_of_work() as session:
        note_id = session.scalar(
            select(CreditNote.id)
            .join(Reseller, Reseller.id == CreditNote.reseller_id)
            .where(Reseller.name == reseller, CreditNote.number == number)
        )
        if note_id is None:
            raise click.ClickException(f"{reseller} has no credit note number {number}")
        view = load_credit_note_view(session, note_id)
    assert view is not None
    written = _write_documents(view, html_path, pdf_path, xml_path)
    item = {
        "number": view.number,
        "reseller": reseller,
        "customer": view.buyer.name,
        "credits_invoice": view.credited_number,
        "issue_date": view.issue_date.isoformat(),
        "currency": view.currency,
        "subtotal": str(view.subtotal),
        "tax": str(view.tax),
        "total": str(view.total),
        "reason": view.lines[0].description if view.lines else "",
    }
    if as_json:
        click.echo(json.dumps(item, indent=2))
    else:
        click.echo(
            f"Credit note {view.number} ({reseller}) for {view.buyer.name}, credits invoice "
            f"{view.credited_number}: {item['total']} {view.currency} ({item['reason']})"
        )
    for path in written:
        click.echo(f"document written to {path}")


COMMANDS = [credit_notes]
