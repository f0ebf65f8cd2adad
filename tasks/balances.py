"""The one writer of a balance change: the new balance, its ledger entry and the balance block.

Every movement of `customers.balance` (a charge, a payment or top-up, a credit note, a
prepaid invoice's tax) goes through `apply_balance_change`, under the customer's row lock,
so the balance can always be recomputed from the ledger and the `credit_limit` / `no_funds`
block always follows the balance rules (`models.invoicing_rules`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import Customer, LedgerEntry, LedgerEntryType
from models.invoicing_rules import BalanceChange, balance_block_reason
from tasks.blocks import set_blocked


def apply_balance_change(
    session: Session,
    customer: Customer,
    change: BalanceChange,
    *,
    entry_type: LedgerEntryType | str,
    now: dt.datetime,
    charge_id: int | None = None,
    payment_id: int | None = None,
    credit_note_id: int | None = None,
) -> None:
    """Write `change` to `customer` (locked by the caller): balance, ledger entry, block."""
    session.execute(
        update(Customer).where(Customer.id == customer.id).values(balance=change.balance_after)
    )
    reason = balance_block_reason(customer.balance_control)
    set_blocked(session, customer, reason, change.blocked_after, at=now)
    session.add(
        LedgerEntry(
            customer_id=customer.id,
            entry_type=entry_type,
            amount=change.delta,
            balance_after=change.balance_after,
            charge_id=charge_id,
            payment_id=payment_id,
            credit_note_id=credit_note_id,
            created_at=now,
        )
    )
    session.flush()
