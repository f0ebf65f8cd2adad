"""`billing catalog …`: load resellers, business models and customer classes from a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError

from models.catalog_file import CatalogFileError, check_templates, parse_catalog
from tasks.catalog import load_catalog
from worker.config import settings
from worker.db import unit_of_work


@click.group("catalog")
def catalog() -> None:
    """The catalog customers refer to: resellers, business models, customer classes."""


@catalog.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or errors) as JSON.")
def load_command(file: Path, as_json: bool) -> None:
    """Create or update the resellers of FILE (YAML or JSON) with their business models and
    customer classes, matched by name (ignoring case) within each reseller.

    Loading the same file again changes nothing. Entries not in FILE are kept. An invalid
    file (including a class naming an invoice template that does not exist) is reported in
    full and nothing is stored (exit status 1).
    """
    from tasks.invoice_documents import template_environment

    try:
        spec = parse_catalog(file.read_text(encoding="utf-8-sig"), filename=file.name)
        templates = template_environment(settings().template_dir, "en")
        check_templates(spec, templates.list_templates(extensions=["html"]))
    except (CatalogFileError, UnicodeDecodeError) as error:
        problems = (
            error.errors
            if isinstance(error, CatalogFileError)
            else [{"field": None, "code": "invalid_text", "message": f"not UTF-8 text: {error}"}]
        )
        if as_json:
            click.echo(json.dumps({"status": "invalid", "errors": problems}, indent=2))
        else:
            click.echo(f"{file}: the catalog is not valid, nothing was stored:", err=True)
            for problem in problems:
                click.echo(f"  {problem['field'] or '(file)'}: {problem['message']}", err=True)
        sys.exit(1)
    settings().ensure_data_dir()
    try:
        with unit_of_work() as session:
            summary = load_catalog(session, spec)
    except DBAPIError as error:
        raise click.ClickException(
            f"database error, nothing was stored: {error.orig or error}\n"
            "(is the schema up to date? run `billing db upgrade`)"
        ) from None
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
