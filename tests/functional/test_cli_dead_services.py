"""Commands run as a user runs them (a `billing` process), with a bad setting or a service
that cannot be reached: one or two lines saying what and where, exit status 1, never a
traceback, and within a few seconds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

pytestmark = pytest.mark.functional

BILLING = str(Path(sys.executable).with_name("billing"))
# Emptied, these settings select the embedded default (SQLite and a file-system broker).
EMBEDDED = ("BILLING_DATABASE_URL", "BILLING_BROKER_URL", "BILLING_RESULT_BACKEND")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def billing(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT, stdin: str = ""
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [BILLING, *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - started


def assert_short_failure(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def test_help_works_whatever_the_settings_say() -> None:
    """`billing --help` never reads the settings, so a bad one cannot break it."""
    done, _ = billing("--help", env={"BILLING_CLOSE_BATCH": "abc"})

    assert done.returncode == 0, done.stderr
    assert "Usage: billing" in done.stdout


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("BILLING_CLOSE_BATCH", "abc", "BILLING_CLOSE_BATCH must be a whole number, got 'abc'"),
        ("BILLING_CLOCK_SKEW", "-5", "BILLING_CLOCK_SKEW must be at least 0"),
        ("BILLING_DATABASE_URL", "postgres://", "BILLING_DATABASE_URL"),
        ("BILLING_DATABASE_URL", "mysql+nosuchdriver://x/y", "BILLING_DATABASE_URL"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(variable, value, needle) -> None:
    """A command run with an unusable setting says which variable and why, exit 1."""
    done, _ = billing("customers", "list", env={variable: value})

    assert_short_failure(done, needle)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/x", "Connection refused"),
        (
            f"postgresql+psycopg://postgres@127.0.0.1:5432/missing_{uuid.uuid4().hex[:8]}",
            "does not exist",
        ),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["customers", "list"],
        ["invoices", "list"],
        ["periods", "list"],
        ["close"],
        ["balances", "check"],
        ["db", "upgrade"],
    ],
)
def test_an_unreachable_database_is_two_lines_in_every_command(url, needle, command) -> None:
    """Refused connections and missing databases say what could not be reached and what to
    check, in every command that needs the database."""
    done, _ = billing(*command, env={"BILLING_DATABASE_URL": url})

    assert_short_failure(done, "could not reach the database", needle, "BILLING_DATABASE_URL")


def test_a_data_folder_that_does_not_exist_is_shown_as_an_absolute_path(tmp_path) -> None:
    """A relative BILLING_DATA_DIR used from another folder names the absolute folder."""
    env = dict.fromkeys(EMBEDDED, "")
    done, _ = billing(
        "invoices", "list", env=env | {"BILLING_DATA_DIR": "no/such/folder"}, cwd=tmp_path
    )

    assert_short_failure(done, str(tmp_path / "no/such/folder"), "BILLING_DATA_DIR")


def test_a_database_without_the_schema_says_to_migrate(tmp_path) -> None:
    """An empty embedded database points at `billing db upgrade`."""
    env = dict.fromkeys(EMBEDDED, "")
    (tmp_path / "billing.sqlite3").touch()
    done, _ = billing("customers", "list", env=env | {"BILLING_DATA_DIR": str(tmp_path)})

    assert_short_failure(done, "billing db upgrade")


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        (["customers", "enqueue", "-"], '{"name": "X"}\n'),
        (["customers", "enqueue", "-", "--wait"], '{"name": "X"}\n'),
        (["charges", "load", "-", "--wait"], '{"customer": "X"}\n'),
        (["invoices", "generate", "1"], ""),
    ],
)
def test_an_unreachable_broker_fails_within_seconds_with_one_line(
    database_url, command, stdin
) -> None:
    """A broker nobody listens on is reported in a few seconds, naming what to check."""
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    env = {"BILLING_BROKER_URL": dead, "BILLING_RESULT_BACKEND": dead}

    done, took = billing(*command, env=env, stdin=stdin)

    assert_short_failure(done, "could not reach the broker", dead, "BILLING_BROKER_URL")
    assert took < 10


def test_enqueue_wait_says_when_nothing_consumes_the_queue(database_url, redis_client) -> None:
    """With no worker on the queue, --wait says so within seconds; the job stays queued."""
    prefix = f"billing-test-noworker-{uuid.uuid4().hex[:8]}:"
    line = json.dumps({"name": "Nobody Listens"}) + "\n"

    done, took = billing(
        "customers", "enqueue", "-", "--wait", env={"BILLING_REDIS_KEY_PREFIX": prefix}, stdin=line
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "nothing is consuming the 'intake' queue" in done.stderr
    assert "stay queued" in done.stderr
    assert "queued: 1" in done.stdout
    assert took < 30
    assert redis_client.llen(f"{prefix}intake") == 1  # type: ignore[attr-defined]
    for key in redis_client.scan_iter(match=f"{prefix}*"):  # type: ignore[attr-defined]
        redis_client.delete(key)  # type: ignore[attr-defined]


def test_redis_dying_under_enqueue_wait_reports_what_is_known(clean_db, tmp_path) -> None:
    """Redis killed while `customers enqueue --wait` collects: no traceback, a summary of
    what finished, and the lines to send again; sending them again creates no duplicate."""
    import dataclasses

    from sqlalchemy import func, select

    from models import Customer
    from models.catalog_file import parse_catalog
    from tasks.catalog import load_catalog
    from tests.factories import intake_payload
    from tests.support import WorkerProcess, spawn_logged, wait_for
    from worker.celery_app import create_app
    from worker.config import settings
    from worker.db import unit_of_work

    with unit_of_work() as session:
        load_catalog(session, parse_catalog((REPO_ROOT / "examples/catalog.yaml").read_text()))
    port = _free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis_server = spawn_logged(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        log_path=tmp_path / "redis.log",
        env=dict(os.environ),
    )
    env = {"BILLING_BROKER_URL": redis_url, "BILLING_RESULT_BACKEND": redis_url}
    app = create_app(
        dataclasses.replace(settings(), broker_url=redis_url, result_backend=redis_url)
    )
    worker = WorkerProcess(app, tmp_path, name="doomed", queues=["intake"], concurrency=1, env=env)
    source = tmp_path / "many.jsonl"
    source.write_text(
        "".join(json.dumps(intake_payload(name=f"Doomed {n:04}")) + "\n" for n in range(400))
    )

    def stored() -> int:
        with unit_of_work() as session:
            return int(session.scalar(select(func.count()).select_from(Customer)) or 0)

    try:
        wait_for(lambda: _answers(port), timeout=20, what="redis-server")
        worker.start()
        enqueue = subprocess.Popen(
            [BILLING, "customers", "enqueue", str(source), "--wait", "--no-progress"],
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: stored() >= 20, timeout=60, what="some customers created")
        redis_server.kill()
        redis_server.wait()
        out, err = enqueue.communicate(timeout=60)
        created_before = stored()
        redis_server = spawn_logged(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            log_path=tmp_path / "redis.log",
            env=dict(os.environ),
        )
        wait_for(lambda: _answers(port), timeout=20, what="redis-server again")
        again, _ = billing("customers", "enqueue", str(source), "--wait", env=env)
    finally:
        redis_server.kill()
        redis_server.wait()
        worker.kill()

    assert enqueue.returncode == 1, out + err
    assert "Traceback" not in err, err
    assert " was lost " in err, err
    assert "lines without an outcome (send them again):" in err
    assert "unknown:" in out
    # Sending the same file again converges: every customer exactly once.
    assert created_before < 400
    assert stored() == 400, again.stdout + again.stderr


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_an_unwritable_results_path_is_refused_before_anything_is_sent(
    database_url, redis_client, tmp_path
) -> None:
    """`--results /nonexistent/dir/r.jsonl` fails at once; no job reaches the queue."""
    prefix = f"billing-test-results-{uuid.uuid4().hex[:8]}:"
    target = tmp_path / "no" / "such" / "r.jsonl"

    done, _ = billing(
        "customers",
        "enqueue",
        "-",
        "--wait",
        "--results",
        str(target),
        env={"BILLING_REDIS_KEY_PREFIX": prefix},
        stdin=json.dumps({"name": "Never Sent"}) + "\n",
    )

    assert_short_failure(done, f"cannot write {target}")
    assert "enqueued" not in done.stderr
    assert redis_client.llen(f"{prefix}intake") == 0  # type: ignore[attr-defined]


def test_invoice_documents_paths_are_checked_before_the_database(tmp_path) -> None:
    """`invoices show N --html /nonexistent/x.html` names the folder, even with no database."""
    target = tmp_path / "missing" / "x.html"

    done, _ = billing(
        "invoices",
        "show",
        "1",
        "--html",
        str(target),
        env={"BILLING_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"},
    )

    assert_short_failure(done, f"the folder {target.parent} does not exist")
