"""Helpers for tests that need real PostgreSQL, Redis and worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, text

from worker.celery_app import QUEUES
from worker.commands import CELERY, worker_arguments

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def create_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def drop_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def truncate_all(engine: Engine) -> None:
    import models

    tables = ", ".join(f'"{t.name}"' for t in models.Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def spawn_logged(
    command: Sequence[str], *, log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start `command` from the repository root in a session of its own (so a test can
    signal or kill its whole process group), appending its output to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def worker_command(
    name: str, *, queues: Sequence[str] = QUEUES, concurrency: int = 2, pool: str = "prefork"
) -> list[str]:
    """The worker command line: docker-compose's worker arguments (worker/commands.py),
    plus the pool, its size and a node name of the test's own."""
    return [
        sys.executable,
        "-m",
        *CELERY,
        *worker_arguments(queues=queues),
        "-c",
        str(concurrency),
        "-P",
        pool,
        "-n",
        name,
    ]


class WorkerProcess:
    """A real `celery worker` process started from this test run's environment."""

    def __init__(
        self,
        app: Any,
        log_dir: Path,
        *,
        name: str,
        queues: Sequence[str] = QUEUES,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.nodename = f"{name}-{os.getpid()}@{socket.gethostname()}"
        self.log_path = log_dir / f"{name}.log"
        self.command = worker_command(self.nodename, queues=queues, concurrency=concurrency)
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60.0) -> None:
        self.process = spawn_logged(self.command, log_path=self.log_path, env=self.env)
        try:
            wait_for(self._answers_ping, timeout=timeout, interval=0.5, what="worker ready")
        except AssertionError:
            self.kill()
            raise AssertionError(f"worker did not start; log:\n{self.log_tail()}") from None

    def _answers_ping(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited early; log:\n{self.log_tail()}")
        replies = self.app.control.ping(destination=[self.nodename], timeout=0.5)
        return bool(replies)

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: finish running tasks, then exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
