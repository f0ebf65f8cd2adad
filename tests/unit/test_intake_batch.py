"""Bulk import on the embedded database: the same outcomes and rows as one-by-one intake."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from models.catalog_file import parse_catalog
from tasks.catalog import load_catalog
from tasks.intake_batch import import_customers, import_customers_task
from tests.intake_compare import in_chunks, mixed_file, one_by_one, stored_rows, without_ids
from tests.invoicing_factories import embedded_engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = dt.datetime(2026, 3, 19, 3, 30, tzinfo=dt.UTC)


def _catalogued(folder: Path) -> Session:
    folder.mkdir()
    session = Session(embedded_engine(folder))
    session.begin()
    load_catalog(session, parse_catalog((EXAMPLES / "catalog.yaml").read_text()))
    return session


@pytest.fixture
def two(tmp_path):  # type: ignore[no-untyped-def]
    """Two fresh embedded databases with the example catalog: one-by-one, and bulk."""
    a, b = _catalogued(tmp_path / "one"), _catalogued(tmp_path / "bulk")
    yield a, b
    for s in (a, b):
        s.rollback()
        s.close()


def _same(two, payloads, *, size: int = 1000, now: dt.datetime = NOW) -> list[dict]:  # type: ignore[no-untyped-def]
    one, bulk = two
    expected = without_ids(one, one_by_one(one, payloads, now=now))
    got = without_ids(bulk, in_chunks(bulk, payloads, now=now, size=size))
    assert got == expected
    assert stored_rows(bulk) == stored_rows(one)
    return got


def test_a_mixed_file_gives_the_outcomes_and_rows_of_one_by_one_intake(two) -> None:
    """Valid, rejected, duplicate and replayed lines: identical outcomes and stored rows."""
    outcomes = _same(two, mixed_file(300))

    statuses = {o["status"] for o in outcomes}
    codes = {e["code"] for o in outcomes for e in o.get("errors", ())}
    assert statuses == {"created", "rejected"}
    assert any(o.get("replayed") for o in outcomes)
    assert {"name_taken", "idempotency_key_reused", "not_an_object", "unknown_currency"} <= codes


def test_lines_already_stored_are_replayed_or_taken_on_a_rerun(two) -> None:
    """A second import of the same file is idempotent: replays and taken names, nothing new."""
    payloads = mixed_file(120, seed=3)
    one, bulk = two
    one_by_one(one, payloads, now=NOW)
    in_chunks(bulk, payloads, now=NOW, size=50)
    rows = stored_rows(bulk)

    _same(two, payloads, size=50)

    assert stored_rows(bulk) == rows


def test_the_first_line_of_a_name_wins_within_a_chunk(two) -> None:
    """Two lines of one name in a chunk: the first is created, the second's name is taken,
    a third with the first's key is its replay and a fourth with that key is a reuse."""
    from tests.factories import intake_payload

    payloads = [
        intake_payload(name="Dup Co", idempotency_key="k1"),
        intake_payload(name="DUP CO"),
        intake_payload(name="dup co", idempotency_key="k1"),
        intake_payload(name="Other Co", idempotency_key="k1"),
    ]

    outcomes = _same(two, payloads)

    assert [o["status"] for o in outcomes] == ["created", "rejected", "created", "rejected"]
    assert outcomes[2]["replayed"] is True
    assert outcomes[2]["name"] == "Dup Co"
    assert [e["code"] for e in outcomes[1]["errors"]] == ["name_taken"]
    assert [e["code"] for e in outcomes[3]["errors"]] == ["idempotency_key_reused"]


def test_a_line_after_a_rejected_first_line_of_its_key_is_created(two) -> None:
    """The first line with a key is rejected (its name is taken): the next one with the
    key is then free to create, as it would be one by one."""
    from tests.factories import intake_payload

    payloads = [
        intake_payload(name="Taken Co"),
        intake_payload(name="taken co", idempotency_key="k2"),
        intake_payload(name="Free Co", idempotency_key="k2"),
    ]

    outcomes = _same(two, payloads)

    assert [o["status"] for o in outcomes] == ["created", "rejected", "created"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 40), size=st.integers(1, 15))
def test_any_file_in_any_chunk_size_matches_one_by_one(tmp_path_factory, seed, count, size) -> None:  # type: ignore[no-untyped-def]
    """Property: for random files of duplicates and bad lines, cut into chunks of any size
    (each applied after the previous), outcomes and rows equal one-by-one intake."""
    folder = tmp_path_factory.mktemp("prop")
    a, b = _catalogued(folder / "one"), _catalogued(folder / "bulk")
    try:
        _same((a, b), mixed_file(count, seed=seed), size=size)
    finally:
        for s in (a, b):
            s.rollback()
            s.close()


def test_a_message_that_is_not_a_chunk_is_rejected_not_failed() -> None:
    """A poison message gets a structured rejection; nothing is looked up or stored."""
    outcome = import_customers_task.run({"name": "x"})

    assert outcome["status"] == "rejected"
    assert [e["code"] for e in outcome["errors"]] == ["not_a_chunk"]


def test_an_empty_chunk_stores_nothing(two) -> None:
    _, bulk = two
    assert import_customers(bulk, [], now=NOW) == []
