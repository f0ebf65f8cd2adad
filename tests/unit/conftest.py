"""Fixtures for unit tests that need a database but not a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from tests.invoicing_factories import embedded_engine


@pytest.fixture
def session(tmp_path) -> Iterator[Session]:
    """A session in one transaction on a fresh embedded SQLite database with the whole schema."""
    engine = embedded_engine(tmp_path)
    with Session(engine) as s, s.begin():
        yield s
    engine.dispose()
