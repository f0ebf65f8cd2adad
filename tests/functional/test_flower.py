"""Flower, started from its package as docker-compose starts it, watching the run's worker.

Flower reads the same settings as the worker (the test Redis under this run's key prefix)
and its login from FLOWER_BASIC_AUTH, as in docker-compose.yml. Tasks go through the real
broker and the session's real worker; what Flower shows is read over its HTTP API.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO_ROOT, spawn_logged, wait_for
from worker.commands import compose_command, flower_arguments

pytestmark = pytest.mark.functional

LOGIN = "ops:correct-horse"
EXAMPLES = REPO_ROOT / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Flower:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            *compose_command(flower_arguments(port=self.port)),
            "--address=127.0.0.1",
        ]
        self.process = spawn_logged(
            command, log_path=log_path, env={**os.environ, "FLOWER_BASIC_AUTH": LOGIN}
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, path: str, *, login: str | None = LOGIN) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if login is not None:
            token = base64.b64encode(login.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def api(self, path: str) -> Any:
        status, body = self.request(path)
        assert status == 200, (status, body[:500])
        return json.loads(body)

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"flower exited:\n{self.log()}")
        try:
            return self.request("/healthcheck", login=None) == (200, b"OK")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@pytest.fixture
def flower(worker, tmp_path) -> Iterator[Flower]:
    process = Flower(tmp_path / "flower.log")
    try:
        wait_for(process.answers, timeout=60, interval=0.2, what="flower answers")
        # Flower knows a worker only from its events (heartbeats every 2 s): once it shows
        # the worker online, its event stream under the run's key prefix is flowing.
        wait_for(
            lambda: process.api("/api/workers?status=true").get(worker.nodename) is True,
            timeout=60,
            interval=0.5,
            what=f"flower sees the worker online:\n{process.log()}",
        )
        yield process
    finally:
        process.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample with exactly these labels (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def succeeded_in_metrics(flower: Flower, task: str, worker_name: str) -> float:
    """Flower's /metrics count of task-succeeded events for `task` on `worker_name`."""
    status, body = flower.request("/metrics", login=None)
    assert status == 200
    return metric(
        body.decode(), "flower_events_total", task=task, type="task-succeeded", worker=worker_name
    )


def test_flower_refuses_its_api_and_dashboard_without_the_login(flower) -> None:
    """Without credentials (or with wrong ones) the API and dashboard answer 401."""
    assert flower.request("/api/workers", login=None)[0] == 401
    assert flower.request("/api/tasks", login=None)[0] == 401
    assert flower.request("/", login=None)[0] == 401
    assert flower.request("/api/workers", login="ops:wrong")[0] == 401


def test_flower_shows_the_worker_and_each_task_by_name_with_its_result(
    flower, worker, celery_app
) -> None:
    """Tasks run by the real worker appear in Flower by name, SUCCESS, args and result."""
    from tasks.health import ping

    sent = [ping.delay(f"flower-{n}") for n in range(3)]
    for result in sent:
        result.get(timeout=30)
    ids = {result.id for result in sent}

    ours = wait_for_flower_tasks(flower, "billing.ping", ids)
    for task in ours.values():
        assert task["name"] == "billing.ping"
        assert task["worker"] == worker.nodename
        assert "flower-" in task["args"]
        assert "pong" in task["result"]

    workers = flower.api(f"/api/workers?refresh=1&workername={worker.nodename}")
    assert {queue["name"] for queue in workers[worker.nodename]["active_queues"]} == {
        "intake",
        "closing",
        "invoicing",
        "charges",
    }


@pytest.fixture
def catalog(clean_db, worker):  # type: ignore[no-untyped-def]
    """The example catalog, committed, with the session worker running."""
    from models.catalog_file import parse_catalog
    from tasks.catalog import load_catalog
    from worker.db import unit_of_work

    with unit_of_work() as session:
        load_catalog(session, parse_catalog((EXAMPLES / "catalog.yaml").read_text()))
    return clean_db


def wait_for_flower_tasks(flower: Flower, name: str, ids: set[str]) -> dict[str, Any]:
    """Flower's view of the tasks `ids` of type `name`, once all of them are SUCCESS."""

    def all_succeeded() -> dict[str, Any] | None:
        tasks = flower.api(f"/api/tasks?taskname={name}")
        ours = {task_id: task for task_id, task in tasks.items() if task_id in ids}
        if len(ours) == len(ids) and all(t["state"] == "SUCCESS" for t in ours.values()):
            return ours
        return None

    return wait_for(all_succeeded, timeout=30, interval=0.5, what=f"flower shows {name}")


def test_flower_shows_customer_intake_with_its_arguments_and_outcome(
    flower, worker, catalog
) -> None:
    """Customers taken in by the real worker appear as billing.customers.create, SUCCESS."""
    from tasks.intake import create_customer_task

    lines = [
        json.loads(line) for line in (EXAMPLES / "customers.jsonl").read_text().splitlines()[:2]
    ]
    sent = [create_customer_task.delay(line) for line in lines]
    outcomes = [result.get(timeout=30) for result in sent]
    assert [outcome["status"] for outcome in outcomes] == ["created", "created"]

    shown = wait_for_flower_tasks(flower, "billing.customers.create", {r.id for r in sent})
    for result, line in zip(sent, lines, strict=True):
        task = shown[result.id]
        assert task["worker"] == worker.nodename
        assert line["name"] in task["args"]
        assert "'status': 'created'" in task["result"]
    assert succeeded_in_metrics(flower, "billing.customers.create", worker.nodename) == 2


def test_flower_shows_the_period_close_and_the_invoicing_it_queued(flower, worker, catalog) -> None:
    """A close run by the real worker shows as billing.periods.close_due, SUCCESS, with its
    summary, and the invoice generation it queued after commit as billing.invoices.generate."""
    from sqlalchemy import func, select

    from models import Invoice
    from tasks.closing import close_due_task
    from tasks.intake import create_customer_task
    from worker.db import unit_of_work

    customer = {
        "reseller": "acme",
        "name": "Flower Watch Ltd",
        "business_model": "Hosted IP PBX",
        "customer_class": "Business",
        "billing_period": "daily",
        "billing_timezone": "Europe/Madrid",
        "balance_control": "postpaid",
        "currency": "EUR",
        "custom_data": {"tax_code": "ES-1"},
        "created_at": "2026-03-01T12:00:00Z",
    }
    assert create_customer_task.delay(customer).get(timeout=30)["status"] == "created"
    # Three local days have ended by then: March 1, 2 and 3 in Madrid.
    close = close_due_task.delay("2026-03-03T23:00:00Z")
    summary = close.get(timeout=60)

    shown = wait_for_flower_tasks(flower, "billing.periods.close_due", {close.id})[close.id]
    assert shown["worker"] == worker.nodename
    assert "2026-03-03T23:00:00Z" in shown["args"]
    assert summary["closed"] == 3
    assert "'closed': 3" in shown["result"]

    def invoices_issued() -> int:
        with unit_of_work() as session:
            return int(session.scalar(select(func.count()).select_from(Invoice)) or 0)

    wait_for(lambda: invoices_issued() == 3, timeout=30, what="three invoices")
    generate = wait_for(
        lambda: {
            task_id: task
            for task_id, task in flower.api("/api/tasks?taskname=billing.invoices.generate").items()
            if task["state"] == "SUCCESS" and task.get("parent_id") == close.id
        },
        timeout=30,
        interval=0.5,
        what="flower shows the invoice generation the close queued",
    )
    assert all(task["worker"] == worker.nodename for task in generate.values())
    assert succeeded_in_metrics(flower, "billing.periods.close_due", worker.nodename) == 1
    assert succeeded_in_metrics(flower, "billing.invoices.generate", worker.nodename) == len(
        generate
    )


def test_flower_metrics_count_the_tasks_sent_and_succeeded(flower, worker) -> None:
    """/metrics counts the sent (by the producer) and succeeded (by the worker) task events."""
    from tasks.health import ping

    def succeeded_count() -> float:
        return succeeded_in_metrics(flower, "billing.ping", worker.nodename)

    before = succeeded_count()
    for n in range(2):
        ping.delay(f"metrics-{n}").get(timeout=30)
    wait_for(lambda: succeeded_count() >= before + 2, timeout=30, what="metrics count the pings")

    text = flower.request("/metrics", login=None)[1].decode()
    assert metric(text, "flower_worker_online", worker=worker.nodename) == 1.0
    assert (
        metric(
            text,
            "flower_events_total",
            task="billing.ping",
            type="task-received",
            worker=worker.nodename,
        )
        >= before + 2
    )
    # task-sent events come from the producer (this test process), not the worker.
    sent = [
        line
        for line in text.splitlines()
        if line.startswith("flower_events_total{")
        and 'type="task-sent"' in line
        and 'task="billing.ping"' in line
    ]
    assert sent, "task_send_sent_event is off: Flower never saw the tasks being sent"
