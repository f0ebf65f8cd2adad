"""Loading the catalog (resellers, their business models and customer classes) into the database.

`load_catalog(session, catalog)` upserts every entry by name key (`models.names`): resellers
by key, business models and customer classes by key within their reseller. A new name is
inserted, an entry whose fields differ is updated (also when only the name's case changed),
an identical one is not written at all, so loading the same file twice changes nothing (and
reports zero created and zero updated). Entries missing from the file are left alone:
customers refer to them.

The insert is `INSERT … ON CONFLICT (key) DO UPDATE`, so two loaders racing on a new name
both succeed with the same final row; only the created/updated counts may then be off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from models.base import table_of
from models.catalog import BusinessModel, CustomerClass, Reseller
from models.catalog_file import CatalogFile, CatalogFileError
from models.names import name_key
from tasks.catalog_plans import load_plans
from worker.db import dialect_insert


def _reseller_row(spec: Any) -> dict[str, Any]:
    return {
        "name_key": name_key(spec.name),
        "name": spec.name,
        "display_name": spec.display_name or spec.name,
        **spec.party_row(),
    }


def _business_model_row(reseller_id: int, spec: Any) -> dict[str, Any]:
    return {
        "reseller_id": reseller_id,
        "name_key": name_key(spec.name),
        "name": spec.name,
        "service_type": spec.service_type,
        "description": spec.description,
    }


def _customer_class_row(reseller_id: int, spec: Any) -> dict[str, Any]:
    return {
        "reseller_id": reseller_id,
        "name_key": name_key(spec.name),
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


def _upsert(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    counts: dict[str, int],
    *,
    scope: str | None = None,
) -> None:
    """Insert or update `rows` matched by `name_key` (within `scope`, a reseller column)."""
    if not rows:
        return
    columns = list(rows[0])
    keys = [c for c in (scope, "name_key") if c is not None]
    query = select(*(table.c[c] for c in columns)).where(
        table.c.name_key.in_([row["name_key"] for row in rows])
    )
    if scope is not None:
        query = query.where(table.c[scope] == rows[0][scope])
    existing = {row.name_key: row for row in session.execute(query)}
    changed = []
    for row in rows:
        before = existing.get(row["name_key"])
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
            index_elements=[table.c[k] for k in keys],
            set_={c: insert.excluded[c] for c in columns if c not in keys},
        )
        session.execute(statement, changed)


def load_catalog(session: Session, catalog: CatalogFile) -> dict[str, dict[str, int]]:
    """Upsert every entry of `catalog` by name key; counts of created / updated / unchanged."""
    summary = {
        section: {"created": 0, "updated": 0, "unchanged": 0}
        for section in ("resellers", "business_models", "customer_classes", "plans")
    }
    resellers = table_of(Reseller)
    rows = [_reseller_row(s) for s in catalog.resellers]
    _upsert(session, resellers, rows, summary["resellers"])
    ids = dict(
        session.execute(
            select(resellers.c.name_key, resellers.c.id).where(
                resellers.c.name_key.in_([row["name_key"] for row in rows])
            )
        ).all()
    )
    for spec, row in zip(catalog.resellers, rows, strict=True):
        reseller_id = ids[row["name_key"]]
        _upsert(
            session,
            table_of(BusinessModel),
            [_business_model_row(reseller_id, s) for s in spec.business_models],
            summary["business_models"],
            scope="reseller_id",
        )
        _upsert(
            session,
            table_of(CustomerClass),
            [_customer_class_row(reseller_id, s) for s in spec.customer_classes],
            summary["customer_classes"],
            scope="reseller_id",
        )
    problems = []
    for r, (spec, row) in enumerate(zip(catalog.resellers, rows, strict=True)):
        counts, found = load_plans(
            session, ids[row["name_key"]], spec.plans, where=f"resellers[{r}].plans"
        )
        problems += found
        for key, count in counts.items():
            summary["plans"][key] += count
    if problems:  # the caller's transaction rolls back: nothing of the file is stored
        raise CatalogFileError(problems)
    return summary
