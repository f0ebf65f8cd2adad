"""The message decoder's nesting and encoding rules, without a broker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.messages import MAX_DEPTH, PoisonMessage, loads, nesting_depth

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(_json)
def test_nesting_depth_matches_the_structure_whatever_the_strings_hold(value: Any) -> None:
    """Brackets and escaped quotes inside strings never count; arrays and objects do."""
    assert nesting_depth(json.dumps(value)) == _depth(value)


def test_a_body_just_deep_enough_is_read_and_one_level_more_is_refused() -> None:
    """MAX_DEPTH levels decode; MAX_DEPTH + 1 is a poison message, before any parsing."""
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(PoisonMessage) as refused:
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert refused.value.code == "too_deep"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'["caf\xe9"]', "not_utf8"),
        (b"[" + b"9" * 5000 + b"]", "not_json"),
        (b"[1,", "not_json"),
        ("[" * 100_000, "too_deep"),
    ],
)
def test_unreadable_bodies_are_poison_with_a_reason(body: bytes | str, code: str) -> None:
    """Invalid UTF-8, an integer too long to convert, truncated JSON and extreme nesting
    each raise PoisonMessage with its code (never RecursionError or a silent drop)."""
    with pytest.raises(PoisonMessage) as refused:
        loads(body)
    assert refused.value.code == code
