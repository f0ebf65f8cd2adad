"""Loading the catalog (resellers, business models, customer classes) into the database.

`load_catalog(session, catalog)` upserts every entry by name: a new name is inserted, an
entry whose fields differ is updated, an identical one is not written at all, so loading
the same file twice changes nothing (and reports zero created and zero updated). Entries
missing from the file are left alone: customers refer to them.

The insert is `INSERT … ON CONFLICT (name) DO UPDATE`, so two loaders racing on a new name
both succeed with the same final row; only the created/updated counts may then be off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from models.base import table_of
from models.catalog import BusinessModel, CustomerClass, Reseller
from models.catalog_file import CatalogFile
from worker.db import dialect_insert


def _reseller_row(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "display_name": spec.display_name or spec.name, **spec.party_row()}


def _business_model_row(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "service_type": spec.service_type,
        "description": spec.description,
    }


def _customer_class_row(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "grace_period_days": spec.grace_period_days,
        "invoice_template": spec.invoice_template,
        "tax_name": spec.tax_name,
        "tax_rate": spec.tax_rate,
        "notification_emails": list(spec.notification_emails),
        "custom_fields": spec.custom_fields_json(),
        "requires": list(spec.requires),
        "einvoice_format": spec.einvoice_format,
        "locale": spec.locale,
        "reminder_days": sorted(spec.collection.reminder_days, reverse=True),
        "overdue_notice": spec.collection.overdue_notice,
        "suspend_after_days": spec.collection.suspend_after_days,
        "terminate_after_days": spec.collection.terminate_after_days,
    }


def _upsert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    if not rows:
        return counts
    columns = list(rows[0])
    names = [row["name"] for row in rows]
    existing = {
        row.name: row
        for row in session.execute(
            select(*(table.c[c] for c in columns)).where(table.c.name.in_(names))
        )
    }
    changed = []
    for row in rows:
        before = existing.get(row["name"])
        if before is None:
            counts["created"] += 1
            changed.append(row)
        elif any(getattr(before, c) != row[c] for c in columns):
            counts["updated"] += 1
            changed.append(row)
        else:
            counts["unchanged"] += 1
    if changed:
        insert = dialect_insert(session)(table)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.name],
            set_={c: insert.excluded[c] for c in columns if c != "name"},
        )
        session.execute(statement, changed)
    return counts


def load_catalog(session: Session, catalog: CatalogFile) -> dict[str, dict[str, int]]:
    """Upsert every entry of `catalog` by name; counts of created / updated / unchanged."""
    return {
        "resellers": _upsert(
            session, table_of(Reseller), [_reseller_row(s) for s in catalog.resellers]
        ),
        "business_models": _upsert(
            session,
            table_of(BusinessModel),
            [_business_model_row(s) for s in catalog.business_models],
        ),
        "customer_classes": _upsert(
            session,
            table_of(CustomerClass),
            [_customer_class_row(s) for s in catalog.customer_classes],
        ),
    }
