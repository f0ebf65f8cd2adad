"""The normalised key under which names are unique: one rule, decided in Python.

`name_key(text)` is Unicode's NFKC_Casefold idea: NFKC-normalise, apply full case folding,
normalise again (folding can produce sequences that are no longer in NFKC, e.g. a combining
mark after a folded letter), so the key is stable: `name_key(name_key(x)) == name_key(x)`.

    "Globex Corp", "GLOBEX CORP", full-width "Globex" -> "globex corp" / "globex"
    "Straße", "STRASSE"                                -> "strasse"
    "Café" (precomposed), "Cafe\u0301" (combining)      -> "café"
    "ﬁne" (ligature)                                   -> "fine"

The key is stored in a `name_key` column and the unique indexes are on it, so PostgreSQL and
SQLite take the same decision (no `lower()` index, which folds only ASCII on SQLite).
Keys may be longer than their names (ß folds to "ss", ligatures expand): the columns hold
`MAX_KEY_LENGTH` characters.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Final

# NFKC and full case folding turn one character into at most 18 (U+FDFA); names have 100.
MAX_KEY_LENGTH: Final = 1800


def name_key(text: str) -> str:
    """The key two names share exactly when they are the same name ignoring case and form."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFKC", folded).strip()


def name_key_default(context: Any) -> str:
    """Column default for `name_key`: the key of the row's `name` (Core and ORM inserts)."""
    return name_key(context.get_current_parameters()["name"])
