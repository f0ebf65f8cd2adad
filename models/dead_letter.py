"""A message the worker could not run at all, kept for an operator instead of lost."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UTCDateTime


class DeadLetter(Base):
    """One poison message: undecodable, absurdly nested, or not the shape of its task.

    The worker acknowledges it (so it is never redelivered to kill or block anyone) after
    writing this row; `billing dead-letters list` shows them. `body` is the raw message body
    as text (bytes that are not UTF-8 shown as `\\xNN`), cut to its first 64 KiB.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    queue: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(200))
    reason_code: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    headers: Mapped[str] = mapped_column(Text)
