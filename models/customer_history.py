"""The history of changes made to a customer after intake."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UTCDateTime


class CustomerChange(Base):
    """One changed field: what, the old and new values (JSON), when the change was made, when
    it takes effect (a billing period rule or timezone: the next period boundary), and the
    request that made it (the task id, or the caller's request id)."""

    __tablename__ = "customer_changes"
    __table_args__ = (Index("ix_customer_changes_customer", "customer_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    field: Mapped[str] = mapped_column(String(100))
    old_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    new_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str | None] = mapped_column(String(200))
