"""Collections: money applied to invoices, credit notes, void invoices, collection steps

Revision ID: 0005_collections
Revises: 0004_fees
Create Date: 2026-12-02 20:10:00

On a populated database:
- every existing invoice stays `issued`; an issued invoice of a prepaid customer was paid
  from its funds when its charges were taken, so it gets its `prepaid_funds` application;
- every existing postpaid payment was never applied to an invoice, so all of it is the
  customer's credit (`unapplied = amount`); the next `billing collections run` (and the
  beat task) applies such credit to the open invoices, oldest due first, before it sends
  any reminder;
- the class policies are empty (nothing happens until a catalog sets them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0005_collections"
down_revision: str | Sequence[str] | None = "0004_fees"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# SQLite's batch mode reflects the table it rebuilds; not the tables it refers to.
NO_REFERRED = {"resolve_fks": False}


def upgrade() -> None:
    with op.batch_alter_table("resellers", reflect_kwargs=NO_REFERRED) as b:
        b.add_column(
            sa.Column("last_credit_note_number", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("customer_classes", reflect_kwargs=NO_REFERRED) as b:
        b.add_column(sa.Column("reminder_days", sa.JSON(), nullable=True))
        b.add_column(
            sa.Column("overdue_notice", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        b.add_column(sa.Column("suspend_after_days", sa.Integer(), nullable=True))
        b.add_column(sa.Column("terminate_after_days", sa.Integer(), nullable=True))
        b.create_check_constraint(
            op.f("ck_customer_classes_suspend_non_negative"),
            "suspend_after_days IS NULL OR suspend_after_days >= 0",
        )
        b.create_check_constraint(
            op.f("ck_customer_classes_terminate_non_negative"),
            "terminate_after_days IS NULL OR terminate_after_days >= 0",
        )
    op.execute("UPDATE customer_classes SET reminder_days = '[]'")
    with op.batch_alter_table("customer_classes", reflect_kwargs=NO_REFERRED) as b:
        b.alter_column("reminder_days", existing_type=sa.JSON(), nullable=False)

    with op.batch_alter_table("invoices", reflect_kwargs=NO_REFERRED) as b:
        b.add_column(sa.Column("voided_at", models.base.UTCDateTime(), nullable=True))
        b.add_column(sa.Column("void_reason", sa.Text(), nullable=True))
        b.add_column(sa.Column("replaces_invoice_id", KEY, nullable=True))
        b.add_column(sa.Column("settled_at", models.base.UTCDateTime(), nullable=True))
        b.create_foreign_key(
            op.f("fk_invoices_replaces_invoice_id_invoices"),
            "invoices",
            ["replaces_invoice_id"],
            ["id"],
        )
        b.drop_constraint(op.f("uq_invoices_closed_period_id"), type_="unique")
        b.drop_constraint(op.f("ck_invoices_status_known"), type_="check")
        b.create_check_constraint(
            op.f("ck_invoices_status_known"), "status IN ('generating', 'issued', 'void')"
        )
        b.create_check_constraint(
            op.f("ck_invoices_void_dated"), "(status = 'void') = (voided_at IS NOT NULL)"
        )
    op.create_index(
        "uq_invoices_live_closed_period",
        "invoices",
        ["closed_period_id"],
        unique=True,
        postgresql_where=sa.text("status <> 'void'"),
        sqlite_where=sa.text("status <> 'void'"),
    )

    with op.batch_alter_table("invoice_lines", reflect_kwargs=NO_REFERRED) as b:
        b.add_column(sa.Column("void", sa.Boolean(), server_default=sa.false(), nullable=False))
        b.drop_constraint(op.f("uq_invoice_lines_charge_id"), type_="unique")
    op.create_index(
        "uq_invoice_lines_live_charge",
        "invoice_lines",
        ["charge_id"],
        unique=True,
        postgresql_where=sa.text("NOT void"),
        sqlite_where=sa.text("NOT void"),
    )

    with op.batch_alter_table("notifications", reflect_kwargs=NO_REFERRED) as b:
        b.add_column(
            sa.Column("topic", sa.String(length=40), server_default="invoice", nullable=False)
        )
        b.drop_constraint(op.f("uq_notifications_invoice_id_recipient"), type_="unique")
        b.create_unique_constraint(
            op.f("uq_notifications_invoice_id_topic_recipient"),
            ["invoice_id", "topic", "recipient"],
        )

    with op.batch_alter_table("payments", reflect_kwargs=NO_REFERRED) as b:
        b.add_column(
            sa.Column("unapplied", models.base.ExactDecimal(4), server_default="0", nullable=False)
        )
    op.execute(
        "UPDATE payments SET unapplied = amount WHERE customer_id IN "
        "(SELECT id FROM customers WHERE balance_control = 'postpaid')"
    )
    with op.batch_alter_table("payments", reflect_kwargs=NO_REFERRED) as b:
        b.create_check_constraint(
            op.f("ck_payments_unapplied_in_range"), "unapplied >= 0 AND unapplied <= amount"
        )
    op.create_index(
        "ix_payments_unapplied",
        "payments",
        ["customer_id"],
        postgresql_where=sa.text("unapplied > 0"),
        sqlite_where=sa.text("unapplied > 0"),
    )

    op.create_table(
        "credit_notes",
        sa.Column("id", KEY, nullable=False),
        sa.Column("reseller_id", KEY, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("invoice_id", KEY, nullable=False),
        sa.Column("customer_id", KEY, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.Column("unapplied", models.base.ExactDecimal(4), server_default="0", nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("issued_at", models.base.UTCDateTime(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_notes_amount_positive")),
        sa.CheckConstraint(
            "unapplied >= 0 AND unapplied <= amount",
            name=op.f("ck_credit_notes_unapplied_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_credit_notes_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["reseller_id"], ["resellers.id"], name=op.f("fk_credit_notes_reseller_id_resellers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint(
            "reseller_id", "number", name=op.f("uq_credit_notes_reseller_id_number")
        ),
    )
    op.create_index(op.f("ix_credit_notes_customer_id"), "credit_notes", ["customer_id"])
    op.create_index(op.f("ix_credit_notes_invoice_id"), "credit_notes", ["invoice_id"])
    op.create_index(
        "ix_credit_notes_unapplied",
        "credit_notes",
        ["customer_id"],
        postgresql_where=sa.text("unapplied > 0"),
        sqlite_where=sa.text("unapplied > 0"),
    )

    with op.batch_alter_table("ledger_entries", reflect_kwargs=NO_REFERRED) as b:
        b.add_column(sa.Column("credit_note_id", KEY, nullable=True))
        b.create_foreign_key(
            op.f("fk_ledger_entries_credit_note_id_credit_notes"),
            "credit_notes",
            ["credit_note_id"],
            ["id"],
        )
        b.create_unique_constraint(op.f("uq_ledger_entries_credit_note_id"), ["credit_note_id"])
        b.drop_constraint(op.f("ck_ledger_entries_entry_type_known"), type_="check")
        b.create_check_constraint(
            op.f("ck_ledger_entries_entry_type_known"),
            "entry_type IN ('opening', 'charge', 'payment', 'credit_note', 'invoice_tax')",
        )

    op.create_table(
        "invoice_applications",
        sa.Column("id", KEY, nullable=False),
        sa.Column("invoice_id", KEY, nullable=False),
        sa.Column("customer_id", KEY, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("payment_id", KEY, nullable=True),
        sa.Column("credit_note_id", KEY, nullable=True),
        sa.Column("amount", models.base.ExactDecimal(4), nullable=False),
        sa.Column("applied_at", models.base.UTCDateTime(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_invoice_applications_amount_positive")),
        sa.CheckConstraint(
            "source IN ('payment', 'credit_note', 'prepaid_funds')",
            name=op.f("ck_invoice_applications_source_known"),
        ),
        sa.CheckConstraint(
            "(source = 'payment') = (payment_id IS NOT NULL)"
            " AND (source = 'credit_note') = (credit_note_id IS NOT NULL)",
            name=op.f("ck_invoice_applications_source_given"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_notes.id"],
            name=op.f("fk_invoice_applications_credit_note_id_credit_notes"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_invoice_applications_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_applications_invoice_id_invoices"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_invoice_applications_payment_id_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_applications")),
        sa.UniqueConstraint(
            "invoice_id",
            "credit_note_id",
            name=op.f("uq_invoice_applications_invoice_id_credit_note_id"),
        ),
        sa.UniqueConstraint(
            "invoice_id", "payment_id", name=op.f("uq_invoice_applications_invoice_id_payment_id")
        ),
    )
    op.create_index(
        op.f("ix_invoice_applications_customer_id"), "invoice_applications", ["customer_id"]
    )
    op.create_index("ix_invoice_applications_invoice", "invoice_applications", ["invoice_id"])
    op.create_index("ix_invoice_applications_payment", "invoice_applications", ["payment_id"])
    op.create_index(
        "uq_invoice_applications_prepaid_funds",
        "invoice_applications",
        ["invoice_id"],
        unique=True,
        postgresql_where=sa.text("source = 'prepaid_funds'"),
        sqlite_where=sa.text("source = 'prepaid_funds'"),
    )
    op.execute(
        """
        INSERT INTO invoice_applications (invoice_id, customer_id, source, amount, applied_at)
        SELECT i.id, i.customer_id, 'prepaid_funds', i.total, i.issued_at
        FROM invoices i JOIN customers c ON c.id = i.customer_id
        WHERE i.status = 'issued' AND i.total > 0 AND c.balance_control = 'prepaid'
        """
    )

    # What is already settled: zero totals and the prepaid invoices just paid from funds.
    op.execute(
        """
        UPDATE invoices SET settled_at = issued_at
        WHERE status = 'issued' AND total <= (
            SELECT COALESCE(SUM(a.amount), 0) FROM invoice_applications a
            WHERE a.invoice_id = invoices.id
        )
        """
    )
    op.create_index(
        "ix_invoices_open",
        "invoices",
        ["customer_id"],
        postgresql_where=sa.text("status = 'issued' AND settled_at IS NULL"),
        sqlite_where=sa.text("status = 'issued' AND settled_at IS NULL"),
    )

    op.create_table(
        "collection_steps",
        sa.Column("id", KEY, nullable=False),
        sa.Column("invoice_id", KEY, nullable=False),
        sa.Column("customer_id", KEY, nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("due_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("done_at", models.base.UTCDateTime(), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_collection_steps_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_collection_steps_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection_steps")),
        sa.UniqueConstraint("invoice_id", "step", name=op.f("uq_collection_steps_invoice_id_step")),
    )
    op.create_index(op.f("ix_collection_steps_customer_id"), "collection_steps", ["customer_id"])


def downgrade() -> None:
    op.drop_table("collection_steps")
    op.drop_table("invoice_applications")
    with op.batch_alter_table("ledger_entries", reflect_kwargs=NO_REFERRED) as b:
        b.drop_constraint(op.f("ck_ledger_entries_entry_type_known"), type_="check")
        b.create_check_constraint(
            op.f("ck_ledger_entries_entry_type_known"),
            "entry_type IN ('opening', 'charge', 'payment')",
        )
        b.drop_constraint(op.f("uq_ledger_entries_credit_note_id"), type_="unique")
        b.drop_constraint(op.f("fk_ledger_entries_credit_note_id_credit_notes"), type_="foreignkey")
        b.drop_column("credit_note_id")
    op.drop_table("credit_notes")
    op.drop_index("ix_payments_unapplied", table_name="payments")
    with op.batch_alter_table("payments", reflect_kwargs=NO_REFERRED) as b:
        b.drop_constraint(op.f("ck_payments_unapplied_in_range"), type_="check")
        b.drop_column("unapplied")
    with op.batch_alter_table("notifications", reflect_kwargs=NO_REFERRED) as b:
        b.drop_constraint(op.f("uq_notifications_invoice_id_topic_recipient"), type_="unique")
        b.create_unique_constraint(
            op.f("uq_notifications_invoice_id_recipient"), ["invoice_id", "recipient"]
        )
        b.drop_column("topic")
    op.drop_index("uq_invoice_lines_live_charge", table_name="invoice_lines")
    with op.batch_alter_table("invoice_lines", reflect_kwargs=NO_REFERRED) as b:
        b.create_unique_constraint(op.f("uq_invoice_lines_charge_id"), ["charge_id"])
        b.drop_column("void")
    op.drop_index("ix_invoices_open", table_name="invoices")
    op.drop_index("uq_invoices_live_closed_period", table_name="invoices")
    with op.batch_alter_table("invoices", reflect_kwargs=NO_REFERRED) as b:
        b.drop_constraint(op.f("ck_invoices_void_dated"), type_="check")
        b.drop_constraint(op.f("ck_invoices_status_known"), type_="check")
        b.create_check_constraint(
            op.f("ck_invoices_status_known"), "status IN ('generating', 'issued')"
        )
        b.create_unique_constraint(op.f("uq_invoices_closed_period_id"), ["closed_period_id"])
        b.drop_constraint(op.f("fk_invoices_replaces_invoice_id_invoices"), type_="foreignkey")
        b.drop_column("replaces_invoice_id")
        b.drop_column("settled_at")
        b.drop_column("void_reason")
        b.drop_column("voided_at")
    with op.batch_alter_table("customer_classes", reflect_kwargs=NO_REFERRED) as b:
        b.drop_constraint(op.f("ck_customer_classes_terminate_non_negative"), type_="check")
        b.drop_constraint(op.f("ck_customer_classes_suspend_non_negative"), type_="check")
        b.drop_column("terminate_after_days")
        b.drop_column("suspend_after_days")
        b.drop_column("overdue_notice")
        b.drop_column("reminder_days")
    with op.batch_alter_table("resellers", reflect_kwargs=NO_REFERRED) as b:
        b.drop_column("last_credit_note_number")
