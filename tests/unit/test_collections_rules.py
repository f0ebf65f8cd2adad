"""The pure collection rules: invoice state, allocation, the collection ladder."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.collections_rules import (
    CollectionPolicy,
    InvoiceState,
    OpenInvoice,
    StepKind,
    allocate,
    amount_due,
    invoice_state,
    ladder,
    overdue_since,
    steps_due,
)

D = Decimal
UTC = dt.UTC


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("due", "tz", "expected"),
    [
        # An ordinary zone: local midnight after the due date, not a UTC midnight.
        (dt.date(2026, 3, 10), "America/New_York", "2026-03-11T04:00:00+00:00"),
        (dt.date(2026, 3, 10), "Asia/Tokyo", "2026-03-10T15:00:00+00:00"),
        # Havana springs forward at midnight: 2026-03-08 starts at 01:00 CDT (05:00 UTC).
        (dt.date(2026, 3, 7), "America/Havana", "2026-03-08T05:00:00+00:00"),
        # Santiago springs forward at 24:00 on 2026-09-05: the 6th starts at 01:00 -03.
        (dt.date(2026, 9, 5), "America/Santiago", "2026-09-06T04:00:00+00:00"),
    ],
)
def test_an_invoice_becomes_overdue_at_the_local_day_start_after_its_due_date(
    due, tz, expected
) -> None:
    """The overdue instant is the billing zone's start of the next day, skipped midnights too."""
    assert overdue_since(due, tz) == _utc(expected)


def test_the_state_follows_the_sums_and_the_clock() -> None:
    """Issued, partially paid, paid and overdue by the applied sum and the instant."""
    due = dt.date(2026, 3, 10)
    before = _utc("2026-03-11T03:59:59+00:00")
    after = _utc("2026-03-11T04:00:00+00:00")

    def state(applied: str, at: dt.datetime, total: str = "100.00", void: bool = False):
        return invoice_state(
            void=void,
            total=D(total),
            applied=D(applied),
            due_date=due,
            tz="America/New_York",
            at=at,
        )

    assert state("0", before) is InvoiceState.ISSUED
    assert state("40", before) is InvoiceState.PARTIALLY_PAID
    assert state("100", before) is InvoiceState.PAID
    assert state("0", after) is InvoiceState.OVERDUE
    assert state("40", after) is InvoiceState.OVERDUE
    assert state("100", after) is InvoiceState.PAID
    assert state("0", after, total="0") is InvoiceState.PAID
    assert state("0", after, void=True) is InvoiceState.VOID
    with pytest.raises(ValueError, match="exceeds"):
        state("100.01", before)


def test_a_payment_pays_the_oldest_due_date_first_then_the_lowest_number() -> None:
    """Order is due date, then number; the rest is left over."""
    invoices = [
        OpenInvoice(3, 12, dt.date(2026, 4, 1), D("30.00")),
        OpenInvoice(1, 11, dt.date(2026, 3, 1), D("50.00")),
        OpenInvoice(2, 10, dt.date(2026, 4, 1), D("20.00")),
    ]
    result = allocate(D("120.00"), invoices)
    assert result.applied == ((1, D("50.00")), (2, D("20.00")), (3, D("30.00")))
    assert result.leftover == D("20.00")

    partial = allocate(D("60.00"), invoices)
    assert partial.applied == ((1, D("50.00")), (2, D("10.00")))
    assert partial.leftover == 0


amounts = st.decimals(min_value=D("0.01"), max_value=D("5000"), places=2)


@settings(max_examples=300, deadline=None)
@given(
    totals=st.lists(st.decimals(min_value=D(0), max_value=D("2000"), places=2), max_size=6),
    moves=st.lists(st.tuples(st.sampled_from(["payment", "credit_note"]), amounts), max_size=12),
)
def test_payments_and_credits_never_overpay_and_the_state_matches_the_sums(totals, moves) -> None:
    """Over any sequence of payments and credits, no invoice is paid beyond its total, money
    is conserved, and each state agrees with the sums."""
    due = dt.date(2026, 3, 10)
    at = _utc("2026-03-05T12:00:00+00:00")
    applied = [D(0)] * len(totals)
    credit = D(0)
    received = D(0)
    for _kind, amount in moves:
        received += amount
        pool = amount + credit  # a payment or a credit note joins the customer's credit
        open_ = [
            OpenInvoice(i, i + 1, due + dt.timedelta(days=i % 3), amount_due(t, applied[i]))
            for i, t in enumerate(totals)
            if amount_due(t, applied[i]) > 0
        ]
        result = allocate(pool, open_)
        for invoice_id, part in result.applied:
            applied[invoice_id] += part
        credit = result.leftover
    assert sum(applied, D(0)) + credit == received
    for total, paid in zip(totals, applied, strict=True):
        assert paid <= total
        state = invoice_state(void=False, total=total, applied=paid, due_date=due, tz="UTC", at=at)
        if paid == total:
            assert state is InvoiceState.PAID
        elif paid > 0:
            assert state is InvoiceState.PARTIALLY_PAID
        else:
            assert state is InvoiceState.ISSUED
    if credit > 0:  # credit is only left over once every invoice is paid
        assert all(paid == total for total, paid in zip(totals, applied, strict=True))


POLICY = CollectionPolicy(
    reminder_days=(1, 7), overdue_notice=True, suspend_after_days=10, terminate_after_days=30
)


def test_the_ladder_falls_due_in_order_at_local_day_starts() -> None:
    """Reminders (furthest first), the overdue notice, suspension and termination."""
    issued = _utc("2026-03-01T10:00:00+00:00")
    steps = ladder(POLICY, dt.date(2026, 3, 20), "Europe/Paris", issued)
    assert [(s.name, s.due_at.isoformat()) for s in steps] == [
        ("reminder:7", "2026-03-12T23:00:00+00:00"),
        ("reminder:1", "2026-03-18T23:00:00+00:00"),
        ("overdue_notice", "2026-03-20T23:00:00+00:00"),
        ("suspend", "2026-03-30T22:00:00+00:00"),  # Paris is on summer time by then
        ("terminate", "2026-04-19T22:00:00+00:00"),
    ]


def test_a_reminder_before_the_invoice_was_issued_is_not_a_step() -> None:
    """A 7-day reminder on an invoice issued 3 days before it is due never exists."""
    issued = _utc("2026-03-17T10:00:00+00:00")
    names = [s.name for s in ladder(POLICY, dt.date(2026, 3, 20), "UTC", issued)]
    assert names == ["reminder:1", "overdue_notice", "suspend", "terminate"]


def test_missed_steps_all_come_due_in_order_and_done_steps_do_not_return() -> None:
    """After an outage every reached step is due once; obsolete reminders are not sent."""
    issued = _utc("2026-03-01T10:00:00+00:00")
    due = dt.date(2026, 3, 20)

    before_due = steps_due(
        POLICY, due_date=due, tz="UTC", issued_at=issued, at=_utc("2026-03-19T12:00:00+00:00")
    )
    assert [(d.step.name, d.send) for d in before_due] == [
        ("reminder:7", True),
        ("reminder:1", True),
    ]

    late = steps_due(
        POLICY,
        due_date=due,
        tz="UTC",
        issued_at=issued,
        at=_utc("2026-04-01T00:00:00+00:00"),
        done=["reminder:7"],
    )
    assert [(d.step.name, d.send) for d in late] == [
        ("reminder:1", False),
        ("overdue_notice", True),
        ("suspend", True),
    ]
    assert late[2].step.kind is StepKind.SUSPEND


def test_the_default_policy_does_nothing() -> None:
    """No field set: no step, ever."""
    issued = _utc("2026-03-01T10:00:00+00:00")
    assert CollectionPolicy().does_nothing
    assert ladder(CollectionPolicy(), dt.date(2026, 3, 20), "UTC", issued) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"reminder_days": (-1,)},
        {"suspend_after_days": -1},
        {"suspend_after_days": 10, "terminate_after_days": 5},
    ],
)
def test_an_impossible_policy_is_refused(fields) -> None:
    """Negative days and termination before suspension are errors."""
    with pytest.raises(ValueError):  # noqa: PT011
        CollectionPolicy(**fields)
