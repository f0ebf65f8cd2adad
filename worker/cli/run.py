"""`billing run`: a worker and beat together, in one command, on whatever is configured.

With nothing configured it runs on the embedded default (SQLite and a file-system broker in
the data folder), so a new user sees customers taken in and periods closed without
installing anything; with `BILLING_DATABASE_URL` / `BILLING_BROKER_URL` it runs on
PostgreSQL and Redis (or RabbitMQ), beat then using the Redis-locked scheduler.

The worker and beat are two child processes started with the same arguments as
docker-compose's services (worker/commands.py). They run in their own session, so Ctrl-C
reaches only this process, which stops beat and then the worker with the signal Celery
reads as a warm shutdown (running tasks finish); a second Ctrl-C stops them at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

import click
from sqlalchemy.engine import make_url

from tasks.base import one_line
from worker.beat import PERSISTENT_SCHEDULER, BeatSettings, beat_settings
from worker.commands import beat_arguments, worker_arguments
from worker.config import Settings, load_settings
from worker.migrate import upgrade

LOCK_FILE = "billing-run.lock"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.command("run")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes that run tasks.",
)
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Log level of the worker and beat.",
)
@click.option(
    "--close-interval",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds between period-close runs (default: BILLING_CLOSE_INTERVAL, else 300).",
)
@click.option("--beat/--no-beat", default=True, show_default=True, help="Also run beat.")
def run(concurrency: int, loglevel: str, close_interval: int | None, beat: bool) -> None:
    """Migrate the database, then run a worker and beat until Ctrl-C (or SIGTERM)."""
    if close_interval is not None:
        # Children read their settings from the environment, like every deployment does.
        os.environ["BILLING_CLOSE_INTERVAL"] = str(close_interval)
    try:
        conf = load_settings()
        beat_conf = beat_settings(conf)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    loglevel = loglevel.upper()

    with _data_folder_lock(conf):
        # Every service checked before anything starts: a dead one is one line naming it,
        # not a child's retry loop or a thousand lines of tracebacks.
        problem = unreachable_service(conf)
        if problem:
            raise click.ClickException(problem)
        upgrade(conf.database_url)
        _print_banner(conf, beat_conf if beat else None)
        children = _Children()
        children.start("worker", _worker_command(concurrency, loglevel))
        if beat:
            children.start("beat", _beat_command(conf, beat_conf, loglevel))
            _close_due_now(conf)
        code = children.supervise()
    click.echo(f"billing run: stopped (exit code {code})")
    sys.exit(code)


def _worker_command(concurrency: int, loglevel: str) -> list[str]:
    return [
        *_celery(),
        *worker_arguments(loglevel=loglevel),
        f"--concurrency={concurrency}",
        # Unique per run, so two runs on one machine and one broker stay apart in Flower.
        f"--hostname=billing-{os.getpid()}@%h",
    ]


def _beat_command(conf: Settings, beat_conf: BeatSettings, loglevel: str) -> list[str]:
    command = [*_celery(), *beat_arguments(scheduler=beat_conf.scheduler, loglevel=loglevel)]
    if beat_conf.scheduler == PERSISTENT_SCHEDULER:
        command.append(f"--schedule={conf.data_dir / 'celerybeat-schedule'}")
    return command


def _celery() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker"]


def _close_due_now(conf: Settings) -> None:
    """Wake the closer once at start: what fell due while nothing ran is closed now, not
    one close interval later (Celery's own scheduler first fires an interval after start)."""
    from worker.celery_app import beat_schedule, create_app

    entry = beat_schedule(conf)["close-due-periods"]
    celery = create_app(conf)
    try:
        celery.send_task(entry["task"], **entry["options"])
    except Exception as exc:  # the broker may still be starting; beat sends it later anyway
        click.echo(
            f"billing run: could not send the first period close now ({one_line(exc)}); "
            "beat sends it at the next interval",
            err=True,
        )
    finally:
        celery.close()


PROBE_TIMEOUT = 3


def unreachable_service(conf: Settings) -> str | None:
    """One line naming the first service `billing run` needs that cannot be reached (the
    database, the broker, the result backend) and what to check; None if all answer."""
    from sqlalchemy import text

    from worker.db import make_engine

    if conf.database_url.startswith("postgres"):
        engine = make_engine(conf.database_url, connect_args={"connect_timeout": PROBE_TIMEOUT})
    else:
        engine = make_engine(conf.database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return (
            f"the database {_redacted(conf.database_url)} cannot be reached "
            f"({one_line(getattr(exc, 'orig', None) or exc)}): check BILLING_DATABASE_URL "
            "and that the server runs"
        )
    finally:
        engine.dispose()
    services = [("broker", conf.broker_url, "BILLING_BROKER_URL")]
    if conf.result_backend != conf.broker_url and "://" in conf.result_backend:
        services.append(("result backend", conf.result_backend, "BILLING_RESULT_BACKEND"))
    for what, url, variable in services:
        if not url.startswith(("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")):
            continue  # the embedded file-system broker and SQLite results need no server
        from kombu.connection import Connection

        try:
            with Connection(url, connect_timeout=PROBE_TIMEOUT) as connection:
                connection.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT)
        except Exception as exc:
            return (
                f"the {what} {_redacted(url)} cannot be reached ({one_line(exc)}): "
                f"check {variable} and that the server runs"
            )
    return None


def _uses_data_folder(conf: Settings, beat_conf: BeatSettings) -> bool:
    return (
        conf.embedded_database
        or conf.embedded_broker
        or beat_conf.scheduler == PERSISTENT_SCHEDULER
    )


@contextlib.contextmanager
def _data_folder_lock(conf: Settings) -> Iterator[None]:
    """Hold the data folder for this run: one SQLite writer set, one beat schedule file."""
    if not _uses_data_folder(conf, beat_settings(conf)):
        yield
        return
    conf.ensure_data_dir()
    path = conf.data_dir / LOCK_FILE
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise click.ClickException(
                f"{conf.data_dir} is in use by another `billing run` ({holder}); "
                "stop it first, or set BILLING_DATA_DIR to another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _redacted(url: str) -> str:
    if url.startswith("filesystem://"):
        return url
    return make_url(url).render_as_string(hide_password=True)


def _print_banner(conf: Settings, beat_conf: BeatSettings | None) -> None:
    lines = ["billing run: worker and beat, migrated database, press Ctrl-C to stop"]
    if _uses_data_folder(conf, beat_conf or beat_settings(conf)):
        lines.append(f"  data folder : {conf.data_dir}")
    database = _redacted(conf.database_url)
    lines.append(
        f"  database    : {database}" + (" (embedded default)" if conf.embedded_database else "")
    )
    if conf.embedded_broker:
        lines.append(
            f"  broker      : file-system broker in {conf.broker_folder} (embedded default)"
        )
    else:
        lines.append(f"  broker      : {_redacted(conf.broker_url)}")
    lines.append(f"  results     : {_redacted(conf.result_backend)}")
    if beat_conf is None:
        lines.append("  beat        : not started (--no-beat)")
    elif beat_conf.scheduler == PERSISTENT_SCHEDULER:
        lines.append(
            f"  beat        : closes due periods now, then every {conf.close_interval} s; "
            f"schedule in {conf.data_dir / 'celerybeat-schedule'}"
        )
    else:
        lines.append(
            f"  beat        : closes due periods now, then every {conf.close_interval} s; "
            f"redbeat lock "
            f"{beat_conf.lock_key} (taken over {beat_conf.lock_timeout} s after a holder dies)"
        )
    lines.append(f"  stop        : Ctrl-C, or `kill {os.getpid()}` (SIGTERM)")
    click.echo("\n".join(lines))
    sys.stdout.flush()


def _die_with_parent() -> None:
    """In the child: get SIGTERM if `billing run` itself dies, so nothing is left behind."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


# Waits before restarting a child that died: 1, 2, 4, 8, 16 s. A child that ran longer
# than STABLE_AFTER before dying starts the count again; one that dies len(RESTART_DELAYS)
# + 1 times in a row stops the run (exit 1): something is wrong that a restart won't fix.
RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
STABLE_AFTER = 60.0


@dataclass
class _Child:
    command: list[str]
    process: subprocess.Popen[bytes]
    started: float
    restarts: int = 0  # in a row, since it last ran for STABLE_AFTER seconds


@dataclass
class _Children:
    restart_delays: tuple[float, ...] = RESTART_DELAYS
    stable_after: float = STABLE_AFTER
    children: dict[str, _Child] = field(default_factory=dict)
    stop_signals: int = 0

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        return {name: child.process for name, child in self.children.items()}

    def start(self, name: str, command: list[str]) -> None:
        previous = self.children.get(name)
        self.children[name] = _Child(
            command, self._spawn(command), time.monotonic(), previous.restarts if previous else 0
        )

    @staticmethod
    def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
        sys.stdout.flush()
        return subprocess.Popen(
            command,
            # Their own session: Ctrl-C in the terminal reaches only `billing run`, which
            # then stops them in order, once.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def supervise(self) -> int:
        """Run until a stop signal, restarting a child that dies (with backoff); stop the
        rest; return the exit code: 0 on a stop signal, 1 if a child kept dying."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            gave_up = self._watch()
            if gave_up is None:
                click.echo("billing run: stopping (warm shutdown: running tasks finish)")
            else:
                click.echo(f"billing run: {gave_up}; stopping the rest", err=True)
            self._stop_all()
            return 0 if gave_up is None else 1
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _watch(self) -> str | None:
        """Restart dead children until a stop signal (None) or one keeps dying (why)."""
        while not self.stop_signals:
            for name, child in self.children.items():
                code = child.process.poll()
                if code is None:
                    continue
                if time.monotonic() - child.started >= self.stable_after:
                    child.restarts = 0
                if child.restarts >= len(self.restart_delays):
                    return (
                        f"{name} exited with code {code} {child.restarts + 1} times in a row"
                        f"{_services_down_hint()}"
                    )
                delay = self.restart_delays[child.restarts]
                click.echo(
                    f"billing run: {name} exited with code {code}; restarting it in "
                    f"{delay:g} s (restart {child.restarts + 1} of {len(self.restart_delays)})",
                    err=True,
                )
                if not self._sleep(delay):
                    return None
                child.restarts += 1
                self.start(name, child.command)
                click.echo(f"billing run: {name} restarted (pid {self.children[name].process.pid})")
                break  # the dict changed: look again
            time.sleep(0.2)
        return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep, unless a stop signal comes first; False if it did."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop_signals:
                return False
            time.sleep(0.1)
        return not self.stop_signals

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop_signals += 1
        if self.stop_signals >= 2:
            # Second Ctrl-C: do not wait for running tasks (Celery's cold shutdown).
            for child in self.children.values():
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGQUIT)

    def _stop_all(self) -> None:
        # Beat first, so nothing new is scheduled while the worker drains.
        for name in ("beat", "worker", *self.children):
            child = self.children.get(name)
            if child is None or child.process.poll() is not None:
                continue
            child.process.send_signal(signal.SIGTERM)
            while child.process.poll() is None:
                time.sleep(0.2)


def _services_down_hint() -> str:
    """What is unreachable now, if anything: the likeliest reason a child keeps dying."""
    try:
        problem = unreachable_service(load_settings())
    except ValueError as exc:
        return f" ({exc})"
    return f" ({problem})" if problem else ""


COMMANDS = [run]
