"""Invoice parties and documents: seller details on resellers, buyer details on customers,
the e-invoice format and locale on classes, the issue-time snapshot on invoices

Revision ID: 0006_documents
Revises: 0005_collections
Create Date: 2026-12-02 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_documents"
down_revision: str | Sequence[str] | None = "0005_collections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str, length: int | None = None) -> sa.Column[str]:
    kind = sa.Text() if length is None else sa.String(length=length)
    return sa.Column(name, kind, server_default="", nullable=False)


def upgrade() -> None:
    # Every new column is nullable or has a server default, so populated tables upgrade
    # as they are: existing resellers have no seller details yet, existing invoices no
    # snapshot (their documents print the names they were issued with).
    with op.batch_alter_table("resellers") as batch:
        batch.add_column(_text("legal_name", 200))
        batch.add_column(sa.Column("address", sa.JSON(), nullable=True))
        batch.add_column(_text("tax_id", 50))
        batch.add_column(_text("email", 320))
        batch.add_column(_text("payment_text"))
        batch.add_column(_text("iban", 34))
        batch.add_column(_text("bic", 11))
        batch.add_column(_text("locale", 35))
    with op.batch_alter_table("customer_classes") as batch:
        batch.add_column(sa.Column("requires", sa.JSON(), nullable=True))
        batch.add_column(_text("locale", 35))
    # A column constraint in ADD COLUMN: SQLite accepts it there, where adding a table
    # constraint would mean copying the table that customers refer to.
    op.execute(
        "ALTER TABLE customer_classes ADD COLUMN einvoice_format VARCHAR(16) DEFAULT 'none' "
        "NOT NULL CONSTRAINT ck_customer_classes_einvoice_format_known "
        "CHECK (einvoice_format IN ('none', 'factur-x'))"
    )
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("billing_address", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("tax_id", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("invoice_email", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("locale", sa.String(length=35), nullable=True))
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("snapshot", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("snapshot")
    with op.batch_alter_table("customers") as batch:
        for name in ("locale", "invoice_email", "tax_id", "billing_address"):
            batch.drop_column(name)
    with op.batch_alter_table("customer_classes") as batch:
        for name in ("locale", "einvoice_format", "requires"):
            batch.drop_column(name)
    with op.batch_alter_table("resellers") as batch:
        for name in ("locale", "bic", "iban", "payment_text", "email", "tax_id", "address"):
            batch.drop_column(name)
        batch.drop_column("legal_name")
