"""Block reasons on PostgreSQL and on the embedded SQLite: independent reasons, one flag."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import BlockReason, Customer, CustomerBlock
from tasks.blocks import block, block_reasons, unblock
from tasks.charges import record_charge, record_payment
from tests.invoicing_factories import (
    billing_customer,
    charge_payload,
    embedded_engine,
    payment_payload,
)

pytestmark = pytest.mark.functional

T0 = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
T2 = T0 + dt.timedelta(hours=2)
AT = dt.datetime(2026, 3, 25, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def any_session(request, tmp_path) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    """A rolled-back session on PostgreSQL (empty tables) or on a fresh embedded SQLite file."""
    if request.param == "postgresql":
        request.getfixturevalue("clean_db")
        yield request.getfixturevalue("db_session")
        return
    engine = embedded_engine(tmp_path)
    with Session(engine) as session, session.begin():
        yield session
    engine.dispose()


def _flag(session: Session, customer: Customer) -> bool:
    return bool(session.scalar(select(Customer.blocked).where(Customer.id == customer.id)))


def test_a_customer_stays_blocked_until_every_reason_is_lifted(any_session) -> None:
    """Two reasons block once; lifting one keeps the customer blocked, lifting both unblocks."""
    customer = billing_customer(any_session)

    assert block(any_session, customer, BlockReason.OVERDUE, at=T0, note="invoice 7")
    assert block(any_session, customer.id, BlockReason.OPERATOR, at=T1)
    assert (_flag(any_session, customer), customer.blocked) == (True, True)

    assert unblock(any_session, customer, BlockReason.OVERDUE, at=T2)
    assert (_flag(any_session, customer), customer.blocked) == (True, True)
    assert block_reasons(any_session, customer.id) == {BlockReason.OPERATOR: T1}

    assert unblock(any_session, customer, BlockReason.OPERATOR, at=T2)
    assert (_flag(any_session, customer), customer.blocked) == (False, False)
    assert block_reasons(any_session, customer.id) == {}


def test_blocking_again_keeps_the_first_since_and_note(any_session) -> None:
    """A repeated block for the same reason changes nothing and says so."""
    customer = billing_customer(any_session)

    assert block(any_session, customer, BlockReason.OVERDUE, at=T0, note="first")
    assert not block(any_session, customer, BlockReason.OVERDUE, at=T2, note="second")

    row = any_session.scalars(select(CustomerBlock)).one()
    assert (row.reason, row.since, row.note) == ("overdue", T0, "first")


def test_lifting_a_reason_that_is_not_recorded_changes_nothing(any_session) -> None:
    """Unblocking for a reason the customer is not blocked for leaves its other block."""
    customer = billing_customer(any_session)
    block(any_session, customer, BlockReason.OPERATOR, at=T0)

    assert not unblock(any_session, customer, BlockReason.CREDIT_LIMIT, at=T1)
    assert _flag(any_session, customer)


def test_the_database_refuses_an_unknown_reason(any_session) -> None:
    """The reason column only takes the BlockReason values."""
    customer = billing_customer(any_session)
    any_session.add(CustomerBlock(customer_id=customer.id, reason="whim", since=T0, note=""))
    with pytest.raises(IntegrityError):
        any_session.flush()


def test_a_payment_clearing_the_credit_limit_leaves_an_overdue_block(any_session) -> None:
    """The credit-limit block comes and goes with the balance; an overdue block stays."""
    customer = billing_customer(any_session, credit_limit=Decimal("50.00"))
    reached = record_charge(any_session, charge_payload(customer, "50.00", AT, "c1"), now=T0)
    assert reached["blocked"] is True
    assert set(block_reasons(any_session, customer.id)) == {BlockReason.CREDIT_LIMIT}
    block(any_session, customer, BlockReason.OVERDUE, at=T1)

    paid = record_payment(any_session, payment_payload(customer, "20.00", T2, "p1"), now=T2)

    assert (paid["status"], paid["balance"], paid["blocked"]) == ("recorded", "30.00", True)
    assert set(block_reasons(any_session, customer.id)) == {BlockReason.OVERDUE}
    unblock(any_session, customer, BlockReason.OVERDUE, at=T2)
    assert not _flag(any_session, customer)


def test_prepaid_funds_at_zero_block_for_no_funds_and_a_top_up_lifts_it(any_session) -> None:
    """A prepaid customer created without funds is blocked for no_funds; a top-up unblocks."""
    customer = billing_customer(any_session, balance_control="prepaid", funds=Decimal(0))
    assert set(block_reasons(any_session, customer.id)) == {BlockReason.NO_FUNDS}

    topped = record_payment(any_session, payment_payload(customer, "10.00", T0, "t1"), now=T0)
    assert (topped["balance"], topped["blocked"]) == ("10.00", False)
    spent = record_charge(any_session, charge_payload(customer, "10.00", AT, "c1"), now=T1)
    assert (spent["balance"], spent["blocked"]) == ("0.00", True)
    assert block_reasons(any_session, customer.id) == {BlockReason.NO_FUNDS: T1}
    assert _flag(any_session, customer)
