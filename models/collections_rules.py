"""Collection rules, pure: no I/O, no clock; every instant is passed in.

Invoice state. An issued invoice's state is derived from the rows that change it, never
stored: the money applied to it (payments, customer credit, prepaid funds, credit notes)
and whether it was voided.

- `void`: voided (a correction; it no longer asks for money);
- `paid`: nothing is left due (a zero-total invoice is paid when issued; an invoice settled
  by a credit note counts as paid);
- `overdue`: something is left due and the local day after the due date has started in the
  billing timezone (the period engine's day-start rule: `models.periods.day_start`, so a
  zone whose midnight is skipped starts the day at the transition, never at a UTC
  midnight);
- `partially_paid`: something was applied, something is left, not yet overdue;
- `issued`: nothing applied yet, not yet overdue.

Allocation. Money for a customer (a payment, or credit) goes to its open invoices oldest
due date first, then lowest number; each invoice takes at most what it has left due; what
is left over stays with the customer as credit, for the next invoice issued.

The collection ladder of a customer class (`CollectionPolicy`; the defaults do nothing):
one reminder per entry of `reminder_days`, at the start of the local day that many days
before the due date; an overdue notice when the invoice becomes overdue; suspension
`suspend_after_days` local days after it became overdue, termination `terminate_after_days`
days after. `steps_due` says which steps an open invoice has reached at an instant, in
order; each happens at most once per invoice (the caller records them). A reminder whose
day came before the invoice was issued is not part of the ladder; a reminder still unsent
when the invoice is already overdue is obsolete and is recorded as skipped, not sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from models.periods import day_start


class InvoiceState(StrEnum):
    ISSUED = "issued"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    OVERDUE = "overdue"
    VOID = "void"


def overdue_since(due_date: dt.date, tz: str) -> dt.datetime:
    """The instant an unpaid invoice due on `due_date` becomes overdue: the start of the next
    local day in `tz` (aware, UTC)."""
    return day_start(due_date + dt.timedelta(days=1), tz).astimezone(dt.UTC)


def amount_due(total: Decimal, applied: Decimal) -> Decimal:
    """What is left to pay: the total less everything applied (never below zero)."""
    return max(total - applied, Decimal(0))


def invoice_state(
    *,
    void: bool,
    total: Decimal,
    applied: Decimal,
    due_date: dt.date,
    tz: str,
    at: dt.datetime,
) -> InvoiceState:
    """The state of an issued invoice at `at`, from its total and the sum applied to it."""
    if applied > total:
        raise ValueError(f"{applied} applied exceeds the invoice total {total}")
    if void:
        return InvoiceState.VOID
    if applied == total:
        return InvoiceState.PAID
    if at >= overdue_since(due_date, tz):
        return InvoiceState.OVERDUE
    return InvoiceState.PARTIALLY_PAID if applied > 0 else InvoiceState.ISSUED


@dataclass(frozen=True)
class OpenInvoice:
    """An invoice with something left due, as allocation sees it."""

    invoice_id: int
    number: int
    due_date: dt.date
    due: Decimal


@dataclass(frozen=True)
class Allocation:
    applied: tuple[tuple[int, Decimal], ...]  # (invoice id, amount), in the order applied
    leftover: Decimal


def allocate(amount: Decimal, invoices: Iterable[OpenInvoice]) -> Allocation:
    """Apply `amount` (>= 0) to `invoices` oldest due date first, then lowest number."""
    if amount < 0:
        raise ValueError(f"cannot allocate a negative amount, got {amount}")
    left = amount
    applied: list[tuple[int, Decimal]] = []
    for invoice in sorted(invoices, key=lambda i: (i.due_date, i.number, i.invoice_id)):
        if left <= 0:
            break
        if invoice.due <= 0:
            continue
        take = min(left, invoice.due)
        applied.append((invoice.invoice_id, take))
        left -= take
    return Allocation(tuple(applied), left)


class StepKind(StrEnum):
    REMINDER = "reminder"
    OVERDUE_NOTICE = "overdue_notice"
    SUSPEND = "suspend"
    TERMINATE = "terminate"


@dataclass(frozen=True)
class CollectionPolicy:
    """A customer class's collection ladder; the defaults do nothing."""

    reminder_days: tuple[int, ...] = ()
    overdue_notice: bool = False
    suspend_after_days: int | None = None
    terminate_after_days: int | None = None

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.reminder_days):
            raise ValueError("reminder days before the due date cannot be negative")
        for name in ("suspend_after_days", "terminate_after_days"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} cannot be negative")
        if (
            self.suspend_after_days is not None
            and self.terminate_after_days is not None
            and self.terminate_after_days < self.suspend_after_days
        ):
            raise ValueError("terminate_after_days cannot come before suspend_after_days")

    @property
    def does_nothing(self) -> bool:
        return self == CollectionPolicy()


@dataclass(frozen=True)
class Step:
    """One rung of the ladder for one invoice: `name` is unique per invoice."""

    name: str
    kind: StepKind
    due_at: dt.datetime  # aware UTC
    days: int | None = None  # reminder: days before the due date


def ladder(
    policy: CollectionPolicy, due_date: dt.date, tz: str, issued_at: dt.datetime
) -> list[Step]:
    """Every step of the policy for an invoice, in the order they fall due."""
    steps: list[Step] = []
    for days in sorted(set(policy.reminder_days), reverse=True):
        at = day_start(due_date - dt.timedelta(days=days), tz).astimezone(dt.UTC)
        if at >= issued_at:
            steps.append(Step(f"reminder:{days}", StepKind.REMINDER, at, days))
    overdue = overdue_since(due_date, tz)
    if policy.overdue_notice:
        steps.append(Step(StepKind.OVERDUE_NOTICE.value, StepKind.OVERDUE_NOTICE, overdue))
    for kind, after in (
        (StepKind.SUSPEND, policy.suspend_after_days),
        (StepKind.TERMINATE, policy.terminate_after_days),
    ):
        if after is not None:
            at = day_start(due_date + dt.timedelta(days=1 + after), tz).astimezone(dt.UTC)
            steps.append(Step(kind.value, kind, at))
    return sorted(steps, key=lambda s: (s.due_at, _KIND_ORDER[s.kind], -(s.days or 0)))


_KIND_ORDER = {
    StepKind.REMINDER: 0,
    StepKind.OVERDUE_NOTICE: 1,
    StepKind.SUSPEND: 2,
    StepKind.TERMINATE: 3,
}


@dataclass(frozen=True)
class DueStep:
    step: Step
    send: bool  # False: obsolete (a reminder for an invoice already overdue): record, skip


def steps_due(
    policy: CollectionPolicy,
    *,
    due_date: dt.date,
    tz: str,
    issued_at: dt.datetime,
    at: dt.datetime,
    done: Sequence[str] = (),
) -> list[DueStep]:
    """The steps an open invoice has reached by `at` and not yet done (`done`: names), in
    order. Call only for an invoice with something left due."""
    overdue = at >= overdue_since(due_date, tz)
    return [
        DueStep(step, send=not (overdue and step.kind is StepKind.REMINDER))
        for step in ladder(policy, due_date, tz, issued_at)
        if step.due_at <= at and step.name not in done
    ]
