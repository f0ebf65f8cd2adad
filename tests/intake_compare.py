"""Comparing a bulk import with one-by-one intake: stored rows and outcomes without ids.

Customer ids differ between two runs, so rows name their customer by reseller and name;
keys made from a delivery (`task:…`, a task id) differ too and are shown as `delivery`.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models import Customer, CustomerBlock, LedgerEntry, Subscription
from tasks.intake import create_customer
from tasks.intake_batch import import_customers
from tests.factories import DROP, intake_payload

_UNCOMPARED = {"id", "stored_at"}


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date | int | float | str | bool | type(None)):
        return value
    return str(value)  # Decimal, enum


def stored_rows(session: Session, *, clock_free: bool = False) -> dict[str, Any]:
    """Every row intake stores, normalised: customer ids replaced by (reseller id, name).
    `clock_free` compares the instants that default to "now" (creation, block, term start)
    by their UTC day only, for runs at different times."""
    session.flush()

    def instant(value: dt.datetime) -> Any:
        return value.astimezone(dt.UTC).date().isoformat() if clock_free else _plain(value)

    customers = session.scalars(select(Customer)).all()
    who = {c.id: (c.reseller_id, c.name) for c in customers}
    rows: dict[str, Any] = {"customers": [], "blocks": [], "ledger": [], "subscriptions": []}
    for c in customers:
        row = {
            col.key: _plain(getattr(c, col.key))
            for col in Customer.__table__.columns
            if col.key not in _UNCOMPARED
        }
        row["custom_data"], row["billing_address"] = c.custom_data, c.billing_address
        row["created_at"] = instant(c.created_at)
        if c.intake_key is not None and c.intake_key.startswith("task:"):
            row["intake_key"] = "delivery"
        rows["customers"].append(row)
    for block in session.scalars(select(CustomerBlock)):
        rows["blocks"].append((who[block.customer_id], block.reason, instant(block.since)))
    for entry in session.scalars(select(LedgerEntry)):
        rows["ledger"].append(
            (
                who[entry.customer_id],
                _plain(entry.entry_type),
                str(entry.amount),
                str(entry.balance_after),
            )
        )
    for term in session.scalars(select(Subscription)):
        rows["subscriptions"].append(
            (
                who[term.customer_id],
                term.plan_id,
                term.quantity,
                instant(term.starts_at),
                _plain(term.starts_on),
                term.ends_at,
                term.replaces_id,
            )
        )
    for value in rows.values():
        value.sort(key=repr)
    # What the ORM reads back alike, the database may not hold alike (SQL NULL, JSON null).
    rows["sql_nulls"] = tuple(
        session.execute(
            text(
                "SELECT count(*) FILTER (WHERE billing_address IS NULL),"
                " count(*) FILTER (WHERE custom_data IS NULL),"
                " count(*) FILTER (WHERE credit_limit IS NULL),"
                " count(*) FILTER (WHERE intake_key IS NULL) FROM customers"
            )
        ).one()
    )
    return rows


def without_ids(session: Session, outcomes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outcomes with `customer_id` (and a task id) replaced by the customer's name."""
    names: dict[int, str] = {
        r.id: r.name for r in session.execute(select(Customer.id, Customer.name))
    }
    plain = []
    for outcome in outcomes:
        outcome = {k: v for k, v in outcome.items() if k != "task_id"}
        if "customer_id" in outcome:
            outcome["customer_id"] = names.get(outcome["customer_id"], "?")
        plain.append(outcome)
    return plain


def one_by_one(
    session: Session, payloads: Sequence[object], *, now: dt.datetime
) -> list[dict[str, Any]]:
    return [
        create_customer(session, p, now=now, delivery_key=f"task:one-{i}")
        for i, p in enumerate(payloads, start=1)
    ]


def in_chunks(
    session: Session, payloads: Sequence[object], *, now: dt.datetime, size: int = 1000
) -> list[dict[str, Any]]:
    numbered = list(enumerate(payloads, start=1))
    outcomes: list[dict[str, Any]] = []
    for start in range(0, len(numbered), size):
        outcomes.extend(
            import_customers(
                session, numbered[start : start + size], now=now, delivery_key=f"task:c{start}"
            )
        )
    return outcomes


def mixed_file(count: int, seed: int = 0) -> list[object]:
    """Lines of every kind: valid of both balance controls, with subscriptions and funds
    of zero, rejected for many reasons, and duplicates of names and keys."""
    rng = random.Random(seed)
    names = [f"Customer {i}" for i in range(max(3, count // 3))]
    keys = [f"key-{i}" for i in range(max(2, count // 4))]
    payloads: list[object] = []
    for _ in range(count):
        if payloads and rng.random() < 0.1:  # a line sent again, as a retried export does
            payloads.append(rng.choice(payloads))
            continue
        name = rng.choice(names)
        if rng.random() < 0.3:
            name = name.upper() if rng.random() < 0.5 else f"  {name.lower()} "
        changes: dict[str, Any] = {"name": name}
        if rng.random() < 0.5:
            changes["idempotency_key"] = rng.choice(keys)
        kind = rng.random()
        if kind < 0.2:
            payload = intake_payload(
                **changes,
                balance_control="prepaid",
                credit_limit=DROP,
                available_funds=rng.choice(["0", "10.00", "250.5"]),
            )
        elif kind < 0.35:
            payload = intake_payload(
                **changes, subscriptions=[{"plan": "PBX seat", "quantity": rng.randint(0, 5)}]
            )
        elif kind < 0.45:
            payload = intake_payload(
                **changes, reseller="northwind", custom_data={"tax_code": "N1"}
            )
        elif kind < 0.5:
            payload = intake_payload(**changes, currency="dollars", colour="red")
        elif kind < 0.55:
            payload = intake_payload(**changes, custom_data={})  # missing mandatory field
        elif kind < 0.6:
            payload = intake_payload(**changes, subscriptions=[{"plan": "Fibre 1G", "quantity": 1}])
        elif kind < 0.63:
            payload = intake_payload(**changes, created_at="1000-01-01T00:00:00Z")
        elif kind < 0.66:
            payload = intake_payload(**changes, business_model="Satellite TV")
        elif kind < 0.68:
            payload = rng.choice([[1, 2], "text", None])  # type: ignore[assignment]
        elif kind < 0.75:
            payload = intake_payload(
                **changes,
                billing_period=rng.choice(["daily", "weekly", "monthly"]),
                billing_timezone=rng.choice(["Asia/Tokyo", "Europe/Paris", "UTC"]),
                created_at="2025-06-30T23:30:00Z",
            )
        else:
            payload = intake_payload(**changes)
        payloads.append(payload)
    return payloads
