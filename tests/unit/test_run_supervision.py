"""`billing run`'s supervision of its children, with real short-lived child processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from worker.cli.run import _Children

DIES = [sys.executable, "-c", "import sys; sys.exit(3)"]
LIVES = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_child_that_keeps_dying_is_restarted_a_bounded_number_of_times(capsys) -> None:
    """Each death is announced and the child restarted after its backoff; one death more
    than the restarts allowed stops the other child and exits 1."""
    children = _Children(restart_delays=(0.05, 0.1, 0.2), stable_after=60)
    children.start("worker", LIVES)
    children.start("beat", DIES)
    worker = children.processes["worker"]

    code = children.supervise()

    err = capsys.readouterr().err
    assert code == 1
    assert err.count("beat exited with code 3; restarting it in") == 3
    assert "restart 3 of 3" in err
    assert "beat exited with code 3 4 times in a row" in err
    assert worker.poll() is not None  # stopped, not left behind


def test_a_child_that_ran_long_enough_starts_its_restart_count_again(capsys) -> None:
    """A death after the child was stable is a first death again, not one more in a row."""
    children = _Children(restart_delays=(0.05,), stable_after=0.0)
    children.start("beat", DIES)
    stopper = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    stopper.start()
    started = time.monotonic()

    code = children.supervise()

    stopper.cancel()
    err = capsys.readouterr().err
    assert code == 0  # stopped by SIGTERM, never gave up
    assert err.count("restart 1 of 1") >= 3
    assert time.monotonic() - started < 10


def test_a_stop_signal_during_a_backoff_stops_at_once(capsys) -> None:
    """SIGTERM while waiting to restart a child stops the run cleanly (exit 0)."""
    children = _Children(restart_delays=(30.0,), stable_after=60)
    children.start("beat", DIES)
    threading.Timer(0.8, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()

    code = children.supervise()

    assert code == 0
    assert time.monotonic() - started < 5
    assert "restarting it in 30 s" in capsys.readouterr().err
