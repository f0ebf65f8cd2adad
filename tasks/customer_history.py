"""Recording what changed on a customer: one `customer_changes` row per field changed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import CustomerChange
from worker.db import dialect_insert


@dataclass(frozen=True)
class Change:
    """One field's change; values are JSON-safe (amounts as strings)."""

    field: str
    old: Any
    new: Any
    effective_at: dt.datetime | None = None  # None: at once (the request's instant)

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new}


def record_changes(
    session: Session,
    customer_id: int,
    changes: Iterable[Change],
    *,
    now: dt.datetime,
    request_id: str | None,
) -> None:
    rows = [
        {
            "customer_id": customer_id,
            "field": change.field,
            "old_value": change.old,
            "new_value": change.new,
            "changed_at": now,
            "effective_at": change.effective_at or now,
            "request_id": request_id,
        }
        for change in changes
    ]
    if rows:
        session.execute(dialect_insert(session)(CustomerChange), rows)


def history(session: Session, customer_id: int) -> list[dict[str, Any]]:
    """The customer's changes, oldest first, as JSON."""
    rows = session.scalars(
        select(CustomerChange)
        .where(CustomerChange.customer_id == customer_id)
        .order_by(CustomerChange.id)
    )
    return [
        {
            "field": row.field,
            "old": row.old_value,
            "new": row.new_value,
            "changed_at": _iso(row.changed_at),
            "effective_at": _iso(row.effective_at),
            "request_id": row.request_id,
        }
        for row in rows
    ]


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
