"""Reading enqueue input: JSON Lines and CSV, malformed lines reported by number."""

from __future__ import annotations

import io

from worker.cli.customers import read_csv, read_jsonl


def test_jsonl_lines_are_numbered_and_malformed_ones_reported() -> None:
    """Blank lines are skipped; bad JSON and non-objects are reported with their line number."""
    text = '{"name": "A"}\n\n{"name": \n[1, 2]\n"text"\n{"name": "B"}\n'

    lines = list(read_jsonl(io.StringIO(text)))

    assert [(line.number, line.payload) for line in lines if line.payload] == [
        (1, {"name": "A"}),
        (6, {"name": "B"}),
    ]
    assert [(line.number, line.error) for line in lines if line.error] == [
        (3, "not valid JSON (Expecting value at column 10)"),
        (4, "not a JSON object (got list)"),
        (5, "not a JSON object (got str)"),
    ]


def test_a_malformed_line_never_carries_the_previous_payload() -> None:
    """A bad line after a good one yields only an error, never the good payload again."""
    lines = list(read_jsonl(io.StringIO('{"name": "A"}\n{oops\n')))

    assert [(line.number, line.payload, line.error is not None) for line in lines] == [
        (1, {"name": "A"}, False),
        (2, None, True),
    ]


def test_csv_columns_become_keys_and_custom_data_fields() -> None:
    """Header cells are keys, custom_data.<field> nests, empty cells are absent."""
    text = (
        "name,currency,credit_limit,custom_data.tax_code,custom_data.seats\n"
        "Globex,USD,500.00,X1,\n"
        "Initech,USD,,,4\n"
        ",,,,\n"
        "Too,Many,Cells,Here,4,5\n"
    )

    lines = list(read_csv(io.StringIO(text)))

    assert [(line.number, line.payload) for line in lines if line.payload] == [
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
    assert [(line.number, line.error) for line in lines if line.error] == [
        (5, "6 cells but only 5 columns")
    ]


def test_an_empty_csv_yields_nothing() -> None:
    """A file without even a header has no lines to send."""
    assert list(read_csv(io.StringIO(""))) == []
