"""What is still in the broker: the closed-period ids of invoice messages not yet done.

Reconcile re-queues a period only when its message is really lost (issue 10, item 23):
when invoicing merely runs behind, the original messages are still waiting in the queue
or held by a worker, and sending them again would double the work exactly when the
system is busiest. With Redis as the broker this module reads both places kombu keeps
them: the queue's lists (one per priority step) and the `unacked` hash (messages a
worker has taken and not acknowledged: running, or waiting for a retry's countdown). It
costs one pass over what is queued, not over what is stored.

Other brokers (the embedded file-system broker, RabbitMQ) cannot be looked into cheaply:
`None` then, and reconcile falls back to re-queuing every stale period (harmless, as
generation is idempotent; only the work is repeated).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from worker.config import Settings

# kombu's Redis transport: a queue `q` with priorities is the lists `q`, `q\x06\x163`, …
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_UNACKED = "unacked"


def _ids_in(raw_messages: Iterable[bytes | str], task: str) -> set[int]:
    ids: set[int] = set()
    for raw in raw_messages:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries: [message, exchange, routing key]
                message = message[0]
            if message.get("headers", {}).get("task") != task:
                continue
            body: Any = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
            ids.update(int(i) for i in args[0])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue  # not one of ours, or unreadable: the worker dead-letters those
    return ids


def queued_closed_period_ids(conf: Settings, *, queue: str, task: str) -> set[int] | None:
    """Closed-period ids carried by `task` messages still in `queue` or held by a worker;
    None when the broker is not Redis."""
    if not conf.broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    prefix = conf.redis_key_prefix
    client = redis.Redis.from_url(conf.broker_url, socket_timeout=10)
    try:
        waiting: list[bytes | str] = []
        for suffix in _PRIORITY_SUFFIXES:
            waiting.extend(client.lrange(f"{prefix}{queue}{suffix}", 0, -1))
        held = client.hvals(f"{prefix}{_UNACKED}")
    finally:
        client.close()
    return _ids_in([*waiting, *held], task)
