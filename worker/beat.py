"""Which beat scheduler runs, and the settings that keep a deployment to one beat at a time.

With Redis available (the broker, the result backend, or `BILLING_BEAT_REDIS_URL`), beat
uses celery-redbeat: the schedule lives in Redis and a beat must hold a Redis lock to send
anything. A second beat started against the same Redis blocks on that lock (polling every
`beat_max_loop_interval` seconds) and takes over once the holder has released it on a
clean stop, or once the lock has expired because the holder died:

- `BILLING_BEAT_MAX_INTERVAL` (default 30 s): the longest beat sleeps between two looks at
  the schedule; the holder extends its lock at every look, and a standby retries the lock
  this often.
- `BILLING_BEAT_LOCK_TIMEOUT` (default 5 x the max interval, 150 s): the lock's time to
  live. When the holder is killed, a standby takes over at most this long (plus one max
  interval) later; it must stay well above the max interval, or a live holder could lose
  its lock between two extensions.

The lock can also vanish under a live holder: a Redis `FLUSHALL`, or a Redis restart
without persistence, deletes it (and the schedule). redbeat's own scheduler then raises
`LockNotOwnedError` and beat exits; `ResilientRedBeatScheduler` (the one configured here)
instead logs it, takes the lock again (waiting, as a standby does, if another beat took it
meanwhile), writes the schedule back and goes on. While Redis is unreachable it logs and
retries every max interval instead of exiting.

Two beats are still harmless: beat only wakes the closer, which decides what is due from
the database and closes each period exactly once (unique constraints), so the lock saves
work, not money.

With no Redis (the embedded default, or RabbitMQ alone) beat uses Celery's
`PersistentScheduler` with its schedule file in the data folder; `billing run` holds a lock
file in that folder so that only one run uses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redbeat import RedBeatScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.config import Settings

logger = logging.getLogger("celery.beat")

REDBEAT_SCHEDULER = "worker.beat:ResilientRedBeatScheduler"
PERSISTENT_SCHEDULER = "celery.beat:PersistentScheduler"

SCHEDULE_FILE = "celerybeat-schedule"

_REDIS_SCHEMES = ("redis://", "rediss://")


class ResilientRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat's scheduler that survives losing its lock or its Redis (see module doc)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return float(super().tick(*args, **kwargs))
        except LockError:
            logger.warning(
                "beat: lost the redbeat lock %s (Redis flushed or restarted without "
                "persistence?); taking it again",
                self.lock_key,
            )
            return self._take_lock_again()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            logger.warning("beat: Redis unreachable (%s); retrying in %s s", exc, self.max_interval)
            return float(self.max_interval)

    def _take_lock_again(self) -> float:
        try:
            # Blocks while another beat holds it, polling every max interval: this beat is
            # then the standby, as if it had just started.
            self.lock.acquire()
            logger.info("beat: Acquired lock")
            # The schedule lived in the same Redis: write its entries back.
            self.setup_schedule()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            logger.warning("beat: Redis unreachable (%s); retrying in %s s", exc, self.max_interval)
        return float(self.max_interval)


@dataclass(frozen=True)
class BeatSettings:
    scheduler: str
    max_interval: int
    # Set only for the redbeat scheduler.
    redis_url: str | None
    key_prefix: str | None
    lock_timeout: int | None

    @property
    def lock_key(self) -> str | None:
        # redbeat's own default: "<key prefix>:lock".
        return f"{self.key_prefix}:lock" if self.key_prefix is not None else None


def beat_redis_url(conf: Settings) -> str | None:
    """The Redis that holds redbeat's schedule and lock, or None when there is no Redis."""
    if conf.beat_redis_url:
        return conf.beat_redis_url
    for url in (conf.broker_url, conf.result_backend):
        if url.startswith(_REDIS_SCHEMES):
            return url
    return None


def beat_settings(conf: Settings) -> BeatSettings:
    max_interval = conf.beat_max_interval
    redis_url = beat_redis_url(conf)
    if redis_url is None:
        return BeatSettings(PERSISTENT_SCHEDULER, max_interval, None, None, None)
    lock_timeout = conf.beat_lock_timeout or 5 * max_interval
    if lock_timeout <= max_interval:
        raise ValueError(
            f"BILLING_BEAT_LOCK_TIMEOUT ({lock_timeout}) must be longer than "
            f"BILLING_BEAT_MAX_INTERVAL ({max_interval}), or a live beat loses its lock"
        )
    return BeatSettings(
        REDBEAT_SCHEDULER,
        max_interval,
        redis_url,
        # Under the deployment's key prefix, so deployments (and test runs) sharing one
        # Redis each have their own schedule and lock.
        f"{conf.redis_key_prefix}redbeat",
        lock_timeout,
    )


def beat_config(conf: Settings) -> dict[str, Any]:
    """The Celery settings for beat; merged into the app's configuration."""
    beat = beat_settings(conf)
    config: dict[str, Any] = {
        "beat_scheduler": beat.scheduler,
        "beat_max_loop_interval": beat.max_interval,
        "beat_schedule_filename": str(conf.data_dir / SCHEDULE_FILE),
    }
    if beat.scheduler == REDBEAT_SCHEDULER:
        config.update(
            redbeat_redis_url=beat.redis_url,
            redbeat_key_prefix=beat.key_prefix,
            redbeat_lock_timeout=beat.lock_timeout,
            # Explicit, so redbeat does not fall back to the broker's transport options
            # (the broker's key prefix and visibility timeout mean nothing to it).
            redbeat_redis_options={},
        )
    return config
