"""How `billing customers import` cuts a file into chunks and waves (no broker needed)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from models.intake import claimed_identities
from worker.cli._common import Line, Report
from worker.cli.customers import _send_wave


class _Result:
    def __init__(self, n: int) -> None:
        self.id = f"t{n}"


class _App:
    def __init__(self) -> None:
        self.bodies: list[list[list[Any]]] = []

    def send_task(self, name: str, args: list[Any]) -> _Result:
        assert name == "billing.customers.import"
        self.bodies.append(args[0])
        return _Result(len(self.bodies))


def _line(number: int, name: str, key: str | None = None, reseller: str = "acme") -> Line:
    payload: dict[str, Any] = {"reseller": reseller, "name": name}
    if key is not None:
        payload["idempotency_key"] = key
    return Line(number, payload=payload)


def test_a_line_sharing_a_claim_with_an_earlier_chunk_waits_for_the_next_wave() -> None:
    app, report = _App(), Report()
    lines = [
        _line(1, "A"),
        _line(2, "B", "k"),
        _line(3, "a"),  # same name as line 1, next chunk: waits
        _line(4, "C", "k"),  # same key as line 2: waits
        _line(5, "D"),
        _line(6, "A", reseller="northwind"),  # another tenant: no claim shared
        _line(7, "c"),  # same name as waiting line 4: waits too, after it
        _line(8, "b", reseller="ACME"),  # same tenant and name as line 2: waits
    ]

    sent, later = _send_wave(app, lines, report, 2, progress=False)

    assert [numbers for numbers, _ in sent] == [[1, 2], [5, 6]]
    assert [line.number for line in later] == [3, 4, 7, 8]
    assert report.sent == 4


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from([None, "k1", "k2"])), max_size=30),
    st.integers(1, 5),
)
def test_no_two_chunks_of_a_wave_share_a_claim_and_file_order_is_kept(names, size) -> None:  # type: ignore[no-untyped-def]
    """Property: within a wave, a claim belongs to one chunk only; every line is sent in
    exactly one wave; a line never goes before an earlier line it shares a claim with."""
    pending = [_line(i, n, k) for i, (n, k) in enumerate(names, start=1)]
    wave_of: dict[int, int] = {}
    wave = 0
    while pending:
        app = _App()
        sent, later = _send_wave(app, pending, Report(), size, progress=False)
        owner: dict[Any, int] = {}
        for chunk, body in enumerate(app.bodies):
            for number, payload in body:
                wave_of[number] = wave
                for claim in claimed_identities(payload):
                    assert owner.setdefault(claim, chunk) == chunk
        assert sent or not later
        pending, wave = later, wave + 1
    assert sorted(wave_of) == list(range(1, len(names) + 1))
    for i, (n, k) in enumerate(names, start=1):
        for j in range(1, i):
            m, key = names[j - 1]
            if m == n or (k is not None and key == k):
                assert wave_of[j] <= wave_of[i]
