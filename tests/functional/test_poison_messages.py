"""Poison messages sent raw through Redis to a real worker: each becomes one dead letter
(table row, log line, FAILURE result) and the worker goes on with the next good message."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from celery.result import AsyncResult
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import DeadLetter
from tests.support import wait_for
from worker.cli import main

pytestmark = pytest.mark.functional


def _deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def _intake_body(custom_data: str) -> bytes:
    payload = '{"reseller": "acme", "name": "Deep Ltd", "custom_data": {"a": ' + custom_data + "}}"
    return f'[[{payload}], {{}}, {{"callbacks": null, "errbacks": null, "chain": null}}]'.encode()


# (what, task, raw body, expected dead-letter code)
POISON: list[tuple[str, str, bytes, str]] = [
    (
        "custom data 700 levels deep",
        "billing.customers.create",
        _intake_body(_deep(700)),
        "too_deep",
    ),
    ("100k levels deep", "billing.customers.create", _deep(100_000).encode(), "too_deep"),
    ("a 5,000-digit integer", "billing.customers.create", _intake_body("1" * 5000), "not_json"),
    (
        "invalid UTF-8",
        "billing.customers.create",
        _intake_body('"caf\xe9"').replace(b"\xc3\xa9", b"\xe9"),
        "not_utf8",
    ),
    (
        "an object, not [args, kwargs, options]",
        "billing.customers.create",
        b'{"name": "x"}',
        "wrong_shape",
    ),
    ("a bare number", "billing.charges.record", b"5", "wrong_shape"),
    (
        "arguments the task does not take",
        "billing.customers.create",
        b'[[], {"x": 1}, {}]',
        "wrong_arguments",
    ),
]


def _publish_raw(app: Any, task: str, body: bytes) -> str:
    """Put `body` on the task's queue as is: the bytes a broken or hostile producer sends."""
    task_id = str(uuid.uuid4())
    queue = app.amqp.router.route({}, task)["queue"].name
    with app.connection_for_write() as connection:
        connection.Producer().publish(
            body,
            exchange="",
            routing_key=queue,
            content_type="application/json",
            content_encoding="utf-8",
            headers={"lang": "py", "task": task, "id": task_id, "root_id": task_id},
            declare=[],
        )
    return task_id


def test_poison_messages_are_dead_lettered_and_the_worker_lives(
    celery_app, worker, clean_db
) -> None:
    """Every kind of poison message costs one dead letter with its reason, never the
    worker, and a good message sent after them is processed."""
    from tasks.health import ping

    assert b"\xe9" in POISON[3][2]
    assert b"\xc3" not in POISON[3][2]
    sent = [(what, _publish_raw(celery_app, task, body), code) for what, task, body, code in POISON]
    good = ping.delay("after the poison")

    assert good.get(timeout=60)["payload"] == "after the poison"

    def dead_letters() -> list[DeadLetter]:
        with Session(clean_db) as session:
            rows = list(session.scalars(select(DeadLetter)))
        return rows if len(rows) >= len(POISON) else []

    rows = {row.task_id: row for row in wait_for(dead_letters, timeout=30, what="dead letters")}
    assert worker.process is not None
    assert worker.process.poll() is None
    for what, task_id, code in sent:
        row = rows[task_id]
        assert row.reason_code == code, (what, row.reason)
        assert row.reason, what
        assert row.body, what
        result = AsyncResult(task_id, app=celery_app)
        assert result.state == "FAILURE", what
        assert code in str(result.result), what
    assert "dead letter #" in worker.log_tail(400)
    assert "Unrecoverable error" not in worker.log_tail(400)
    assert len(rows) == len(POISON)  # acknowledged: none came back to be stored twice

    listed = CliRunner().invoke(main, ["dead-letters", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(row["code"] for row in json.loads(listed.output)) == sorted(
        code for _what, _task, _body, code in POISON
    )
