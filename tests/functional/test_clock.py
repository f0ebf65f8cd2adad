"""One clock for closing: the database's, whatever the worker's clock says (PostgreSQL)."""

from __future__ import annotations

import datetime
import logging
import sys
import types
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import ClosedPeriod
from tests.factories import make_customer

pytestmark = pytest.mark.functional

FAST = datetime.timedelta(days=2)


class _FastClock(datetime.datetime):
    """`datetime.datetime` as seen on a machine whose clock runs two days fast."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.datetime.now(tz) + FAST


def _fast_clock_in_billing_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every billing module that reads the clock (`dt.datetime.now`) sees it two days fast;
    the libraries (pendulum, SQLAlchemy) keep the real `datetime` type they check against."""
    fast = types.ModuleType("datetime")
    fast.__dict__.update(datetime.__dict__)
    fast.datetime = _FastClock  # type: ignore[attr-defined]
    for name, module in list(sys.modules.items()):
        if (
            name.split(".")[0] in {"tasks", "worker", "models"}
            and getattr(module, "dt", None) is datetime
        ):
            monkeypatch.setattr(module, "dt", fast)


def _closed(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(ClosedPeriod)) or 0)


def test_a_fast_worker_clock_closes_nothing_early(clean_db, monkeypatch, caplog) -> None:
    """With the worker's clock two days ahead, the close task (as beat sends it, without
    an instant) closes only the period that ended by the database's clock, and warns."""
    from tasks.closing import close_due_task

    today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with Session(clean_db) as session:
        # Today's daily period ends at the next UTC midnight: not yet, by any honest clock.
        make_customer(session, name="Today", billing_period="daily", created_at=today)
        # Yesterday's has ended.
        make_customer(
            session,
            name="Yesterday",
            billing_period="daily",
            created_at=today - datetime.timedelta(days=1),
        )
        session.commit()
    _fast_clock_in_billing_code(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="tasks.base"):
        result = close_due_task.apply().get()

    assert result["closed"] == 1
    assert _closed(clean_db) == 1
    assert "clock is +172800 s off the database's" in caplog.text
