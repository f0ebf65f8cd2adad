"""The order a charges file is sent in: grouped by customer, batches that keep it.

`billing charges load` must give the same outcome whatever the number of workers, so each
customer's charges apply in `occurred_at` order, then file order (the batch task sorts
each customer's lines so), and two batches holding lines of the same customer must never
run at the same time. The file is therefore sorted by customer reference, then instant,
then line number, and cut into batches:

- at a customer boundary once a batch holds `batch_size` lines, so a customer's lines go
  into one message whenever they fit (batches then run in parallel, in any order: they
  share no customer);
- inside a customer only when a batch reaches twice `batch_size` (a customer with very
  many lines); the next batch then continues that customer and is chained after this one
  (a Celery chain: it is sent only once this one has run), so the customer's lines still
  apply in order.

A run is the batches chained together; runs share no customer. The sort happens on disk:
the lines go into a temporary SQLite file (stdlib `sqlite3`) and come back `ORDER BY`, so
memory is bounded by SQLite's page cache (64 MiB) and one run, not by the file's size (a
1M-line file is not held in memory; a run is one batch unless a customer has more than
twice `batch_size` lines, and then all of that customer's lines).

The customer reference is the one the line gives: a name by its key (`models.names`, any
case), or an id. Lines naming one customer by name and others by id are grouped apart: a
file should name each customer one way for the order guarantee to cover all its lines.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from models.names import name_key
from models.validation import parse_instant
from worker.cli._common import Batch

BATCH_SIZE: Final = 1000
# Rows handed to SQLite at a time while reading, and the page cache it may use to sort.
_CHUNK: Final = 10_000
_CACHE_KIB: Final = 65_536


def customer_reference(payload: dict[str, Any]) -> str:
    """The key a line's customer is grouped by: its name key, or its id."""
    name, customer_id = payload.get("customer"), payload.get("customer_id")
    if isinstance(name, str):
        return "n" + name_key(name)
    if isinstance(customer_id, int) and not isinstance(customer_id, bool):
        return f"i{customer_id}"
    return ""  # refused by the task whatever its place


def instant_key(payload: dict[str, Any]) -> str:
    """`occurred_at` as a sortable UTC text (empty if unreadable: the task refuses it)."""
    raw = payload.get("occurred_at")
    instant = parse_instant(raw) if isinstance(raw, str) else None
    return "" if instant is None else instant.astimezone(dt.UTC).isoformat(timespec="microseconds")


class CustomerOrder:
    """Lines added in any order, given back as runs of batches in customer order."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="billing-charges-")
        self._db = sqlite3.connect(Path(self._folder.name) / "order.sqlite3")
        self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._db.execute("PRAGMA temp_store=FILE")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE lines (customer TEXT, at TEXT, line INTEGER, payload TEXT)")
        self._pending: list[tuple[str, str, int, str]] = []

    def __enter__(self) -> CustomerOrder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._db.close()
        self._folder.cleanup()

    def add(self, number: int, payload: dict[str, Any]) -> None:
        self._pending.append(
            (customer_reference(payload), instant_key(payload), number, json.dumps(payload))
        )
        if len(self._pending) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO lines VALUES (?, ?, ?, ?)", self._pending)
        self._pending.clear()

    def runs(self, batch_size: int) -> Iterator[list[Batch]]:
        """Runs of batches (see the module): about `batch_size` lines, at most twice."""
        self._flush()
        run: list[Batch] = []
        batch: Batch = []
        previous: str | None = None
        rows = self._db.execute("SELECT customer, line, payload FROM lines ORDER BY 1, at, line")
        for customer, number, payload in rows:
            if batch and customer != previous and len(batch) >= batch_size:
                yield [*run, batch]
                run, batch = [], []
            elif len(batch) >= 2 * batch_size:  # inside one customer: chain the next batch
                run.append(batch)
                batch = []
            batch.append((number, json.loads(payload)))
            previous = customer
        if batch:
            yield [*run, batch]
