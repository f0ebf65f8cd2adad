"""Declarative base and the two column types money and time need on every database.

The same schema runs on PostgreSQL (production, tests) and SQLite (the embedded default).
SQLite has neither a timezone-aware timestamp nor an exact decimal, so both are stored in
forms that compare and add correctly there:

- `UTCDateTime`: `timestamptz` on PostgreSQL; on SQLite a naive UTC text that sorts like
  the instant. Values must be aware on the way in and always come back aware, in UTC.
- `ExactDecimal` (`Money()`, `Rate()`): `numeric(20, scale)` on PostgreSQL; on SQLite an
  integer count of 10**-scale units, so SQL sums, comparisons and `balance + :amount` stay
  exact. Four places hold every ISO 4217 currency's minor units.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Numeric, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator, TypeEngine

MONEY_SCALE = 4

# Deterministic constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """The Core table behind a mapped class, typed (for `.c` and dialect inserts)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An instant: aware in, aware UTC out, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def __repr__(self) -> str:
        return "UTCDateTime()"

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given where an instant is required")
        utc = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal with a fixed number of places, stored as scaled integer on SQLite."""

    impl = Numeric(20, MONEY_SCALE)
    cache_ok = True

    def __init__(self, scale: int = MONEY_SCALE) -> None:
        super().__init__()
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)

    def __repr__(self) -> str:  # how Alembic writes the type into a migration
        return f"ExactDecimal({self.scale})"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, self.scale, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("exact amounts must be a Decimal or an int, never a float")
        amount = Decimal(value)
        if amount != amount.quantize(self._quantum):
            raise ValueError(f"{amount} has more than {self.scale} decimal places")
        if dialect.name == "sqlite":
            return int(amount.scaleb(self.scale))
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)).scaleb(-self.scale)).quantize(self._quantum)
        return Decimal(value).quantize(self._quantum)


def Money() -> ExactDecimal:
    """A money amount: four decimal places hold every ISO 4217 currency's minor units."""
    return ExactDecimal(MONEY_SCALE)


def Rate() -> ExactDecimal:
    """A fraction such as a tax rate (0.08875 for 8.875 %)."""
    return ExactDecimal(6)


# A 64-bit surrogate key; SQLite only auto-numbers a column declared INTEGER.
BigIntKey = BigInteger().with_variant(Integer(), "sqlite")
