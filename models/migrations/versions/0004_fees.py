"""Plans, subscriptions and the fees billed for them; customer change history, pending
billing period changes and closing

Revision ID: 0004_fees
Revises: 0003_faults
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0004_fees"
down_revision: str | Sequence[str] | None = "0003_faults"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", _KEY, nullable=False),
        sa.Column("reseller_id", _KEY, nullable=False),
        sa.Column("business_model_id", _KEY, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_key", sa.String(length=1800), nullable=False),
        sa.Column("billing_mode", sa.String(length=8), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "billing_mode IN ('advance', 'arrears')", name=op.f("ck_plans_billing_mode_known")
        ),
        sa.ForeignKeyConstraint(
            ["business_model_id"],
            ["business_models.id"],
            name=op.f("fk_plans_business_model_id_business_models"),
        ),
        sa.ForeignKeyConstraint(
            ["reseller_id"], ["resellers.id"], name=op.f("fk_plans_reseller_id_resellers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("reseller_id", "name_key", name=op.f("uq_plans_reseller_id_name_key")),
    )
    op.create_table(
        "plan_fees",
        sa.Column("id", _KEY, nullable=False),
        sa.Column("plan_id", _KEY, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_plan_fees_amount_not_negative")),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_plan_fees_plan_id_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_fees")),
        sa.UniqueConstraint("plan_id", "currency", name=op.f("uq_plan_fees_plan_id_currency")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", _KEY, nullable=False),
        sa.Column("customer_id", _KEY, nullable=False),
        sa.Column("plan_id", _KEY, nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("starts_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("ends_at", models.base.UTCDateTime(), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("replaces_id", _KEY, nullable=True),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_subscriptions_quantity_positive")),
        sa.CheckConstraint(
            "ends_at IS NULL OR ends_at >= starts_at",
            name=op.f("ck_subscriptions_ends_after_start"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_subscriptions_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_subscriptions_plan_id_plans")
        ),
        sa.ForeignKeyConstraint(
            ["replaces_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscriptions_replaces_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        "ix_subscriptions_customer", "subscriptions", ["customer_id", "starts_at"], unique=False
    )
    op.create_index(
        "uq_subscriptions_open",
        "subscriptions",
        ["customer_id", "plan_id"],
        unique=True,
        postgresql_where=sa.text("ends_at IS NULL"),
        sqlite_where=sa.text("ends_at IS NULL"),
    )
    op.create_table(
        "subscription_fees",
        sa.Column("id", _KEY, nullable=False),
        sa.Column("subscription_id", _KEY, nullable=False),
        sa.Column("customer_id", _KEY, nullable=False),
        sa.Column("invoice_id", _KEY, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("period_start", models.base.UTCDateTime(), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.CheckConstraint(
            "kind IN ('advance', 'arrears', 'credit')", name=op.f("ck_subscription_fees_kind_known")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_subscription_fees_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_subscription_fees_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_fees_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_fees")),
        sa.UniqueConstraint(
            "subscription_id",
            "period_start",
            "kind",
            name=op.f("uq_subscription_fees_subscription_id_period_start_kind"),
        ),
    )
    op.create_index(
        "ix_subscription_fees_customer",
        "subscription_fees",
        ["customer_id", "period_start"],
        unique=False,
    )
    op.create_index(
        op.f("ix_subscription_fees_invoice_id"), "subscription_fees", ["invoice_id"], unique=False
    )
    op.create_table(
        "customer_changes",
        sa.Column("id", _KEY, nullable=False),
        sa.Column("customer_id", _KEY, nullable=False),
        sa.Column("field", sa.String(length=100), nullable=False),
        sa.Column("old_value", sa.JSON(), nullable=True),
        sa.Column("new_value", sa.JSON(), nullable=True),
        sa.Column("changed_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("effective_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_changes_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_changes")),
    )
    op.create_index(
        "ix_customer_changes_customer", "customer_changes", ["customer_id", "id"], unique=False
    )
    # Plain ADD COLUMN on both databases: a batch rebuild of `customers` on SQLite would have
    # to reflect its expression index, which SQLite's reflection cannot do.
    op.add_column("customers", sa.Column("pending_billing_period", sa.String(32), nullable=True))
    op.add_column("customers", sa.Column("pending_billing_timezone", sa.String(64), nullable=True))
    op.add_column("customers", sa.Column("pending_from", models.base.UTCDateTime(), nullable=True))
    op.add_column("customers", sa.Column("closed_at", models.base.UTCDateTime(), nullable=True))
    # On SQLite the batch rebuild works from the table as revision 0001 wrote it, so it
    # reflects nothing (reflection would reach `customers` and its expression index).
    with op.batch_alter_table("invoice_lines", copy_from=_invoice_lines_0001()) as batch:
        batch.add_column(sa.Column("fee_id", _KEY, nullable=True))
        batch.create_foreign_key(
            op.f("fk_invoice_lines_fee_id_subscription_fees"),
            "subscription_fees",
            ["fee_id"],
            ["id"],
        )
        batch.create_unique_constraint(op.f("uq_invoice_lines_fee_id"), ["fee_id"])


def _invoice_lines_0001() -> sa.Table:
    metadata = sa.MetaData()
    for referred in ("invoices", "charges", "subscription_fees"):
        sa.Table(referred, metadata, sa.Column("id", _KEY, primary_key=True))
    return sa.Table(
        "invoice_lines",
        metadata,
        sa.Column("id", _KEY, nullable=False),
        sa.Column("invoice_id", _KEY, nullable=False),
        sa.Column("charge_id", _KEY, nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.Column("occurred_at", models.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name="fk_invoice_lines_charge_id_charges"
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name="fk_invoice_lines_invoice_id_invoices"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_invoice_lines"),
        sa.UniqueConstraint("charge_id", name="uq_invoice_lines_charge_id"),
        sa.Index("ix_invoice_lines_invoice_id", "invoice_id"),
    )


def downgrade() -> None:
    with op.batch_alter_table("invoice_lines") as batch:
        batch.drop_constraint(op.f("uq_invoice_lines_fee_id"), type_="unique")
        batch.drop_constraint(op.f("fk_invoice_lines_fee_id_subscription_fees"), type_="foreignkey")
        batch.drop_column("fee_id")
    for column in ("closed_at", "pending_from", "pending_billing_timezone"):
        op.drop_column("customers", column)
    op.drop_column("customers", "pending_billing_period")
    op.drop_index("ix_customer_changes_customer", table_name="customer_changes")
    op.drop_table("customer_changes")
    op.drop_index(op.f("ix_subscription_fees_invoice_id"), table_name="subscription_fees")
    op.drop_index("ix_subscription_fees_customer", table_name="subscription_fees")
    op.drop_table("subscription_fees")
    op.drop_index("uq_subscriptions_open", table_name="subscriptions")
    op.drop_index("ix_subscriptions_customer", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("plan_fees")
    op.drop_table("plans")
