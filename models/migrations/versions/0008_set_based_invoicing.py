"""Set-based invoicing: indexes on the uninvoiced work, outbox text composed by the mailer

Revision ID: 0008_set_based_invoicing
Revises: 0007_reseller_tenancy
Create Date: 2026-12-03 07:00:00

Upgrades a populated database of the previous head:

- `ix_charges_uninvoiced (customer_id, occurred_at) WHERE invoice_id IS NULL`: invoicing
  looks for a customer's late charges (uninvoiced, before the period) in a batch; the full
  `(customer_id, occurred_at)` index walks every invoiced charge of the customer's history
  to find none, this one holds only the charges still waiting for an invoice.
- `ix_closed_periods_customer_uninvoiced (customer_id, period_start) WHERE NOT invoiced`:
  the earlier uninvoiced periods of a batch's customers, found among the waiting periods
  only, whatever the length of the history.
- `notifications.subject` and `body_text` may be NULL: an invoice's outbox rows are
  written set-based at issue and the mailer composes their text from the stored invoice
  the first time it sends them (`tasks.notifications`). Existing rows keep their text.

Downgrade writes a plain text (number, total, due date) into the rows still without one
before making the columns NOT NULL again, so nothing waiting in the outbox is lost.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_set_based_invoicing"
down_revision: str | Sequence[str] | None = "0007_reseller_tenancy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_charges_uninvoiced",
        "charges",
        ["customer_id", "occurred_at"],
        postgresql_where=sa.text("invoice_id IS NULL"),
        sqlite_where=sa.text("invoice_id IS NULL"),
    )
    op.create_index(
        "ix_closed_periods_customer_uninvoiced",
        "closed_periods",
        ["customer_id", "period_start"],
        postgresql_where=sa.text("NOT invoiced"),
        sqlite_where=sa.text("NOT invoiced"),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("subject", existing_type=sa.String(300), nullable=True)
        batch.alter_column("body_text", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    op.execute(
        "UPDATE notifications SET"
        " subject = coalesce(subject, (SELECT 'Invoice ' || i.number FROM invoices i"
        " WHERE i.id = notifications.invoice_id), 'Invoice'),"
        " body_text = coalesce(body_text, (SELECT 'Invoice ' || i.number || ': ' || i.total"
        " || ' ' || i.currency || ', due ' || i.due_date || '.' FROM invoices i"
        " WHERE i.id = notifications.invoice_id), '')"
    )
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("subject", existing_type=sa.String(300), nullable=False)
        batch.alter_column("body_text", existing_type=sa.Text(), nullable=False)
    op.drop_index("ix_closed_periods_customer_uninvoiced", table_name="closed_periods")
    op.drop_index("ix_charges_uninvoiced", table_name="charges")
