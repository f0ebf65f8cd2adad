"""Reading command input (worker/cli/_common.py): JSON Lines and CSV, every bad line
reported by number, a wholly unusable file said once."""

from __future__ import annotations

import io

import pytest

from worker.cli._common import InputError, Line, read_lines


def _read(data: bytes | str, fmt: str = "jsonl", *, guessed: bool = False) -> list[Line]:
    raw = data.encode() if isinstance(data, str) else data
    return list(read_lines(io.BytesIO(raw), fmt, guessed=guessed))


def _good(lines: list[Line]) -> list[tuple[int, object]]:
    return [(line.number, line.payload) for line in lines if line.payload is not None]


def _bad(lines: list[Line]) -> list[tuple[int, str, str]]:
    return [
        (line.number, line.problem.code, line.problem.message)
        for line in lines
        if line.problem is not None
    ]


def test_jsonl_lines_are_numbered_and_malformed_ones_reported() -> None:
    """Blank lines are skipped; bad JSON and non-objects are reported with their line number."""
    lines = _read('{"name": "A"}\n\n{"name": \n[1, 2]\n"text"\n{"name": "B"}\n')

    assert _good(lines) == [(1, {"name": "A"}), (6, {"name": "B"})]
    assert _bad(lines) == [
        (3, "invalid_json", "not valid JSON (Expecting value at column 10)"),
        (4, "not_an_object", "not a JSON object (got list)"),
        (5, "not_an_object", "not a JSON object (got str)"),
    ]


def test_a_line_that_is_not_utf8_is_one_malformed_line_and_the_rest_are_read() -> None:
    """A Latin-1 byte on line 2 makes line 2 malformed (`not UTF-8`), never the whole file."""
    data = b'{"name": "A"}\n{"name": "Caf' + b"\xe9" + b'"}\n{"name": "B"}\n'

    lines = _read(data)

    assert _good(lines) == [(1, {"name": "A"}), (3, {"name": "B"})]
    assert [(n, code) for n, code, _ in _bad(lines)] == [(2, "not_utf8")]
    assert _bad(lines)[0][2].startswith("not UTF-8 (byte 0xe9 at column 14)")


def test_a_non_utf8_csv_cell_is_a_malformed_line() -> None:
    """The CSV reader reports an undecodable data line by its number and goes on."""
    lines = _read(b"name,currency\nA,USD\nB\xff,USD\nC,EUR\n", "csv")

    assert _good(lines) == [
        (2, {"name": "A", "currency": "USD"}),
        (4, {"name": "C", "currency": "EUR"}),
    ]
    assert [(n, code) for n, code, _ in _bad(lines)] == [(3, "not_utf8")]


def test_duplicate_json_keys_are_refused() -> None:
    """`{"name": "A", "name": "B"}` is malformed, not silently the last value."""
    lines = _read('{"name": "A", "name": "B"}\n{"x": {"k": 1, "k": 2}}\n')

    assert [(n, code) for n, code, _ in _bad(lines)] == [(1, "duplicate_key"), (2, "duplicate_key")]
    assert "'name' appears twice" in _bad(lines)[0][2]


def test_csv_given_to_the_json_reader_gets_one_hint_when_the_format_was_guessed() -> None:
    """A CSV piped without --format stops at its header with a hint, not one error a line."""
    with pytest.raises(InputError, match=r"looks like a CSV header.*--format csv"):
        _read("name,currency\nA,USD\n", guessed=True)


def test_csv_given_to_the_json_reader_explicitly_is_reported_per_line() -> None:
    """With --format jsonl given, the lines are simply not JSON."""
    lines = _read("name,currency\nA,USD\n")

    assert [code for _, code, _ in _bad(lines)] == ["invalid_json", "invalid_json"]


def test_a_semicolon_separated_file_is_one_clear_error() -> None:
    """A header that is one column of `a;b;c` says the separator is wrong, once."""
    with pytest.raises(InputError, match="separated by semicolons"):
        _read("name;currency;reseller\nA;USD;acme\n", "csv")


def test_an_unterminated_quote_is_reported_on_the_line_where_it_starts() -> None:
    """The line with the unbalanced quote is malformed; the lines after it are still read."""
    lines = _read('name,currency\n"Globex,USD\nInitech,USD\n', "csv")

    assert _good(lines) == [(3, {"name": "Initech", "currency": "USD"})]
    assert [(n, code) for n, code, _ in _bad(lines)] == [(2, "unterminated_quote")]


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        ("", "jsonl", "has no lines"),
        ("\n\n  \n", "jsonl", "has no lines"),
        ("", "csv", "is empty"),
        ("name,currency\n", "csv", "header row but no data lines"),
        ("name,currency\n\n,\n", "csv", "header row but no data lines"),
    ],
)
def test_empty_and_header_only_files_are_refused(data: str, fmt: str, message: str) -> None:
    """Nothing to send is an error that says so, not a silent success."""
    with pytest.raises(InputError, match=message):
        _read(data, fmt)


def test_csv_columns_become_keys_and_custom_data_fields() -> None:
    """Header cells are keys, custom_data.<field> nests, empty cells are absent."""
    text = (
        "\ufeffname,currency,credit_limit,custom_data.tax_code,custom_data.seats\n"
        "Globex,USD,500.00,X1,\n"
        "Initech,USD,,,4\n"
        ",,,,\n"
        "Too,Many,Cells,Here,4,5\n"
    )

    lines = _read(text, "csv")

    assert _good(lines) == [
        (
            2,
            {
                "name": "Globex",
                "currency": "USD",
                "credit_limit": "500.00",
                "custom_data": {"tax_code": "X1"},
            },
        ),
        (3, {"name": "Initech", "currency": "USD", "custom_data": {"seats": "4"}}),
    ]
    assert _bad(lines) == [(5, "too_many_cells", "6 cells but only 5 columns")]


def test_a_malformed_line_never_carries_the_previous_payload() -> None:
    """A bad line after a good one yields only an error, never the good payload again."""
    lines = _read('{"name": "A"}\n{oops\n')

    assert [(line.number, line.payload, line.problem is not None) for line in lines] == [
        (1, {"name": "A"}, False),
        (2, None, True),
    ]
