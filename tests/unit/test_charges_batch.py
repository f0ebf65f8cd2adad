"""The batch charge service equals today's single charge applied line by line, in order."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import BlockReason, Customer, CustomerBlock, LedgerEntry
from tasks.blocks import block
from tasks.charges import record_charge
from tasks.charges_batch import record_charge_batch
from tests.invoicing_factories import billing_customer, charge_payload

NOW = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)
EARLIER = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
AT = dt.datetime(2026, 3, 25, 9, 30, tzinfo=dt.UTC)

# Customers by name: the rules that can decide a charge differently.
SHAPES: dict[str, dict[str, Any]] = {
    "Post": {"credit_limit": Decimal("20.00")},
    "Unlimited": {"credit_limit": None},
    "Pre": {"balance_control": "prepaid", "funds": Decimal("15.00")},
    "Raised": {"credit_limit": Decimal("30.00")},  # blocked at 25, then its limit raised
    "Suspended": {"credit_limit": Decimal("20.00")},  # blocked by an operator too
    "Gone": {"credit_limit": None},  # terminated
}


def _seed(session: Session) -> dict[str, Customer]:
    customers = {
        name: billing_customer(session, name=name, **shape) for name, shape in SHAPES.items()
    }
    raised = customers["Raised"]
    raised.balance = Decimal("25.00")
    block(session, raised, BlockReason.CREDIT_LIMIT, at=EARLIER)
    block(session, customers["Suspended"], BlockReason.OPERATOR, at=EARLIER)
    customers["Gone"].status = "terminated"
    session.flush()
    return customers


@st.composite
def charge_lines(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Charges for the customers (and a stranger), with colliding instants and keys, and
    some bad lines."""
    names = [*SHAPES, "Nobody"]
    count = draw(st.integers(1, 14))
    lines = []
    for _ in range(count):
        payload = charge_payload(
            draw(st.sampled_from(names)),
            draw(st.sampled_from(["1.00", "2.50", "5.00", "9.99", "12.00", "0.001", "-1"])),
            AT + dt.timedelta(minutes=draw(st.integers(0, 3))),
            draw(st.sampled_from(["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"])),
        )
        if draw(st.integers(0, 9)) == 0:
            payload["currency"] = "EUR"
        lines.append(payload)
    return lines


def _state(session: Session) -> Any:
    session.expire_all()
    customers = session.execute(
        select(Customer.name, Customer.balance, Customer.blocked).order_by(Customer.id)
    ).all()
    blocks = session.execute(
        select(CustomerBlock.customer_id, CustomerBlock.reason, CustomerBlock.since).order_by(
            CustomerBlock.customer_id, CustomerBlock.reason
        )
    ).all()
    ledger = session.execute(
        select(
            LedgerEntry.customer_id,
            LedgerEntry.amount,
            LedgerEntry.balance_after,
            LedgerEntry.charge_id,
        ).order_by(LedgerEntry.id)
    ).all()
    return customers, blocks, ledger


def _one_by_one(session: Session, lines: list[dict[str, Any]], ids: dict[str, int]) -> list[Any]:
    """Today's single charge, applied per customer in (occurred_at, line) order."""
    order = sorted(
        range(len(lines)),
        key=lambda i: (ids.get(lines[i]["customer"], 0), lines[i]["occurred_at"], i),
    )
    results: list[Any] = [None] * len(lines)
    for i in order:
        results[i] = {"line": i + 1, **record_charge(session, lines[i], now=NOW)}
    return results


def _ranked(results: Any, state: Any) -> Any:
    """Charge ids as their rank (PostgreSQL sequences do not roll back with a savepoint)."""
    customers, blocks, ledger = state
    ids = sorted({row[3] for row in ledger if row[3] is not None})
    rank = {charge_id: i for i, charge_id in enumerate(ids)}

    def fix(result: dict[str, Any]) -> dict[str, Any]:
        if "charge_id" not in result:
            return result
        return result | {"charge_id": rank.get(result["charge_id"], -1)}

    ranked_results = [fix(r) for r in results]
    ranked_ledger = [(*row[:3], rank.get(row[3])) for row in ledger]
    return ranked_results, (customers, blocks, ranked_ledger)


def check_batch_equals_single(session: Session, lines: list[dict[str, Any]], rerun: bool) -> None:
    """The batch's per-line results, balances, blocks and ledger equal the single
    charge's applied in (customer, occurred_at, line) order, also for a second run."""
    outer = session.begin_nested()
    customers = _seed(session)
    ids = {name: c.id for name, c in customers.items()}
    batch = [{"line": i + 1, "payload": p} for i, p in enumerate(lines)]

    single = session.begin_nested()
    expected = _one_by_one(session, lines, ids)
    if rerun:
        expected += _one_by_one(session, lines, ids)
    expected_state = _state(session)
    single.rollback()

    bulk = session.begin_nested()
    got = record_charge_batch(session, batch, now=NOW)
    assert got["status"] == "done"
    results = got["results"]
    if rerun:
        results += record_charge_batch(session, batch, now=NOW)["results"]
    got_state = _state(session)
    bulk.rollback()
    outer.rollback()

    assert _ranked(results, got_state) == _ranked(expected, expected_state)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(lines=charge_lines(), rerun=st.booleans())
def test_a_batch_gives_what_single_charges_give_in_order(session, lines, rerun) -> None:
    """Random charges (refusals that depend on order, replays, conflicts, bad lines) on the
    embedded database: the batch equals single charges line by line, also when re-sent."""
    check_batch_equals_single(session, lines, rerun)


def test_a_batch_that_is_not_a_list_of_lines_is_refused(session) -> None:
    """A message that is not a list of {line, payload} stores nothing and says why."""
    got = record_charge_batch(session, [{"line": "1", "payload": {}}], now=NOW)

    assert got["status"] == "refused"
    assert got["errors"][0]["code"] == "not_a_batch"
