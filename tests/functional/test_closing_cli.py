"""`billing close` and `billing periods list`, against the run's PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from tests.factories import make_customer
from worker.cli import main

pytestmark = pytest.mark.functional


@pytest.fixture
def customers(clean_db) -> None:
    with Session(clean_db) as session:
        make_customer(
            session,
            name="Acme Telecom",
            billing_period="daily",
            billing_timezone="America/Havana",
            created_at=dt.datetime(2026, 3, 6, 17, tzinfo=dt.UTC),
        )
        make_customer(session, name="Other Co", billing_period="monthly")
        session.commit()


def test_close_as_of_closes_synchronously_and_prints_what_it_closed(customers) -> None:
    """`billing close --as-of` closes what ended by that instant and reports it by rule,
    zone and end date; running it again closes nothing."""
    runner = CliRunner()

    # 2026-03-08 05:00 UTC is the start of Mar 8 in Havana (00:00 is skipped that day).
    result = runner.invoke(main, ["close", "--as-of", "2026-03-08T05:00:00Z"])
    again = runner.invoke(main, ["close", "--as-of", "2026-03-08T05:00:00Z", "--json"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # Havana: Mar 6-7 and Mar 7-8; UTC monthly: Jan 15-31 and February.
    assert lines[0].startswith("closed 4 period(s) ended by 2026-03-08T05:00:00Z")
    assert [line.split() for line in lines[1:]] == [
        ["1", "daily", "America/Havana", "ended", "2026-03-07"],
        ["1", "daily", "America/Havana", "ended", "2026-03-08"],
        ["1", "monthly", "UTC", "ended", "2026-02-01"],
        ["1", "monthly", "UTC", "ended", "2026-03-01"],
    ]
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["closed"] == 0


def test_close_rejects_an_instant_without_an_offset(customers) -> None:
    """A bare local time is refused with a usage error, and nothing is closed."""
    result = CliRunner().invoke(main, ["close", "--as-of", "2026-03-08T05:00:00"])
    listed = CliRunner().invoke(main, ["periods", "list", "--json"])

    assert result.exit_code == 2
    assert "offset" in result.output
    assert json.loads(listed.output) == []


def test_periods_list_shows_one_customers_closed_periods_as_json(customers) -> None:
    """`billing periods list --customer NAME --json` lists that customer's closed periods,
    most recent first, whatever the case of the name."""
    runner = CliRunner()
    runner.invoke(main, ["close", "--as-of", "2026-03-09T05:00:00Z"])

    result = runner.invoke(main, ["periods", "list", "--customer", "acme telecom", "--json"])

    assert result.exit_code == 0, result.output
    periods = json.loads(result.output)
    assert [(p["start_date"], p["end_date"]) for p in periods] == [
        ("2026-03-08", "2026-03-09"),
        ("2026-03-07", "2026-03-08"),
        ("2026-03-06", "2026-03-07"),
    ]
    assert {p["customer"] for p in periods} == {"Acme Telecom"}
    assert periods[1]["period_end"] == "2026-03-08T05:00:00Z"
    assert periods[0]["invoiced"] is False
    assert periods[0]["invoice_enqueued_at"] == "2026-03-09T05:00:00Z"


def test_periods_list_for_an_unknown_customer_is_a_usage_error(customers) -> None:
    """Naming a customer that does not exist says so instead of printing an empty list."""
    result = CliRunner().invoke(main, ["periods", "list", "--customer", "Nobody"])

    assert result.exit_code == 1
    assert "has no customer named 'Nobody'" in result.output


def test_close_refuses_an_instant_later_than_now_plus_the_clock_skew(customers) -> None:
    """`billing close --as-of` a month ahead is a usage error naming the skew; nothing closes."""
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()

    result = CliRunner().invoke(main, ["close", "--as-of", ahead])
    listed = CliRunner().invoke(main, ["periods", "list", "--json"])

    assert result.exit_code == 2
    assert "is in the future" in result.output
    assert "BILLING_CLOCK_SKEW" in result.output
    assert "nothing was closed" in result.output
    assert json.loads(listed.output) == []


def test_close_accepts_an_instant_within_the_clock_skew(customers) -> None:
    """An --as-of a minute ahead (inside the default 120 s) is taken as given."""
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)).isoformat()

    result = CliRunner().invoke(main, ["close", "--as-of", ahead, "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["closed"] >= 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["periods", "list", "--limit", "-1"],
        ["periods", "list", "--limit", "0"],
        ["periods", "list", "--limit", str(2**64)],
        ["invoices", "list", "--limit", "-1"],
        ["invoices", "list", "--limit", str(2**64)],
        ["invoices", "show", "--", "-5"],
        ["invoices", "show", str(2**64)],
        ["invoices", "generate", "0"],
        ["invoices", "generate", "1", "--timeout", "nan"],
        ["customers", "enqueue", "-", "--wait", "--timeout", "-3"],
        ["charges", "load", "-", "--wait", "--timeout", "inf"],
    ],
)
def test_every_numeric_option_is_validated_before_anything_runs(clean_db, arguments) -> None:
    """A negative, zero, non-finite or beyond-64-bit number is a usage error, not a traceback."""
    result = CliRunner().invoke(main, arguments, input="")

    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output
    assert "Traceback" not in result.output


def test_close_reports_a_customer_far_behind_in_one_line_per_rule_and_zone(clean_db) -> None:
    """A daily customer created in 1970 is caught up by one `billing close`: its 20,605
    end dates are one line (first and last end date), not 20,605 lines."""
    with Session(clean_db) as session:
        make_customer(
            session,
            name="Legacy Co",
            billing_period="daily",
            billing_timezone="Europe/Lisbon",
            created_at=dt.datetime(1970, 1, 1, 12, tzinfo=dt.UTC),
        )
        session.commit()

    result = CliRunner().invoke(main, ["close", "--as-of", "2026-06-01T12:00:00Z"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("closed 20605 period(s) ended by 2026-06-01T12:00:00Z")
    assert [line.split() for line in lines[1:]] == [
        [
            "20605",
            "daily",
            "Europe/Lisbon",
            "ended",
            "1970-01-02",
            "to",
            "2026-06-01",
            "(20,605",
            "end",
            "dates)",
        ]
    ]
