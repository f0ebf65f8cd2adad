"""The normalised key under which names are unique (NFKC + casefold), decided in Python so
PostgreSQL and SQLite take the same decision."""

from __future__ import annotations

import unicodedata
from typing import Final

# NFKC and full case folding turn one character into at most 18 (U+FDFA); names have 100.
MAX_KEY_LENGTH: Final = 1800


def name_key(text: str) -> str:
    """The key two names share exactly when they are the same name ignoring case and form."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFKC", folded).strip()
