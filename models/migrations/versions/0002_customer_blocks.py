"""Block reasons: one customer_blocks row per reason a customer is blocked

Revision ID: 0002_customer_blocks
Revises: 0001
Create Date: 2026-12-02 20:05:00

Until now `customers.blocked` was the balance rule's verdict alone, so every customer blocked
today is blocked for its balance: `credit_limit` (postpaid) or `no_funds` (prepaid). The
backfill records that reason, since the customer's last balance change (its last ledger
entry; its creation when it has none), which is when the balance rule last blocked it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0002_customer_blocks"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REASONS = ("credit_limit", "no_funds", "operator", "overdue")


def upgrade() -> None:
    op.create_table(
        "customer_blocks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("since", models.base.UTCDateTime(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint(
            "reason IN (" + ", ".join(f"'{r}'" for r in REASONS) + ")",
            name=op.f("ck_customer_blocks_reason_known"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_customer_blocks_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_blocks")),
        sa.UniqueConstraint(
            "customer_id", "reason", name=op.f("uq_customer_blocks_customer_id_reason")
        ),
    )
    op.execute(
        """
        INSERT INTO customer_blocks (customer_id, reason, since, note)
        SELECT c.id,
               CASE c.balance_control WHEN 'postpaid' THEN 'credit_limit' ELSE 'no_funds' END,
               COALESCE(
                   (SELECT MAX(e.created_at) FROM ledger_entries e WHERE e.customer_id = c.id),
                   c.created_at
               ),
               'recorded by the block-reasons migration'
        FROM customers c
        WHERE c.blocked
        """
    )


def downgrade() -> None:
    # `customers.blocked` already says "some reason exists"; only the reasons are dropped.
    op.drop_table("customer_blocks")
