"""The command lines of the worker, beat and Flower, written down once.

`docker-compose.yml` names these commands literally (it cannot import Python); the tests
start processes with the same arguments and check that the compose file says the same, so
what CI exercises is what production runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.beat import REDBEAT_SCHEDULER
from worker.celery_app import QUEUES

# How the image (and an installed package) starts Celery on this project's app.
CELERY = ("celery", "-A", "worker")

FLOWER_PORT = 5555


def worker_arguments(*, queues: Sequence[str] = QUEUES, loglevel: str = "INFO") -> list[str]:
    """A worker on every queue, sending task events (Flower) and no worker-to-worker chatter."""
    return [
        "worker",
        f"--loglevel={loglevel}",
        "-E",
        "-Q",
        ",".join(queues),
        # Mingle and gossip broadcast between all workers at start-up and all the time;
        # nothing here needs them, and they grow with the number of workers.
        "--without-mingle",
        "--without-gossip",
    ]


def beat_arguments(*, scheduler: str = REDBEAT_SCHEDULER, loglevel: str = "INFO") -> list[str]:
    """Beat with the lock-protected scheduler (redbeat) unless told otherwise."""
    return ["beat", "-S", scheduler, f"--loglevel={loglevel}"]


def flower_arguments(*, port: int = FLOWER_PORT) -> list[str]:
    """Flower; its basic-auth credentials come from FLOWER_BASIC_AUTH, never the command line."""
    return ["flower", f"--port={port}"]


def compose_command(arguments: Sequence[str]) -> list[str]:
    """The command as docker-compose.yml writes it."""
    return [*CELERY, *arguments]
