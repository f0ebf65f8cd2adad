"""One beat at a time: two real `celery beat` processes with redbeat's Redis lock.

They run with the same arguments as docker-compose's beat service, under a key prefix of
their own (so no worker of the run consumes what they send), with a short lock timeout.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_PREFIX
from tests.support import spawn_logged, wait_for
from worker.commands import beat_arguments, compose_command

pytestmark = pytest.mark.functional

MAX_INTERVAL = 1
LOCK_TIMEOUT = 3
SENT = "Sending due task close-due-periods"


class Beat:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        self.process = spawn_logged(
            [sys.executable, "-m", *compose_command(beat_arguments())],
            log_path=self.log_path,
            env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sent(self) -> int:
        return self.log().count(SENT)

    def holds_lock(self) -> bool:
        return "beat: Acquired lock" in self.log()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def beats(redis_client, tmp_path) -> Iterator[tuple[list[Beat], str, dict[str, str]]]:
    prefix = f"{REDIS_PREFIX}beat-{uuid.uuid4().hex[:6]}:"
    env = {
        **os.environ,
        "BILLING_REDIS_KEY_PREFIX": prefix,
        "BILLING_BEAT_MAX_INTERVAL": str(MAX_INTERVAL),
        "BILLING_BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
        "BILLING_CLOSE_INTERVAL": "1",
        "BILLING_RECONCILE_INTERVAL": "3600",
    }
    started: list[Beat] = []
    yield started, prefix, env
    for beat in started:
        beat.kill()


def test_only_one_beat_schedules_and_a_standby_takes_over_when_it_dies(
    beats, redis_client, tmp_path
) -> None:
    """The second beat waits on the Redis lock while the first lives, then takes over."""
    started, prefix, env = beats
    first = Beat("first", env, tmp_path)
    started.append(first)
    wait_for(first.holds_lock, timeout=60, what=f"first beat takes the lock:\n{first.log()}")
    lock_key = f"{prefix}redbeat:lock"
    assert redis_client.exists(lock_key)
    assert 0 < redis_client.ttl(lock_key) <= LOCK_TIMEOUT

    second = Beat("second", env, tmp_path)
    started.append(second)
    wait_for(lambda: "is starting" in second.log(), timeout=60, what="second beat started")
    sent_before = first.sent()
    # Several of the first beat's ticks (each extends the lock) while the second polls.
    wait_for(lambda: first.sent() >= sent_before + 3, timeout=30, what="first beat keeps sending")
    assert not second.holds_lock()
    assert second.sent() == 0
    assert second.process.poll() is None

    first.kill()
    killed_at = time.monotonic()
    wait_for(
        second.holds_lock,
        timeout=LOCK_TIMEOUT + MAX_INTERVAL + 30,
        what=f"standby takes over:\n{second.log()}",
    )
    takeover = time.monotonic() - killed_at
    wait_for(lambda: second.sent() >= 1, timeout=30, what="standby sends due tasks")
    # The lock expires LOCK_TIMEOUT s after the holder's last extension; the standby looks
    # every MAX_INTERVAL s. Allow start-up slack for a loaded machine, no more.
    assert takeover <= LOCK_TIMEOUT + MAX_INTERVAL + 5, takeover
