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
        click.echo(f"billing run: could not send the first period close now ({exc})", err=True)
    finally:
        celery.close()


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


@dataclass
class _Children:
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stop_signals: int = 0

    def start(self, name: str, command: list[str]) -> None:
        sys.stdout.flush()
        self.processes[name] = subprocess.Popen(
            command,
            # Their own session: Ctrl-C in the terminal reaches only `billing run`, which
            # then stops them in order, once.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def supervise(self) -> int:
        """Wait until a stop signal or a child's exit; stop the rest; return the exit code."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            died = self._wait_for_stop_or_death()
            if died is not None:
                click.echo(
                    f"billing run: {died} exited with code {self.processes[died].returncode}; "
                    "stopping the rest",
                    err=True,
                )
            else:
                click.echo("billing run: stopping (warm shutdown: running tasks finish)")
            self._stop_all()
            return 0 if died is None else 1
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop_signals += 1
        if self.stop_signals >= 2:
            # Second Ctrl-C: do not wait for running tasks (Celery's cold shutdown).
            for process in self.processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGQUIT)

    def _wait_for_stop_or_death(self) -> str | None:
        while not self.stop_signals:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    return name
            time.sleep(0.2)
        return None

    def _stop_all(self) -> None:
        # Beat first, so nothing new is scheduled while the worker drains.
        for name in ("beat", "worker"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            while process.poll() is None:
                time.sleep(0.2)


COMMANDS = [run]
