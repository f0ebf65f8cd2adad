"""Is each service reachable, and if not, what should a person check?

A command that cannot reach the database, the broker or the result backend must say so in
one or two lines, never with a driver's traceback. `explain(error)` turns the errors those
libraries raise into such a sentence (None for anything else, which stays a bug to see);
the `check_*` probes ask a service before any work starts, within a few seconds, so that a
command fails before it has done half its job.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from worker.config import Settings, SettingsError, settings
from worker.config import redacted_url as redacted

# How long a command-line producer waits for the broker or the result backend before it
# says the service is down (a worker, by contrast, keeps retrying: it is a long-lived
# process and the outage may be short).
PROBE_TIMEOUT = 3.0


class ServiceUnavailable(Exception):
    """A service the command needs could not be reached; the message says what to check."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    line = text.splitlines()[0].strip()
    return line.removeprefix("connection failed: ")


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).resolve()


def _is_missing_schema(error: sa_exc.DBAPIError) -> bool:
    message = str(error.orig)
    return (
        message.startswith("no such table")
        or type(error.orig).__name__ == "UndefinedTable"
        or ('relation "' in message and "does not exist" in message)
    )


def explain_database(error: BaseException, conf: Settings) -> str | None:
    """One or two lines for a database error that is not the program's fault, or None."""
    url = conf.database_url
    if isinstance(error, sa_exc.DBAPIError) and _is_missing_schema(error):
        return (
            f"the database {redacted(url)} has no billing schema (or an older one): "
            "run `billing db upgrade`"
        )
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        path = _sqlite_path(url)
        if path is not None:
            return (
                f"could not open the SQLite database {path} ({_first_line(error.orig or error)})\n"
                f"check that the folder {path.parent} exists and is writable "
                "(BILLING_DATA_DIR, or BILLING_DATABASE_URL)"
            )
        return (
            f"could not reach the database {redacted(url)}: {_first_line(error.orig or error)}\n"
            "check BILLING_DATABASE_URL and that the database server is running"
        )
    if isinstance(error, sa_exc.ProgrammingError):
        return (
            f"the database refused a query: {_first_line(error.orig or error)}\n"
            "is the schema up to date? run `billing db upgrade`"
        )
    return None


def _connection_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError as KombuOperationalError

    errors: list[type[BaseException]] = [KombuOperationalError, ConnectionError, socket.error]
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    return tuple(errors)


def connection_lost(error: BaseException) -> str | None:
    """The driver's one-line reason if `error` is (or was caused by) a lost connection to
    the broker or the result backend, else None. Celery's Redis result backend, once out
    of reconnection attempts, raises a RuntimeError caused by the connection error."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, _connection_errors()):
            return _first_line(seen)
        seen = seen.__cause__
    return None


def explain_broker(error: BaseException, conf: Settings) -> str | None:
    """One or two lines for a broker or result-backend outage, or None."""
    reason = connection_lost(error)
    if reason is None:
        return None
    return (
        f"could not reach the broker {redacted(conf.broker_url)} ({reason})\n"
        "check BILLING_BROKER_URL (and BILLING_RESULT_BACKEND) and that Redis is running"
    )


def explain(error: BaseException) -> str | None:
    """What a person should read instead of `error`'s traceback, or None if it is a bug."""
    if isinstance(error, SettingsError | ServiceUnavailable):
        return str(error)
    try:
        conf = settings()
    except SettingsError as bad:
        return str(bad)
    return explain_database(error, conf) or explain_broker(error, conf)


def check_broker(app: Any, *, timeout: float = PROBE_TIMEOUT) -> None:
    """Connect to the broker within `timeout` seconds, or raise ServiceUnavailable."""
    conf = settings()
    with app.connection_for_write() as connection:
        try:
            connection.ensure_connection(
                max_retries=1, interval_start=0.5, interval_step=0.5, timeout=timeout
            )
        except _connection_errors() as error:
            raise ServiceUnavailable(
                f"could not reach the broker {redacted(conf.broker_url)} "
                f"({_first_line(error)})\ncheck BILLING_BROKER_URL and that Redis is running"
            ) from None


def check_result_backend(app: Any) -> None:
    """Ask the result backend for a ping (Redis) or raise ServiceUnavailable."""
    conf = settings()
    client = getattr(app.backend, "client", None)
    if client is None or not hasattr(client, "ping"):
        return
    try:
        client.ping()
    except _connection_errors() as error:
        raise ServiceUnavailable(
            f"could not reach the result backend {redacted(conf.result_backend)} "
            f"({_first_line(error)})\ncheck BILLING_RESULT_BACKEND and that Redis is running"
        ) from None


def bound_producer_retries(app: Any) -> None:
    """Make `app`, used as a command-line producer, give up on a dead broker or result
    backend within a few seconds instead of Celery's defaults (about 20 s for a Redis
    result backend). Call before the app first sends or reads a result."""
    retry = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}
    app.conf.broker_connection_timeout = PROBE_TIMEOUT
    app.conf.task_publish_retry_policy = retry
    app.conf.result_backend_transport_options = {
        **app.conf.result_backend_transport_options,
        "retry_policy": retry,
    }
    app.conf.redis_socket_connect_timeout = PROBE_TIMEOUT
