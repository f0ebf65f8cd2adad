"""Reading broker messages safely: one poison message must never stop a worker.

Why a worker died on some messages (issue 10, item 16): with the prefork pool the worker's
main process decodes a task's JSON body and then *pickles* the arguments to hand them to a
pool process. A body nested ~600 levels deep decodes fine, but pickling it raises
`RecursionError` inside the consumer's event loop, which Celery treats as an unrecoverable
error: the worker exits, and the unacknowledged message is redelivered to kill the next
one. Bodies Celery cannot decode at all (invalid UTF-8, a 5,000-digit integer, 100k-deep
nesting) were acknowledged and dropped with only a log line, and a body of the wrong shape
raised in the consumer as well.

So, at the depth where the message is first read:

- `loads`, registered as kombu's `json` decoder (the only accepted content type), refuses
  UTF-8 errors and nesting deeper than `MAX_DEPTH` before building any Python object;
- `GuardedConsumer` (the worker's consumer class) checks every task message before Celery
  sees it: it decodes, its body is `[args, kwargs, options]`, and the arguments fit the
  task's signature. A message that fails is a **dead letter**: a row in the `dead_letters`
  table (`billing dead-letters list`), one ERROR log line, a FAILURE result for its task
  id, then acknowledged, so it is never redelivered. Anything still raised while Celery
  handles a message is dead-lettered the same way instead of stopping the worker.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import re
from itertools import accumulate
from typing import Any

from celery.utils.collections import AttributeDict
from celery.worker.consumer import Consumer
from kombu.serialization import register

logger = logging.getLogger("billing.dead_letters")

# Deepest nesting of arrays and objects a message may have, envelope included. Task
# arguments are ids, instants and flat payloads; intake's custom data is refused well
# before this by its own rules, and pickling stays far from the recursion limit.
MAX_DEPTH = 64
# How much of a dead letter's body is kept.
MAX_BODY_KEPT = 64 * 1024

_STRINGS = re.compile(r'"(?:[^"\\]+|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class PoisonMessage(Exception):
    """A message that cannot be run: `code` says why in one word, the message in a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON `text` (brackets inside strings ignored),
    computed without recursion."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """JSON from a message body: strict UTF-8 and at most MAX_DEPTH levels deep."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PoisonMessage(
                "not_utf8", f"the body is not UTF-8 (byte {exc.start}: {exc.reason})"
            ) from None
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise PoisonMessage(
            "too_deep", f"the body nests {depth} levels deep; at most {MAX_DEPTH} are read"
        )
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PoisonMessage("not_json", f"the body is not JSON: {exc}") from None


def register_json() -> None:
    """Make `loads` kombu's decoder for application/json (encoding is unchanged)."""
    from kombu.utils.json import dumps

    register("json", dumps, loads, content_type="application/json", content_encoding="utf-8")


def check_task_message(message: Any, tasks: dict[str, Any]) -> None:
    """Raise PoisonMessage unless `message` is a protocol-2 message whose body decodes to
    `[args, kwargs, options]` with arguments that fit its (registered) task."""
    headers = message.headers
    if not isinstance(headers, dict) or not isinstance(headers.get("task"), str):
        raise PoisonMessage("not_a_task", "the message has no task name in its headers")
    try:
        body = message.decode()
    except PoisonMessage:
        raise
    except Exception as exc:
        for cause in (*exc.args[:1], exc.__cause__, exc.__context__):
            if isinstance(cause, PoisonMessage):
                raise cause from None
        raise PoisonMessage("not_decodable", f"the body cannot be read: {exc}") from None
    if not (
        isinstance(body, list | tuple)
        and len(body) == 3
        and isinstance(body[0], list | tuple)
        and isinstance(body[1], dict)
        and (body[2] is None or isinstance(body[2], dict))
    ):
        raise PoisonMessage(
            "wrong_shape", "the body is not [args, kwargs, options] (Celery protocol 2)"
        )
    task = tasks.get(headers["task"])
    if task is None:
        return  # Celery's own "unknown task" handling reports it (FAILURE, NotRegistered)
    try:
        inspect.signature(task.run).bind(*body[0], **body[1])
    except TypeError as exc:
        raise PoisonMessage(
            "wrong_arguments", f"the arguments do not fit {headers['task']}: {exc}"
        ) from None


def _body_text(message: Any) -> str:
    raw = message.body
    if isinstance(raw, str):
        text = raw
    else:
        text = bytes(raw or b"").decode("utf-8", errors="backslashreplace")
    return text[:MAX_BODY_KEPT]


def _safe_headers(message: Any) -> str:
    try:
        return json.dumps(message.headers, default=str)[:MAX_BODY_KEPT]
    except (TypeError, ValueError, RecursionError):
        return repr(message.headers)[:MAX_BODY_KEPT]


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, with every task message checked first (see the module doc)."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)
        connection_errors = tuple(self.connection_errors) + tuple(self.channel_errors)

        def on_task_received(message: Any) -> Any:
            try:
                check_task_message(message, self.app.tasks)
            except PoisonMessage as poison:
                return self.dead_letter(message, poison)
            try:
                return handle(message)
            except connection_errors:
                raise
            except Exception as exc:  # never let one message stop the worker
                if message.acknowledged:
                    logger.exception("handling a message failed after it was acknowledged")
                    return None
                return self.dead_letter(
                    message, PoisonMessage("unhandled", f"{type(exc).__name__}: {exc}")
                )

        return on_task_received

    def dead_letter(self, message: Any, poison: PoisonMessage) -> None:
        """Keep `message` as a dead letter, fail its task id, log one line, acknowledge it."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        task = headers.get("task") if isinstance(headers.get("task"), str) else None
        task_id = headers.get("id") if isinstance(headers.get("id"), str) else None
        queue = (message.delivery_info or {}).get("routing_key")
        stored = self._store(message, poison, task, task_id, queue)
        logger.error(
            "dead letter%s: %s message %s on queue %s: %s",
            f" #{stored}" if stored is not None else " (not stored, see above)",
            task or "(no task)",
            task_id or "(no id)",
            queue,
            poison,
        )
        if task_id is not None:
            try:
                request = AttributeDict(
                    name=task,
                    chord=None,
                    root_id=headers.get("root_id"),
                    errbacks=None,
                    correlation_id=task_id,
                    reply_to=None,
                    group=None,
                    parent_id=None,
                )
                self.app.backend.mark_as_failure(task_id, poison, request=request)
            except Exception:
                logger.exception("could not store the failure of dead letter %s", task_id)
            if self.event_dispatcher:
                self.event_dispatcher.send(
                    "task-failed", uuid=task_id, exception=repr(poison), traceback=""
                )
        message.ack()

    def _store(
        self,
        message: Any,
        poison: PoisonMessage,
        task: str | None,
        task_id: str | None,
        queue: str | None,
    ) -> int | None:
        from models import DeadLetter
        from worker.db import unit_of_work

        try:
            with unit_of_work() as session:
                row = DeadLetter(
                    received_at=dt.datetime.now(dt.UTC),
                    queue=queue,
                    task=task,
                    task_id=task_id,
                    reason_code=poison.code,
                    reason=poison.message,
                    body=_body_text(message),
                    headers=_safe_headers(message),
                )
                session.add(row)
                session.flush()
                return int(row.id)
        except Exception:
            # The database is down: the log line is then the only record (the message
            # is still acknowledged: redelivering a poison message helps no one).
            logger.exception(
                "could not store dead letter %s; body: %.2000s", task_id, _body_text(message)
            )
            return None
