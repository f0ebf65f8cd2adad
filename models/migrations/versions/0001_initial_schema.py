"""Catalog, customers, closed periods, charges, ledger and invoices

Revision ID: 0001
Revises:
Create Date: 2026-11-25 23:34:47.136343
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "business_models",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("service_type", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_business_models")),
        sa.UniqueConstraint("name", name=op.f("uq_business_models_name")),
    )
    op.create_table(
        "customer_classes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("grace_period_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column("invoice_template", sa.String(length=100), nullable=False),
        sa.Column("tax_name", sa.String(length=50), nullable=False),
        sa.Column("tax_rate", models.base.ExactDecimal(6), nullable=False),
        sa.Column("notification_emails", sa.JSON(), nullable=False),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "grace_period_days >= 0", name=op.f("ck_customer_classes_grace_period_non_negative")
        ),
        sa.CheckConstraint("tax_rate >= 0", name=op.f("ck_customer_classes_tax_rate_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_classes")),
        sa.UniqueConstraint("name", name=op.f("uq_customer_classes_name")),
    )
    op.create_table(
        "resellers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("last_invoice_number", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            models.base.UTCDateTime(),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resellers")),
        sa.UniqueConstraint("name", name=op.f("uq_resellers_name")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "reseller_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "business_model_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column(
            "customer_class_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("billing_period", sa.String(length=32), nullable=False),
        sa.Column("billing_timezone", sa.String(length=64), nullable=False),
        sa.Column("balance_control", sa.String(length=8), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit_limit", models.base.ExactDecimal(4), nullable=True),
        sa.Column("balance", models.base.ExactDecimal(4), server_default="0", nullable=False),
        sa.Column("blocked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("custom_data", sa.JSON(), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("created_local_date", sa.Date(), nullable=False),
        sa.Column("current_period_start", models.base.UTCDateTime(), nullable=False),
        sa.Column("current_period_end", models.base.UTCDateTime(), nullable=False),
        sa.Column("intake_key", sa.String(length=200), nullable=True),
        sa.Column(
            "stored_at",
            models.base.UTCDateTime(),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "balance_control IN ('prepaid', 'postpaid')",
            name=op.f("ck_customers_balance_control_known"),
        ),
        sa.CheckConstraint(
            "credit_limit IS NULL OR (balance_control = 'postpaid' AND credit_limit >= 0)",
            name=op.f("ck_customers_credit_limit_postpaid_only"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'closed', 'terminated')", name=op.f("ck_customers_status_known")
        ),
        sa.CheckConstraint(
            "current_period_start < current_period_end", name=op.f("ck_customers_period_not_empty")
        ),
        sa.ForeignKeyConstraint(
            ["business_model_id"],
            ["business_models.id"],
            name=op.f("fk_customers_business_model_id_business_models"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_class_id"],
            ["customer_classes.id"],
            name=op.f("fk_customers_customer_class_id_customer_classes"),
        ),
        sa.ForeignKeyConstraint(
            ["reseller_id"], ["resellers.id"], name=op.f("fk_customers_reseller_id_resellers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("intake_key", name=op.f("uq_customers_intake_key")),
    )
    op.create_index(
        "ix_customers_due",
        "customers",
        ["current_period_end"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_index(op.f("ix_customers_reseller_id"), "customers", ["reseller_id"], unique=False)
    op.create_index(
        "uq_customers_name_lower", "customers", [sa.literal_column("lower(name)")], unique=True
    )
    op.create_table(
        "closed_periods",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("period_start", models.base.UTCDateTime(), nullable=False),
        sa.Column("period_end", models.base.UTCDateTime(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("billing_period", sa.String(length=32), nullable=False),
        sa.Column("billing_timezone", sa.String(length=64), nullable=False),
        sa.Column("closed_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("invoice_enqueued_at", models.base.UTCDateTime(), nullable=True),
        sa.Column("invoiced", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_closed_periods_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_closed_periods")),
        sa.UniqueConstraint(
            "customer_id", "period_start", name=op.f("uq_closed_periods_customer_id_period_start")
        ),
    )
    op.create_index(
        "ix_closed_periods_uninvoiced",
        "closed_periods",
        ["invoice_enqueued_at"],
        unique=False,
        postgresql_where=sa.text("NOT invoiced"),
        sqlite_where=sa.text("NOT invoiced"),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("received_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", models.base.UTCDateTime(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_payments_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint(
            "customer_id", "idempotency_key", name=op.f("uq_payments_customer_id_idempotency_key")
        ),
    )
    op.create_index(op.f("ix_payments_customer_id"), "payments", ["customer_id"], unique=False)
    op.create_table(
        "invoices",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "closed_period_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "reseller_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", models.base.ExactDecimal(4), server_default="0", nullable=False),
        sa.Column("tax_name", sa.String(length=50), nullable=False),
        sa.Column("tax_rate", models.base.ExactDecimal(6), nullable=False),
        sa.Column("tax", models.base.ExactDecimal(4), server_default="0", nullable=False),
        sa.Column("total", models.base.ExactDecimal(4), server_default="0", nullable=False),
        sa.Column("period_start", models.base.UTCDateTime(), nullable=False),
        sa.Column("period_end", models.base.UTCDateTime(), nullable=False),
        sa.Column("covered_from", sa.Date(), nullable=False),
        sa.Column("covered_to", sa.Date(), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("document_html", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            models.base.UTCDateTime(),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("issued_at", models.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "status = 'generating' OR number IS NOT NULL", name=op.f("ck_invoices_issued_numbered")
        ),
        sa.CheckConstraint(
            "status IN ('generating', 'issued')", name=op.f("ck_invoices_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["closed_period_id"],
            ["closed_periods.id"],
            name=op.f("fk_invoices_closed_period_id_closed_periods"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_invoices_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["reseller_id"], ["resellers.id"], name=op.f("fk_invoices_reseller_id_resellers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("closed_period_id", name=op.f("uq_invoices_closed_period_id")),
        sa.UniqueConstraint("reseller_id", "number", name=op.f("uq_invoices_reseller_id_number")),
    )
    op.create_index(op.f("ix_invoices_customer_id"), "invoices", ["customer_id"], unique=False)
    op.create_table(
        "charges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("occurred_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", models.base.UTCDateTime(), nullable=False),
        sa.Column(
            "invoice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_charges_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_charges_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_charges_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charges")),
        sa.UniqueConstraint(
            "customer_id", "idempotency_key", name=op.f("uq_charges_customer_id_idempotency_key")
        ),
    )
    op.create_index(
        "ix_charges_customer_occurred", "charges", ["customer_id", "occurred_at"], unique=False
    )
    op.create_index(op.f("ix_charges_invoice_id"), "charges", ["invoice_id"], unique=False)
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "invoice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("sent_at", models.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed')", name=op.f("ck_notifications_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_notifications_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "invoice_id", "recipient", name=op.f("uq_notifications_invoice_id_recipient")
        ),
    )
    op.create_index(
        "ix_notifications_pending",
        "notifications",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "invoice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("charge_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.Column("occurred_at", models.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name=op.f("fk_invoice_lines_charge_id_charges")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
        sa.UniqueConstraint("charge_id", name=op.f("uq_invoice_lines_charge_id")),
    )
    op.create_index(
        op.f("ix_invoice_lines_invoice_id"), "invoice_lines", ["invoice_id"], unique=False
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("entry_type", sa.String(length=16), nullable=False),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.Column("balance_after", models.base.ExactDecimal(4), nullable=False),
        sa.Column("charge_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", models.base.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "entry_type IN ('opening', 'charge', 'payment')",
            name=op.f("ck_ledger_entries_entry_type_known"),
        ),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name=op.f("fk_ledger_entries_charge_id_charges")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_ledger_entries_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_ledger_entries_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("charge_id", name=op.f("uq_ledger_entries_charge_id")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_ledger_entries_payment_id")),
    )
    op.create_index(
        "ix_ledger_entries_customer", "ledger_entries", ["customer_id", "id"], unique=False
    )


def downgrade() -> None:

    op.drop_index("ix_ledger_entries_customer", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(op.f("ix_invoice_lines_invoice_id"), table_name="invoice_lines")
    op.drop_table("invoice_lines")
    op.drop_index(
        "ix_notifications_pending",
        table_name="notifications",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.drop_table("notifications")
    op.drop_index(op.f("ix_charges_invoice_id"), table_name="charges")
    op.drop_index("ix_charges_customer_occurred", table_name="charges")
    op.drop_table("charges")
    op.drop_index(op.f("ix_invoices_customer_id"), table_name="invoices")
    op.drop_table("invoices")
    op.drop_index(op.f("ix_payments_customer_id"), table_name="payments")
    op.drop_table("payments")
    op.drop_index(
        "ix_closed_periods_uninvoiced",
        table_name="closed_periods",
        postgresql_where=sa.text("NOT invoiced"),
        sqlite_where=sa.text("NOT invoiced"),
    )
    op.drop_table("closed_periods")
    op.drop_index("uq_customers_name_lower", table_name="customers")
    op.drop_index(op.f("ix_customers_reseller_id"), table_name="customers")
    op.drop_index(
        "ix_customers_due",
        table_name="customers",
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.drop_table("customers")
    op.drop_table("resellers")
    op.drop_table("customer_classes")
    op.drop_table("business_models")
