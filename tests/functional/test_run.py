"""`billing run` as a user starts it: a real process tree, real work, then Ctrl-C.

Once on the embedded default (no BILLING_* settings at all, a temporary data folder), once
on PostgreSQL and Redis (a database and a key prefix of its own, so its beat and worker
never touch the rest of the run's data). Both close a long-standing example customer's
missed periods and invoice each of them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests.conftest import ADMIN_DATABASE_URL, REDIS_PREFIX, TEST_DATABASE
from tests.support import REPO_ROOT, create_database, drop_database, spawn_logged, wait_for

pytestmark = pytest.mark.functional

BILLING = str(Path(sys.executable).with_name("billing"))


class BillingRun:
    """`billing run` in its own process group, as a terminal would start it."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env = env
        self.log_path = log_path
        self.process = spawn_logged([BILLING, "run", *args], log_path=log_path, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"billing run exited early:\n{self.log()}")
            return " ready." in self.log()

        wait_for(ready, timeout=90, interval=0.2, what="the worker of billing run is ready")

    def process_children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def ctrl_c(self) -> int:
        """What the terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=90)

    def terminate(self) -> int:
        """What `kill`, systemd or a container engine does: SIGTERM to the process."""
        self.process.terminate()
        return self.process.wait(timeout=90)

    def kill(self) -> None:
        if self.process.poll() is None:
            for child in self.descendants():
                child.kill()
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def runs() -> Iterator[list[BillingRun]]:
    started: list[BillingRun] = []
    yield started
    for run in started:
        run.kill()


def ping_through(env: dict[str, str], payload: str) -> dict[str, object]:
    """Send `billing.ping` from another process with the same settings and wait for it."""
    script = (
        "import json; from tasks.health import ping; "
        f"print(json.dumps(ping.delay({payload!r}).get(timeout=60)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_stops_cleanly(run: BillingRun, *, how: str = "ctrl-c") -> None:
    children = run.descendants()
    assert len(children) >= 2  # at least the worker and beat
    code = run.ctrl_c() if how == "ctrl-c" else run.terminate()
    assert code == 0, run.log()
    assert "billing run: stopped (exit code 0)" in run.log()
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running after Ctrl-C: {alive}"


def example_customer(name: str) -> dict[str, Any]:
    """One customer of examples/customers.jsonl (the file also holds malformed lines)."""
    for line in (REPO_ROOT / "examples" / "customers.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("name") == name:
            return dict(record)
    raise AssertionError(f"no {name} in examples/customers.jsonl")


# Created in January 2025: every monthly period since has ended and is closed at once.
LONG_STANDING = "Hooli Legacy"


def billing_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [BILLING, *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"billing {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class Ledger:
    """Closed periods and issued invoices the run wrote, read from its own database."""

    def __init__(self, url: str) -> None:
        from worker.db import make_engine

        self.engine = make_engine(url)

    def counts(self) -> tuple[int, int]:
        with self.engine.connect() as conn:
            closed = conn.execute(text("SELECT count(*) FROM closed_periods")).scalar_one()
            invoices = conn.execute(
                text("SELECT count(*) FROM invoices WHERE status = 'issued'")
            ).scalar_one()
        return int(closed), int(invoices)

    def every_closed_period_invoiced(self) -> tuple[int, int] | None:
        closed, invoices = self.counts()
        return (closed, invoices) if closed > 0 and invoices == closed else None

    def close(self) -> None:
        self.engine.dispose()


def wait_until_closed_and_invoiced(database_url: str, run: Any) -> int:
    """Wait for the run to have closed periods and issued an invoice for each; their count."""
    ledger = Ledger(database_url)
    try:
        closed, _ = wait_for(
            ledger.every_closed_period_invoiced,
            timeout=60,
            interval=0.5,
            what=f"periods closed and invoiced:\n{run.log()[-3000:]}",
        )
    finally:
        ledger.close()
    return int(closed)


def test_billing_run_on_the_embedded_default_closes_and_invoices_then_stops_on_ctrl_c(
    runs, tmp_path
) -> None:
    """With nothing configured it closes what is due at start, invoices it, exits 0 on Ctrl-C."""
    from tasks.intake import create_customer
    from worker.db import make_engine

    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    # Beat's first close would come an hour after start; reconcile every second.
    env.update(
        BILLING_DATA_DIR=str(data_dir),
        BILLING_CLOSE_INTERVAL="3600",
        BILLING_RECONCILE_INTERVAL="1",
    )
    database_url = f"sqlite:///{data_dir / 'billing.sqlite3'}"
    # A customer already in the database, whose periods ended while nothing ran.
    billing_cli(env, "db", "upgrade")
    billing_cli(env, "catalog", "load", "examples/catalog.yaml")
    engine = make_engine(database_url)
    with Session(engine) as session, session.begin():
        outcome = create_customer(
            session, example_customer(LONG_STANDING), now=dt.datetime.now(dt.UTC)
        )
    engine.dispose()
    assert outcome["status"] == "created"

    run = BillingRun(env, tmp_path / "run.log")
    runs.append(run)
    run.wait_until_ready()

    banner = run.log()
    assert f"data folder : {data_dir}" in banner
    assert f"database    : {database_url} (embedded default)" in banner
    assert f"broker      : file-system broker in {data_dir / 'broker'}" in banner
    assert f"schedule in {data_dir / 'celerybeat-schedule'}" in banner
    assert "Ctrl-C" in banner

    closed = wait_until_closed_and_invoiced(database_url, run)
    assert closed >= 20  # January 2025 to now, monthly
    # The close ran at start, not an interval later: beat has not sent one.
    assert "Sending due task close-due-periods" not in run.log()

    assert ping_through(env, "embedded") == {"status": "pong", "payload": "embedded"}
    wait_for(
        lambda: "Sending due task reconcile" in run.log(),
        timeout=30,
        what="beat sends the reconcile",
    )

    second = subprocess.run(
        [BILLING, "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert second.returncode != 0
    assert f"{data_dir} is in use by another `billing run`" in second.stderr

    assert_stops_cleanly(run)


def test_billing_run_on_postgresql_and_redis_migrates_beats_closes_and_stops_on_sigterm(
    runs, redis_client, tmp_path
) -> None:
    """On PostgreSQL and Redis it migrates, beats under the redbeat lock, closes what a new
    customer owes, and stops on SIGTERM handing the lock back."""
    database = f"{TEST_DATABASE}_run"
    create_database(ADMIN_DATABASE_URL, database)
    try:
        prefix = f"{REDIS_PREFIX}run-{uuid.uuid4().hex[:6]}:"
        url = make_url(ADMIN_DATABASE_URL).set(database=database)
        database_url = url.render_as_string(hide_password=False)
        env = {
            **os.environ,
            "BILLING_DATABASE_URL": database_url,
            "BILLING_REDIS_KEY_PREFIX": prefix,
            "BILLING_CLOSE_INTERVAL": "1",
        }
        run = BillingRun(env, tmp_path / "run.log", "--concurrency", "1")
        runs.append(run)
        run.wait_until_ready()

        banner = run.log()
        assert f"database    : {url.render_as_string(hide_password=True)}" in banner
        assert "broker      : redis://" in banner
        assert f"redbeat lock {prefix}redbeat:lock" in banner
        assert "data folder" not in banner
        wait_for(
            lambda: redis_client.exists(f"{prefix}redbeat:lock"),
            timeout=30,
            what="beat takes the redbeat lock",
        )

        assert ping_through(env, "redis") == {"status": "pong", "payload": "redis"}
        billing_cli(env, "catalog", "load", "examples/catalog.yaml")
        enqueued = billing_cli(
            env,
            "customers",
            "enqueue",
            "-",
            "--wait",
            stdin=json.dumps(example_customer(LONG_STANDING)) + "\n",
        )
        assert "created: 1" in enqueued

        closed = wait_until_closed_and_invoiced(database_url, run)
        assert closed >= 20
        assert "Sending due task close-due-periods" in run.log()

        assert_stops_cleanly(run, how="sigterm")
        # A clean stop hands the lock back at once rather than waiting for it to expire.
        assert not redis_client.exists(f"{prefix}redbeat:lock")
    finally:
        drop_database(ADMIN_DATABASE_URL, database)


def test_billing_run_restarts_a_dead_child_and_still_stops_cleanly(runs, tmp_path) -> None:
    """When beat dies (as after a lost lock) and then the worker, each is restarted with
    a message saying so, the other child keeps running, and Ctrl-C still stops all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env["BILLING_DATA_DIR"] = str(tmp_path / "data")
    run = BillingRun(env, tmp_path / "run.log")
    runs.append(run)
    run.wait_until_ready()

    def child(role: str) -> psutil.Process | None:
        """The live child running `celery … <role>` (a dead one not yet reaped is skipped)."""
        for process in run.process_children():
            try:
                # [python, -m, celery, -A, worker, <worker|beat>, ...]
                if process.status() != psutil.STATUS_ZOMBIE and process.cmdline()[5:6] == [role]:
                    return process
            except psutil.Error:
                continue
        return None

    beat, worker = child("beat"), child("worker")
    assert beat is not None
    assert worker is not None
    os.killpg(beat.pid, signal.SIGKILL)
    wait_for(
        lambda: (new := child("beat")) is not None and new.pid != beat.pid,
        timeout=30,
        what=f"beat restarted:\n{run.log()[-2000:]}",
    )
    assert "beat exited with code -9; restarting it in 1 s (restart 1 of 5)" in run.log()
    assert child("worker").pid == worker.pid  # the worker never stopped
    os.killpg(worker.pid, signal.SIGKILL)
    wait_for(
        lambda: (new := child("worker")) is not None and new.pid != worker.pid,
        timeout=30,
        what="worker restarted",
    )
    wait_for(lambda: run.log().count(" ready.") >= 2, timeout=90, what="restarted worker ready")

    assert ping_through(env, "after restarts") == {"status": "pong", "payload": "after restarts"}
    assert_stops_cleanly(run)


def test_billing_run_names_the_service_that_is_down_in_one_line(tmp_path) -> None:
    """With the broker, or the database, unreachable, billing run exits 1 within seconds
    with one line naming the service and the variable to check, and no traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    base["BILLING_DATA_DIR"] = str(tmp_path / "data")
    cases = [
        ({"BILLING_BROKER_URL": "redis://127.0.0.1:1/0"}, "the broker redis://127.0.0.1:1/0"),
        (
            {"BILLING_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"},
            "the database postgresql+psycopg://postgres@127.0.0.1:1/x",
        ),
    ]
    for settings, named in cases:
        done = subprocess.run(
            [BILLING, "run"],
            env={**base, **settings},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert named in done.stderr
        assert "cannot be reached" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
