"""Beat survives losing its redbeat lock: a real beat process on a Redis of its own, which
the test flushes (FLUSHALL) and then restarts without persistence."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import spawn_logged, wait_for
from worker.commands import beat_arguments, compose_command

pytestmark = pytest.mark.functional

SENT = "Sending due task close-due-periods"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server with no persistence, on a port of its own: FLUSHALL and restarts
    here touch nobody else's data."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10, what="private redis up")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


def test_beat_takes_its_lock_again_after_flushall_and_a_redis_restart(
    private_redis, tmp_path
) -> None:
    """After FLUSHALL (lock and schedule gone) and again after Redis restarts empty, the
    same beat process takes the lock back, restores its schedule and keeps sending."""
    env = {
        **os.environ,
        "BILLING_BROKER_URL": private_redis.url,
        "BILLING_RESULT_BACKEND": private_redis.url,
        "BILLING_REDIS_KEY_PREFIX": "beat-lock:",
        "BILLING_BEAT_MAX_INTERVAL": "1",
        "BILLING_BEAT_LOCK_TIMEOUT": "3",
        "BILLING_CLOSE_INTERVAL": "1",
        "BILLING_RECONCILE_INTERVAL": "3600",
    }
    log_path = tmp_path / "beat.log"
    beat = spawn_logged(
        [sys.executable, "-m", *compose_command(beat_arguments())], log_path=log_path, env=env
    )

    def log() -> str:
        return log_path.read_text(errors="replace")

    def sends_after(count: int) -> bool:
        if beat.poll() is not None:
            raise AssertionError(f"beat exited with {beat.returncode}:\n{log()[-4000:]}")
        return log().count(SENT) > count

    try:
        wait_for(lambda: sends_after(0), timeout=60, what="beat sends")
        private_redis.client().flushall()
        flushed_at = log().count(SENT)
        wait_for(lambda: sends_after(flushed_at), timeout=30, what="beat sends after FLUSHALL")
        assert "lost the redbeat lock" in log()
        assert private_redis.client().exists("beat-lock:redbeat:lock")

        private_redis.stop()
        private_redis.start()
        restarted_at = log().count(SENT)
        wait_for(lambda: sends_after(restarted_at), timeout=30, what="beat sends after restart")
        assert private_redis.client().exists("beat-lock:redbeat:lock")
        assert beat.poll() is None
    finally:
        if beat.poll() is None:
            os.killpg(beat.pid, signal.SIGKILL)
        beat.wait(timeout=30)
