"""Dead letters; failed invoice generations recorded on their closed periods

Revision ID: 0003_faults
Revises: 0002_customer_blocks
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0003_faults"
down_revision: str | Sequence[str] | None = "0002_customer_blocks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=True),
        sa.Column("task", sa.String(length=200), nullable=True),
        sa.Column("task_id", sa.String(length=200), nullable=True),
        sa.Column("reason_code", sa.String(length=50), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(
        op.f("ix_dead_letters_received_at"), "dead_letters", ["received_at"], unique=False
    )
    with op.batch_alter_table("closed_periods") as batch:
        batch.add_column(
            sa.Column("invoice_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("invoice_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("closed_periods") as batch:
        batch.drop_column("invoice_error")
        batch.drop_column("invoice_attempts")
    op.drop_index(op.f("ix_dead_letters_received_at"), table_name="dead_letters")
    op.drop_table("dead_letters")
