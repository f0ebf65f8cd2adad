# ruff: noqa: RUF001, RUF002  (look-alike letters are what this file is about)
"""Customer names are unique per reseller by `name_key`, decided alike on PostgreSQL and SQLite.

A hypothesis test sends pairs of tricky Unicode names (Turkish dotted and dotless I, German
ß and ẞ, ligatures, full-width letters, combining accents, final sigma, the Ångström and
Ohm signs) through the intake service on both backends and checks that both take the same
decision, and that it is the key's.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from models.catalog_file import parse_catalog
from models.names import name_key
from tasks.catalog import load_catalog
from tasks.intake import create_customer
from tests.factories import intake_payload
from tests.invoicing_factories import embedded_engine

pytestmark = pytest.mark.functional

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

FRAGMENTS = [
    "I",
    "İ",
    "ı",
    "i",
    "i\u0307",  # Turkish dotted / dotless I
    "ß",
    "ẞ",
    "SS",
    "ss",  # German sharp s
    "ﬁ",
    "fi",
    "FI",
    "ﬀ",
    "ff",  # ligatures
    "Ａ",
    "ａ",
    "A",
    "a",
    "Ｇｌｏｂｅｘ",
    "Globex",  # full-width letters
    "é",
    "e\u0301",
    "É",
    "E\u0301",
    "Å",
    "\u212b",
    "A\u030a",  # combining accents, Ångström
    "Σ",
    "σ",
    "ς",
    "Ω",
    "\u2126",  # final sigma, the Ohm sign
    "ǅ",
    "Ǆ",
    "ǆ",
    "Café",
    "CAFÉ",
    " ",
    "-",
]
names = (
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4)
    .map("".join)
    .filter(lambda n: n.strip() != "")
)
variants = [str.upper, str.lower, str.casefold, str.title]
variants += [partial(unicodedata.normalize, form) for form in ("NFC", "NFD", "NFKC")]


@st.composite
def name_pairs(draw: st.DrawFn) -> tuple[str, str]:
    first = draw(names)
    if draw(st.booleans()):
        return first, draw(st.sampled_from(variants))(first)
    return first, draw(names)


@pytest.fixture
def sqlite_session(tmp_path: Path) -> Iterator[Session]:
    """A session on a fresh embedded SQLite database holding the example catalog."""
    engine = embedded_engine(tmp_path)
    with Session(engine) as session:
        load_catalog(session, parse_catalog(EXAMPLE.read_text()))
        session.commit()
        yield session
    engine.dispose()


def _decision(session: Session, first: str, second: str) -> str:
    """Create `first`, then `second`, for one reseller; what became of `second`."""
    with session.begin_nested() as savepoint:
        created = create_customer(session, intake_payload(name=first), now=NOW)
        assert created["status"] == "created", created
        outcome = create_customer(session, intake_payload(name=second), now=NOW)
        savepoint.rollback()
    if outcome["status"] == "created":
        return "created"
    return outcome["errors"][0]["code"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pair=name_pairs())
def test_both_backends_take_the_same_uniqueness_decision(
    pair: tuple[str, str], clean_db, db_session: Session, sqlite_session: Session
) -> None:
    """Two names clash on PostgreSQL exactly when they clash on SQLite: when their keys match."""
    if not db_session.info.get("catalog"):
        load_catalog(db_session, parse_catalog(EXAMPLE.read_text()))
        db_session.info["catalog"] = True
    first, second = pair
    expected = "name_taken" if name_key(first.strip()) == name_key(second.strip()) else "created"

    assert _decision(db_session, first, second) == expected
    assert _decision(sqlite_session, first, second) == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Straße", "STRASSE"),
        ("Café Lumière", "CAFE\u0301 LUMIE\u0300RE"),
        ("Ｇｌｏｂｅｘ Corp", "globex corp"),
        ("ﬁne", "FINE"),
        ("Émile SA", "émile sa"),
        ("ΣΑΣ", "σας"),
    ],
)
def test_names_that_are_one_name_clash_on_sqlite(
    sqlite_session: Session, first: str, second: str
) -> None:
    """The embedded default folds beyond ASCII: these pairs are one name there too."""
    assert _decision(sqlite_session, first, second) == "name_taken"


def test_turkish_dotted_and_dotless_i_are_distinct(sqlite_session: Session) -> None:
    """Full case folding keeps "ı" (dotless) apart from "i"; "İ" folds to "i" + dot above."""
    assert _decision(sqlite_session, "Kırmızı", "Kirmizi") == "created"
    assert _decision(sqlite_session, "İnci", "inci") == "created"
    assert _decision(sqlite_session, "İnci", "i\u0307nci") == "name_taken"
