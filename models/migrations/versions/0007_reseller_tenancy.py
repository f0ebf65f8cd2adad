"""The reseller is the tenant: catalog per reseller, name keys, per-reseller idempotency keys

Revision ID: 0007_reseller_tenancy
Revises: 0006_documents
Create Date: 2026-12-02 20:00:00

Upgrades a populated database of the previous head (0006_documents; the catalog as 0001 made it):

- `resellers.name_key` (see `models.names.name_key`), unique. Two resellers whose names
  share a key (`acme` and `ACME`) stop the upgrade with a message naming them: merging
  tenants is a decision for a person, not a migration.
- Business models and customer classes get `reseller_id` and `name_key`, unique per
  reseller. Each global entry is copied to every reseller whose customers use it (the
  lowest such reseller keeps the original row and id, the others get copies) and each
  customer (and plan) points at its own reseller's copy. An entry no customer uses is copied to every
  reseller, so nothing is lost; a reseller may delete what it does not want. Entries with
  no reseller at all to belong to stop the upgrade with a message.
- `customers.name_key`, computed in Python in batches (the same function the service
  uses, so PostgreSQL and SQLite agree), unique per reseller; the `lower(name)` function
  index goes. The intake key becomes unique per reseller (it was global, so no clash).
- Charges and payments get their customer's `reseller_id`; their idempotency keys become
  unique per reseller (they were per customer). A key used for two customers of one
  reseller stops the upgrade with a message naming the reseller and the key.

Every row is kept, with its id. SQLite rebuilds tables (batch mode) with foreign key
enforcement off (see `env.py`) and checks every reference before the transaction ends.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.names import MAX_KEY_LENGTH, name_key

revision: str = "0007_reseller_tenancy"
down_revision: str | Sequence[str] | None = "0006_documents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000
_KEY = sa.String(length=MAX_KEY_LENGTH)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class TenancyMigrationError(RuntimeError):
    """The data cannot be split by reseller without a person's decision."""


def _fill_keys(table_name: str) -> None:
    """name_key = name_key(name) for every row, in batches by id (fine on large tables)."""
    conn = op.get_bind()
    table = sa.table(table_name, sa.column("id"), sa.column("name"), sa.column("name_key"))
    update = (
        table.update()
        .where(table.c.id == sa.bindparam("row_id"))
        .values(name_key=sa.bindparam("key"))
    )
    last = None
    while True:
        query = sa.select(table.c.id, table.c.name).order_by(table.c.id).limit(_BATCH)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = conn.execute(query).all()
        if not rows:
            return
        conn.execute(update, [{"row_id": i, "key": name_key(name)} for i, name in rows])
        last = rows[-1].id


def _refuse_clashes(table_name: str, scope: str | None, what: str) -> None:
    """Stop the upgrade if two rows (within `scope`) share a key; name them."""
    conn = op.get_bind()
    table = sa.table(table_name, sa.column("name"), sa.column("name_key"), sa.column(scope or "id"))
    group = [table.c.name_key] + ([table.c[scope]] if scope else [])
    dupes = conn.execute(
        sa.select(*group).group_by(*group).having(sa.func.count() > 1).limit(20)
    ).all()
    if not dupes:
        return
    lines = []
    for dupe in dupes:
        where = table.c.name_key == dupe.name_key
        if scope:
            where = where & (table.c[scope] == dupe[1])
        names = sorted(conn.execute(sa.select(table.c.name).where(where)).scalars())
        lines.append(
            " and ".join(repr(n) for n in names) + (f" (reseller id {dupe[1]})" if scope else "")
        )
    raise TenancyMigrationError(
        f"cannot upgrade: these {what} have the same name ignoring case and form, and names "
        f"must now be unique that way: {'; '.join(lines)}. Rename one of each (or merge them) "
        "and run the upgrade again; nothing was changed."
    )


def _upgrade_resellers() -> None:
    op.add_column("resellers", sa.Column("name_key", _KEY, nullable=True))
    _fill_keys("resellers")
    _refuse_clashes("resellers", None, "resellers")
    with op.batch_alter_table("resellers") as batch:
        batch.alter_column("name_key", existing_type=_KEY, nullable=False)
        batch.drop_constraint("uq_resellers_name", type_="unique")
        batch.create_unique_constraint("uq_resellers_name_key", ["name_key"])


def _scope_catalog(
    table_name: str, reference: str, columns: Sequence[str], referrers: Sequence[str]
) -> None:
    """Give each entry of a global catalog table to the resellers that use it (see above).
    `referrers` are the tables with `reseller_id` and `reference` (customers, plans)."""
    conn = op.get_bind()
    op.add_column(table_name, sa.Column("reseller_id", _ID, nullable=True))
    op.add_column(table_name, sa.Column("name_key", _KEY, nullable=True))
    with op.batch_alter_table(table_name) as batch:  # copies share the name
        batch.drop_constraint(f"uq_{table_name}_name", type_="unique")
    entries = sa.table(
        table_name,
        sa.column("id"),
        sa.column("name"),
        sa.column("reseller_id"),
        sa.column("name_key"),
        *(sa.column(c) for c in columns),
    )
    referring = [
        sa.table(name, sa.column("reseller_id"), sa.column(reference)) for name in referrers
    ]
    resellers = sa.table("resellers", sa.column("id"))
    all_resellers = list(conn.execute(sa.select(resellers.c.id).order_by(resellers.c.id)).scalars())
    users: dict[int, set[int]] = {}
    for table in referring:
        for reseller_id, entry_id in conn.execute(
            sa.select(table.c.reseller_id, table.c[reference]).distinct()
        ):
            users.setdefault(entry_id, set()).add(reseller_id)
    rows = conn.execute(sa.select(entries.c.id, entries.c.name).order_by(entries.c.id)).all()
    if rows and not all_resellers:
        raise TenancyMigrationError(
            f"cannot upgrade: {table_name} has entries ({', '.join(repr(r.name) for r in rows)}) "
            "but there is no reseller to give them to. Load a reseller, or delete the entries, "
            "and run the upgrade again; nothing was changed."
        )
    for entry_id, name in rows:
        key = name_key(name)
        owners = sorted(users.get(entry_id, all_resellers))
        conn.execute(
            entries.update()
            .where(entries.c.id == entry_id)
            .values(reseller_id=owners[0], name_key=key)
        )
        for reseller_id in owners[1:]:
            copy = sa.select(
                entries.c.name,
                sa.literal(reseller_id, _ID),
                sa.literal(key, _KEY),
                *(entries.c[c] for c in columns),
            ).where(entries.c.id == entry_id)
            conn.execute(
                entries.insert().from_select(["name", "reseller_id", "name_key", *columns], copy)
            )
            copy_id = conn.execute(
                sa.select(entries.c.id)
                .where(
                    entries.c.reseller_id == reseller_id,
                    entries.c.name_key == key,
                    entries.c.id != entry_id,
                )
                .order_by(entries.c.id.desc())
                .limit(1)
            ).scalar_one()
            for table in referring:
                conn.execute(
                    table.update()
                    .where(table.c.reseller_id == reseller_id, table.c[reference] == entry_id)
                    .values({reference: copy_id})
                )
    _refuse_clashes(table_name, "reseller_id", table_name.replace("_", " "))
    with op.batch_alter_table(table_name) as batch:
        batch.alter_column("reseller_id", existing_type=_ID, nullable=False)
        batch.alter_column("name_key", existing_type=_KEY, nullable=False)
        batch.create_unique_constraint(
            f"uq_{table_name}_reseller_id_name_key", ["reseller_id", "name_key"]
        )
        batch.create_foreign_key(
            f"fk_{table_name}_reseller_id_resellers", "resellers", ["reseller_id"], ["id"]
        )


_DUE = sa.text("status = 'active'")


def _upgrade_customers() -> None:
    op.add_column("customers", sa.Column("name_key", _KEY, nullable=True))
    _fill_keys("customers")
    _refuse_clashes("customers", "reseller_id", "customers")
    # Indexes SQLite's table rebuild would have to reflect are dropped first and the one
    # that stays is created again after, exactly as 0001 made it.
    op.drop_index("uq_customers_name_lower", table_name="customers")
    op.drop_index("ix_customers_reseller_id", table_name="customers")
    op.drop_index(
        "ix_customers_due", table_name="customers", postgresql_where=_DUE, sqlite_where=_DUE
    )
    with op.batch_alter_table("customers") as batch:
        batch.alter_column("name_key", existing_type=_KEY, nullable=False)
        batch.drop_constraint("uq_customers_intake_key", type_="unique")
        batch.create_unique_constraint(
            "uq_customers_reseller_id_name_key", ["reseller_id", "name_key"]
        )
        batch.create_unique_constraint(
            "uq_customers_reseller_id_intake_key", ["reseller_id", "intake_key"]
        )
    op.create_index(
        "ix_customers_due",
        "customers",
        ["current_period_end"],
        unique=False,
        postgresql_where=_DUE,
        sqlite_where=_DUE,
    )


def _scope_keys(table_name: str) -> None:
    """Copy the customer's reseller onto each row; keys become unique per reseller."""
    conn = op.get_bind()
    op.add_column(table_name, sa.Column("reseller_id", _ID, nullable=True))
    rows = sa.table(
        table_name,
        sa.column("customer_id"),
        sa.column("reseller_id"),
        sa.column("idempotency_key"),
    )
    customers = sa.table("customers", sa.column("id"), sa.column("reseller_id"))
    conn.execute(
        rows.update().values(
            reseller_id=sa.select(customers.c.reseller_id)
            .where(customers.c.id == rows.c.customer_id)
            .scalar_subquery()
        )
    )
    group = [rows.c.reseller_id, rows.c.idempotency_key]
    dupes = conn.execute(
        sa.select(*group).group_by(*group).having(sa.func.count() > 1).limit(20)
    ).all()
    if dupes:
        listed = "; ".join(f"key {key!r} (reseller id {r})" for r, key in dupes)
        raise TenancyMigrationError(
            f"cannot upgrade: {table_name} idempotency keys are now unique per reseller, and "
            f"these were used for more than one customer of the same reseller: {listed}. "
            "Give those rows distinct keys and run the upgrade again; nothing was changed."
        )
    with op.batch_alter_table(table_name) as batch:
        batch.alter_column("reseller_id", existing_type=_ID, nullable=False)
        batch.drop_constraint(f"uq_{table_name}_customer_id_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            f"uq_{table_name}_reseller_id_idempotency_key", ["reseller_id", "idempotency_key"]
        )
        batch.create_foreign_key(
            f"fk_{table_name}_reseller_id_resellers", "resellers", ["reseller_id"], ["id"]
        )


def _check_references() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL checked every foreign key as the rows changed
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise TenancyMigrationError(f"cannot upgrade: broken references {broken[:10]}")


def upgrade() -> None:
    _upgrade_resellers()
    _scope_catalog(
        "business_models",
        "business_model_id",
        ["service_type", "description"],
        ["customers", "plans"],  # 0004_fees: a plan is its reseller's, so is its model
    )
    _scope_catalog(
        "customer_classes",
        "customer_class_id",
        [
            "grace_period_days",
            "invoice_template",
            "tax_name",
            "tax_rate",
            "notification_emails",
            "custom_fields",
            "reminder_days",  # 0005_collections: the class's collection policy
            "overdue_notice",
            "suspend_after_days",
            "terminate_after_days",
            "requires",  # 0006_documents: what intake must have, documents' format/locale
            "locale",
            "einvoice_format",
        ],
        ["customers"],
    )
    _upgrade_customers()
    _scope_keys("charges")
    _scope_keys("payments")
    _check_references()


def downgrade() -> None:
    raise NotImplementedError(
        "0007 splits the catalog per reseller and cannot be undone without choosing which "
        "copy of each entry to keep; restore a backup taken before the upgrade instead"
    )
