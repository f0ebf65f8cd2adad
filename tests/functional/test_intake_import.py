"""`billing customers import` end to end (real Redis, real worker processes, real
PostgreSQL): the same file gives the same results file and the same stored rows as
`billing customers enqueue --wait`, line by line."""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from models import Customer
from models.catalog_file import parse_catalog
from tasks.catalog import load_catalog
from tests.factories import intake_payload
from tests.intake_compare import mixed_file, stored_rows, without_ids
from tests.support import truncate_all
from worker.cli import main
from worker.db import unit_of_work

pytestmark = pytest.mark.functional

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load_catalog() -> None:
    with unit_of_work() as session:
        load_catalog(session, parse_catalog((EXAMPLES / "catalog.yaml").read_text()))


@pytest.fixture
def catalog(clean_db, worker):  # type: ignore[no-untyped-def]
    _load_catalog()
    return clean_db


def _run(args: list[str], results: Path) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Run a command; its outcome, its results file without ids, the stored rows."""
    outcome = CliRunner().invoke(main, [*args, "--results", str(results)])
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    with unit_of_work() as session:
        return outcome, without_ids(session, lines), stored_rows(session, clock_free=True)


def _file(tmp_path: Path) -> Path:
    """The example file, then lines of every kind with duplicates, replays and bad JSON."""
    source = tmp_path / "customers.jsonl"
    body = (EXAMPLES / "customers.jsonl").read_text().splitlines()
    body += [json.dumps(p) for p in mixed_file(300, seed=14)]
    body += ["{not json", json.dumps(intake_payload(name="Last Co", idempotency_key="last"))]
    source.write_text("\n".join(body) + "\n")
    return source


@contextmanager
def _one_job_at_a_time(worker, folder: Path):  # type: ignore[no-untyped-def]
    """Intake jobs run strictly in queue order: the session worker (two processes) stops
    consuming the intake queue while one single-process worker does."""
    from tests.support import WorkerProcess
    from worker.celery_app import app

    app.control.cancel_consumer("intake", destination=[worker.nodename], reply=True)
    single = WorkerProcess(app, folder, name="inorder", queues=["intake"], concurrency=1)
    single.start()
    try:
        yield
    finally:
        single.stop()
        app.control.add_consumer("intake", destination=[worker.nodename], reply=True)


def test_import_gives_the_results_and_rows_of_enqueue_wait(
    catalog, engine, worker, tmp_path
) -> None:
    """Same file one by one in file order (one job at a time), then in chunks on two worker
    processes, each run twice (the rerun is idempotent): identical per-line results
    (statuses, problems, names), summary and stored rows."""
    source = _file(tmp_path)
    runs = {}
    for command in (["enqueue", "--wait"], ["import", "--chunk-size", "40"]):
        truncate_all(engine)
        _load_catalog()
        with _one_job_at_a_time(worker, tmp_path) if command[0] == "enqueue" else nullcontext():
            first = _run(["customers", *command, str(source)], tmp_path / "first.jsonl")
            second = _run(["customers", *command, str(source)], tmp_path / "second.jsonl")
        runs[command[0]] = (first, second)

    for (outcome, lines, rows), (again, lines_again, rows_again) in zip(
        runs["enqueue"], runs["import"], strict=True
    ):
        assert again.exit_code == outcome.exit_code == 1
        assert again.stdout == outcome.stdout
        assert lines_again == lines
        assert rows_again == rows
    (_, first_lines, first_rows), (_, second_lines, second_rows) = runs["import"]
    statuses = [line["status"] for line in first_lines]
    assert {"created", "rejected", "malformed"} <= set(statuses)
    assert any(line.get("replayed") for line in first_lines)
    codes = {e["code"] for line in first_lines for e in line.get("errors", ())}
    assert {"name_taken", "idempotency_key_reused", "invalid_json", "not_found"} <= codes
    assert second_rows == first_rows  # the rerun stored nothing
    assert "created" not in {line["status"] for line in second_lines if not line.get("replayed")}


def test_import_reads_csv_and_stdin_and_reports_like_enqueue(catalog, tmp_path) -> None:
    """CSV with custom_data columns, and `-` for standard input."""
    runner = CliRunner()

    from_csv = runner.invoke(main, ["customers", "import", str(EXAMPLES / "customers.csv")])
    jsonl = (EXAMPLES / "customers.jsonl").read_bytes()
    from_stdin = runner.invoke(main, ["customers", "import", "-"], input=jsonl)

    assert from_csv.exit_code == 1, from_csv.output
    assert "created: 2, duplicate: 0, rejected: 1" in from_csv.stdout
    assert "line 4: rejected" in from_csv.stdout
    assert from_stdin.exit_code == 1, from_stdin.output
    assert "created: 9, duplicate: 0, rejected: 2, malformed: 1" in from_stdin.stdout
    assert "line 12: not valid JSON" in from_stdin.stderr
    assert "sent 11 line(s) in 1 chunk(s); 1 malformed line(s) skipped" in from_stdin.stderr
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 11


def test_import_exits_zero_when_every_line_is_created_or_a_duplicate(catalog, tmp_path) -> None:
    source = tmp_path / "good.jsonl"
    source.write_text(
        "\n".join(
            json.dumps(intake_payload(name=f"Good {i}", idempotency_key=f"g{i % 5}"))
            for i in range(5)
        )
        + "\n"
    )
    runner = CliRunner()

    first = runner.invoke(main, ["customers", "import", str(source), "--chunk-size", "2"])
    again = runner.invoke(main, ["customers", "import", str(source)])

    assert first.exit_code == 0, first.output
    assert "created: 5, duplicate: 0" in first.stdout
    assert again.exit_code == 0, again.output
    assert "created: 0, duplicate: 5" in again.stdout


def test_import_refuses_an_empty_file_and_a_missing_one(catalog, tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    runner = CliRunner()

    nothing = runner.invoke(main, ["customers", "import", str(empty)])
    missing = runner.invoke(main, ["customers", "import", str(tmp_path / "nope.jsonl")])

    assert nothing.exit_code == 1
    assert "has no lines" in nothing.output
    assert missing.exit_code == 2
    assert "is not a file" in missing.output
