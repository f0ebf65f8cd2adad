"""Settings, resolved once from the environment.

With nothing configured the worker runs on an embedded default: a SQLite database and a
file-system broker under one local data folder, so a new user sees it work before
installing PostgreSQL or Redis. Production sets `BILLING_DATABASE_URL` and
`BILLING_BROKER_URL` (and, if it differs from the broker, `BILLING_RESULT_BACKEND`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from models.validation import DEFAULT_CLOCK_SKEW_SECONDS

# The hard time limit of every task (seconds); the soft limit is a minute earlier.
TASK_TIME_LIMIT = 900
# When an unacknowledged Redis message is handed out again (see broker_transport_options).
REDELIVERY_AFTER = TASK_TIME_LIMIT + 60
RESTORE_SWEEP = 10


class SettingsError(ValueError):
    """A setting in the environment that cannot be used; the message names the variable."""


def _env_int(name: str, default: int, *, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def redacted_url(url: str) -> str:
    """`url` with its password hidden, fit to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return url.rpartition("@")[2]


def _check_database_url(url: str) -> str:
    """`url` if SQLAlchemy can open that kind of database with an installed driver."""
    example = "postgresql+psycopg://user@host:5432/billing or sqlite:////absolute/path.sqlite3"
    try:
        dialect = make_url(url).get_dialect()
    except sa_exc.ArgumentError:
        raise SettingsError(
            f"BILLING_DATABASE_URL is not a database URL ({redacted_url(url)!r}); "
            f"write one such as {example}"
        ) from None
    except sa_exc.NoSuchModuleError:
        kind = url.partition(":")[0]
        raise SettingsError(
            f"BILLING_DATABASE_URL names {kind!r}, which is not a database SQLAlchemy knows; "
            f"write one such as {example}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as missing:
        raise SettingsError(
            f"BILLING_DATABASE_URL needs the driver {missing.name or missing}, which is not "
            f"installed; write one such as {example}"
        ) from None
    return url


@dataclass(frozen=True)
class SMTPSettings:
    """`BILLING_SMTP_URL`: smtp://[user:password@]host[:port][?starttls=1&from=ADDRESS], or
    smtps://… for implicit TLS."""

    host: str
    port: int
    ssl: bool
    starttls: bool
    username: str | None
    password: str | None
    sender_address: str

    @classmethod
    def from_url(cls, url: str) -> SMTPSettings:
        """Parse the URL; a malformed one is a ValueError naming BILLING_SMTP_URL."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname or port == -1:
            raise SettingsError(
                "BILLING_SMTP_URL must be smtp://[user:password@]host[:port][?starttls=1"
                f"&from=ADDRESS] or smtps://…, got {_redacted_smtp(url)!r}"
            )
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=port or (465 if parts.scheme == "smtps" else 25),
            ssl=parts.scheme == "smtps",
            starttls=query.get("starttls", ["0"])[0].lower() in {"1", "true", "yes"},
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender_address=query.get("from", ["billing@localhost"])[0],
        )


def _redacted_smtp(url: str) -> str:
    # A password never goes into an error message.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str
    result_backend: str
    # Prefix for every Redis key the broker and result backend write, so that several
    # deployments (or test runs) can share one Redis without seeing each other's queues.
    redis_key_prefix: str
    close_interval: int
    reconcile_interval: int
    reconcile_after: int
    # Seconds between collection runs (tasks/collections.py).
    collections_interval: int
    # Closed periods per invoice-generation message. Each message costs the close about a
    # millisecond to send; invoicing runs about 300 invoices a second per process, so 500
    # is ~2 s of work per task, far inside the time limit. Larger means fewer messages but
    # coarser spreading over invoicing workers (a close of 1,000 periods feeds only two)
    # and more to redo when a worker dies mid-task (a rerun creates nothing new).
    invoice_batch_size: int
    close_batch_size: int
    # How far (seconds) an instant given by a user (`billing close --as-of`, a charge's
    # `occurred_at`, a payment's
    # `received_at`, a customer close's `--at`) may be ahead of now before it is refused as
    # "in the future", and how far the worker's clock may disagree with the database's
    # before the worker warns; closing always goes by the database's clock (tasks/closing.py).
    clock_skew_seconds: int
    embedded_database: bool
    embedded_broker: bool
    # Beat (see worker/beat.py): longest sleep between looks at the schedule, the redbeat
    # lock's lifetime (None: five times the sleep) and the Redis holding it ("" = the
    # broker's or result backend's Redis, if any).
    beat_max_interval: int
    beat_lock_timeout: int | None
    beat_redis_url: str
    # Invoices: the mailer's SMTP server (tasks/notifications.py; None = no mailer, the
    # outbox keeps the notifications) and a folder of custom templates ("" = packaged ones
    # only).
    smtp: SMTPSettings | None
    template_dir: str

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"

    def broker_transport_options(self) -> dict[str, Any]:
        if self.embedded_broker:
            folder = self.broker_folder
            return {
                "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"),
                "control_folder": str(folder / "control"),
                # The transport finds new messages by listing the folder; kombu's default of
                # once a second caps a worker at about prefetch-count tasks a second.
                "polling_interval": 0.1,
            }
        options: dict[str, Any] = {
            # A message a worker took but never acknowledged (the worker was killed, or
            # Redis restarted under it) comes back to the queue this long after it was
            # taken: just above the hard time limit, so a running task is never handed to
            # a second worker, and a lost one is back within ~16 minutes, not an hour.
            "visibility_timeout": REDELIVERY_AFTER,
            # Every worker looks for such messages every 10 s (kombu's default is one real
            # look every 10th sweep, ~100 s), so the bound is REDELIVERY_AFTER + 10 s.
            "unacked_restore_interval": RESTORE_SWEEP,
            "unacked_restore_throttle": 1,
        }
        if self.redis_key_prefix and self.broker_url.startswith(("redis", "rediss")):
            options["global_keyprefix"] = self.redis_key_prefix
        return options

    def result_backend_transport_options(self) -> dict[str, Any]:
        if self.redis_key_prefix and self.result_backend.startswith(("redis", "rediss")):
            return {"global_keyprefix": self.redis_key_prefix}
        return {}

    def ensure_data_dir(self) -> None:
        """Create the folders the embedded default writes to."""
        if self.embedded_database or self.embedded_broker:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.embedded_broker:
            for sub in ("queue", "control"):
                (self.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def load_settings() -> Settings:
    data_dir = Path(os.environ.get("BILLING_DATA_DIR") or ".billing-data").resolve()
    database_url = os.environ.get("BILLING_DATABASE_URL") or ""
    broker_url = os.environ.get("BILLING_BROKER_URL") or ""
    result_backend = os.environ.get("BILLING_RESULT_BACKEND") or ""
    embedded_database = not database_url
    embedded_broker = not broker_url
    if embedded_database:
        database_url = f"sqlite:///{data_dir / 'billing.sqlite3'}"
    else:
        database_url = _check_database_url(database_url)
    if embedded_broker:
        # The host means nothing to the file-system transport; naming one keeps kombu from
        # warning "No hostname was supplied" on every connection.
        broker_url = "filesystem://localhost//"
    if not result_backend:
        if broker_url.startswith(("redis://", "rediss://")):
            result_backend = broker_url
        elif broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
            result_backend = "rpc://"
        else:
            result_backend = f"db+sqlite:///{data_dir / 'results.sqlite3'}"
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        result_backend=result_backend,
        redis_key_prefix=os.environ.get("BILLING_REDIS_KEY_PREFIX", ""),
        close_interval=_env_int("BILLING_CLOSE_INTERVAL", 300),
        reconcile_interval=_env_int("BILLING_RECONCILE_INTERVAL", 300),
        reconcile_after=_env_int("BILLING_RECONCILE_AFTER", 900, minimum=0),
        collections_interval=_env_int("BILLING_COLLECTIONS_INTERVAL", 300),
        invoice_batch_size=_env_int("BILLING_INVOICE_BATCH", 1000),
        close_batch_size=_env_int("BILLING_CLOSE_BATCH", 2000),
        clock_skew_seconds=_env_int("BILLING_CLOCK_SKEW", DEFAULT_CLOCK_SKEW_SECONDS, minimum=0),
        embedded_database=embedded_database,
        embedded_broker=embedded_broker,
        beat_max_interval=_env_int("BILLING_BEAT_MAX_INTERVAL", 30),
        beat_lock_timeout=(
            _env_int("BILLING_BEAT_LOCK_TIMEOUT", 1)
            if os.environ.get("BILLING_BEAT_LOCK_TIMEOUT", "").strip()
            else None
        ),
        beat_redis_url=os.environ.get("BILLING_BEAT_REDIS_URL", ""),
        smtp=_smtp_settings(os.environ.get("BILLING_SMTP_URL", "")),
        template_dir=os.environ.get("BILLING_TEMPLATE_DIR", ""),
    )


def _smtp_settings(url: str) -> SMTPSettings | None:
    return SMTPSettings.from_url(url.strip()) if url.strip() else None


@cache
def settings() -> Settings:
    """The process's settings; read once, at first use."""
    return load_settings()
