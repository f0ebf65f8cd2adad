"""The order `billing charges load` sends a file in: by customer, in batches that keep it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.cli.charge_order import CustomerOrder, customer_reference, instant_key

AT = dt.datetime(2026, 3, 25, 9, 30, tzinfo=dt.UTC)


@st.composite
def _file(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Lines for a few customers (by name in any case, or by id), with colliding instants
    written in several offsets, and a few unreadable ones."""
    lines = []
    for _ in range(draw(st.integers(0, 60))):
        who = draw(
            st.sampled_from(
                [
                    {"customer": "Acme"},
                    {"customer": "ACME"},
                    {"customer": "b"},
                    {"customer_id": 7},
                    {"customer_id": 8},
                    {},
                ]
            )
        )
        minutes = draw(st.integers(0, 4))
        offset = dt.timezone(dt.timedelta(hours=draw(st.sampled_from([0, 2, -5]))))
        at = (AT + dt.timedelta(minutes=minutes)).astimezone(offset).isoformat()
        lines.append(who | {"occurred_at": draw(st.sampled_from([at, at, "not a time"]))})
    return lines


@settings(max_examples=200, deadline=None)
@given(lines=_file(), batch_size=st.integers(1, 7))
def test_runs_keep_each_customer_in_one_run_and_in_order(lines, batch_size) -> None:
    """Every line is sent once; a customer's lines are all in one run (batches of other runs
    never hold them), in (instant, line) order; batches hold at most twice the size."""
    with CustomerOrder() as order:
        for number, payload in enumerate(lines, start=1):
            order.add(number, payload)
        runs = list(order.runs(batch_size))

    sent = [number for run in runs for batch in run for number, _ in batch]
    assert sorted(sent) == list(range(1, len(lines) + 1))
    owner: dict[str, int] = {}
    for index, run in enumerate(runs):
        for batch in run:
            assert 0 < len(batch) <= 2 * batch_size
        for number, payload in (item for batch in run for item in batch):
            assert payload == lines[number - 1]
            assert owner.setdefault(customer_reference(payload), index) == index
        keys = [(customer_reference(p), instant_key(p), n) for batch in run for n, p in batch]
        assert keys == sorted(keys)


def test_a_customer_named_in_any_case_is_one_customer() -> None:
    """`Acme` and `ACME` are grouped together; a name and an id are not."""
    assert customer_reference({"customer": "Acme"}) == customer_reference({"customer": "ACME"})
    assert customer_reference({"customer": "7"}) != customer_reference({"customer_id": 7})


def test_instants_sort_by_their_utc_value() -> None:
    """10:00+02:00 comes before 09:30Z, whatever the text says."""
    assert instant_key({"occurred_at": "2026-03-25T10:00:00+02:00"}) < instant_key(
        {"occurred_at": "2026-03-25T09:30:00Z"}
    )
