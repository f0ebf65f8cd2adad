"""`billing catalog …`: load resellers, business models and customer classes from a file."""

from __future__ import annotations

import json

import click

from models.catalog_file import CatalogFileError, check_templates, parse_catalog
from tasks.catalog import load_catalog
from worker.cli._common import exit_status, open_input
from worker.config import settings
from worker.db import unit_of_work


@click.group("catalog")
def catalog() -> None:
    """The catalog customers refer to: resellers, business models, customer classes."""


@catalog.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or errors) as JSON.")
def load_command(file: str, as_json: bool) -> None:
    """Create or update the resellers of FILE (YAML or JSON; - reads stdin) with their
    business models and customer classes, matched by name (ignoring case) within each
    reseller.

    Loading the same file again changes nothing. Entries not in FILE are kept. An invalid
    file (including a class naming an invoice template that does not exist) is reported in
    full and nothing is stored (exit status 1).
    """
    from tasks.invoice_documents import template_environment

    with open_input(file) as stream:
        raw = stream.read()
    try:
        spec = parse_catalog(raw.decode("utf-8-sig"), filename="" if file == "-" else file)
        templates = template_environment(settings().template_dir, "en")
        check_templates(spec, templates.list_templates(extensions=["html"]))
        settings().ensure_data_dir()
        with unit_of_work() as session:
            summary = load_catalog(session, spec)  # plans are checked against the database
    except (CatalogFileError, UnicodeDecodeError) as error:
        problems = (
            error.errors
            if isinstance(error, CatalogFileError)
            else [{"field": None, "code": "invalid_text", "message": f"not UTF-8 text: {error}"}]
        )
        if as_json:
            click.echo(json.dumps({"status": "invalid", "errors": problems}, indent=2))
        else:
            shown = "standard input" if file == "-" else file
            click.echo(f"{shown}: the catalog is not valid, nothing was stored:", err=True)
            for problem in problems:
                click.echo(f"  {problem['field'] or '(file)'}: {problem['message']}", err=True)
        exit_status(True)
        return
    if as_json:
        click.echo(json.dumps({"status": "loaded", **summary}, indent=2))
        return
    for section, counts in summary.items():
        label = section.replace("_", " ")
        click.echo(
            f"{label}: {counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged"
        )


COMMANDS = [catalog]
