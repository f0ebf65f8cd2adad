"""`billing run` as a user starts it: a real process tree, real work, then Ctrl-C.

Once on the embedded default (no BILLING_* settings at all, a temporary data folder), once
on PostgreSQL and Redis (a database and a key prefix of its own, so its beat and worker
never touch the rest of the run's data).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ADMIN_DATABASE_URL, REDIS_PREFIX, TEST_DATABASE
from tests.support import REPO_ROOT, create_database, drop_database, wait_for

pytestmark = pytest.mark.functional

BILLING = str(Path(sys.executable).with_name("billing"))
CLOSE_RECEIVED = re.compile(
    r"Task billing\.periods\.close_due\[[0-9a-f-]+\] received"
    r"|unregistered task of type 'billing\.periods\.close_due'"
)


class BillingRun:
    """`billing run` in its own process group, as a terminal would start it."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env = env
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [BILLING, "run", *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

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


def test_billing_run_on_the_embedded_default_works_and_stops_on_ctrl_c(runs, tmp_path) -> None:
    """With nothing configured, it migrates SQLite, runs work and beat, and exits 0 on Ctrl-C."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    # Beat's first close would only come an hour after start; reconcile every second.
    env.update(
        BILLING_DATA_DIR=str(data_dir),
        BILLING_CLOSE_INTERVAL="3600",
        BILLING_RECONCILE_INTERVAL="1",
    )
    run = BillingRun(env, tmp_path / "run.log")
    runs.append(run)
    run.wait_until_ready()

    banner = run.log()
    assert f"data folder : {data_dir}" in banner
    assert f"database    : sqlite:///{data_dir / 'billing.sqlite3'} (embedded default)" in banner
    assert f"broker      : file-system broker in {data_dir / 'broker'}" in banner
    assert f"schedule in {data_dir / 'celerybeat-schedule'}" in banner
    assert "Ctrl-C" in banner
    assert (data_dir / "billing.sqlite3").exists()

    assert ping_through(env, "embedded") == {"status": "pong", "payload": "embedded"}
    wait_for(
        lambda: "Sending due task reconcile" in run.log(),
        timeout=30,
        what="beat sends the reconcile",
    )
    # The period close reached the worker at start, not an interval later.
    wait_for(
        lambda: CLOSE_RECEIVED.search(run.log()),
        timeout=30,
        what="the worker receives the period close sent at start",
    )
    assert "Sending due task close-due-periods" not in run.log()

    second = subprocess.run(
        [BILLING, "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert second.returncode != 0
    assert f"{data_dir} is in use by another `billing run`" in second.stderr

    assert_stops_cleanly(run)


def test_billing_run_on_postgresql_and_redis_uses_the_redis_lock_beat(
    runs, redis_client, tmp_path
) -> None:
    """With PostgreSQL and Redis set, it beats under the redbeat lock and stops on SIGTERM."""
    database = f"{TEST_DATABASE}_run"
    create_database(ADMIN_DATABASE_URL, database)
    try:
        prefix = f"{REDIS_PREFIX}run-{uuid.uuid4().hex[:6]}:"
        url = make_url(ADMIN_DATABASE_URL).set(database=database)
        env = {
            **os.environ,
            "BILLING_DATABASE_URL": url.render_as_string(hide_password=False),
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
        wait_for(
            lambda: "Sending due task close-due-periods" in run.log(),
            timeout=30,
            what="beat sends the period close",
        )

        assert_stops_cleanly(run, how="sigterm")
        # A clean stop hands the lock back at once rather than waiting for it to expire.
        assert not redis_client.exists(f"{prefix}redbeat:lock")
    finally:
        drop_database(ADMIN_DATABASE_URL, database)


def test_billing_run_stops_everything_and_fails_when_its_worker_dies(runs, tmp_path) -> None:
    """If the worker dies, beat is stopped too and billing run exits non-zero, not half-alive."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env["BILLING_DATA_DIR"] = str(tmp_path / "data")
    run = BillingRun(env, tmp_path / "run.log")
    runs.append(run)
    run.wait_until_ready()
    children = run.process_children()
    # [python, -m, celery, -A, worker, <worker|beat>, ...]
    worker = next(p for p in children if p.cmdline()[5] == "worker")

    os.killpg(worker.pid, signal.SIGKILL)

    assert run.process.wait(timeout=60) == 1
    assert "worker exited with code" in run.log()
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
