"""docker-compose.yml and the Dockerfile: the production shape, checked without an engine.

No container engine runs in CI, so the compose file is parsed (PyYAML, and `docker-compose
config` / `docker compose config` where one is installed) and its commands are compared
with the ones the functional tests run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT, worker_command
from worker.commands import (
    CELERY,
    FLOWER_PORT,
    beat_arguments,
    compose_command,
    flower_arguments,
    worker_arguments,
)

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
APP_SERVICES = ("migrate", "worker", "beat", "flower")
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Z_]+):\?[^}]+\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _condition(service: dict[str, Any], on: str) -> str:
    return service["depends_on"][on]["condition"]


def test_the_stack_has_exactly_the_production_services(services) -> None:
    """Compose brings up PostgreSQL, Redis, a migration step, worker, beat and Flower."""
    assert set(services) == {"postgres", "redis", "migrate", "worker", "beat", "flower"}


def test_postgres_is_version_16_and_health_checked_with_pg_isready(services) -> None:
    """PostgreSQL 16 with a pg_isready health check and a volume for its data."""
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_redis_persists_append_only_and_never_evicts(services) -> None:
    """Redis keeps queued work across restarts (AOF) and refuses writes rather than evict."""
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_migration_is_a_one_shot_step_after_postgres_is_healthy(services) -> None:
    """The migration runs once (no restart) and only against a healthy PostgreSQL."""
    migrate = services["migrate"]
    assert migrate["command"] == ["billing", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert _condition(migrate, "postgres") == "service_healthy"


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_worker_and_beat_wait_for_the_migration_and_a_healthy_redis(services, name) -> None:
    """Worker and beat start only once the schema is migrated and Redis answers."""
    service = services[name]
    assert _condition(service, "migrate") == "service_completed_successfully"
    assert _condition(service, "redis") == "service_healthy"


def test_flower_waits_for_redis(services) -> None:
    """Flower starts once Redis answers."""
    assert _condition(services["flower"], "redis") == "service_healthy"


def test_every_condition_on_health_names_a_service_with_a_health_check(services) -> None:
    """A `service_healthy` dependency is only satisfiable if the service has a health check."""
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"


def test_worker_command_is_the_one_the_tests_run(services) -> None:
    """Compose's worker runs exactly the arguments the functional tests' workers run."""
    command = services["worker"]["command"]
    assert command == compose_command(worker_arguments())
    assert "-E" in command
    assert command[command.index("-Q") + 1].split(",") == [
        "intake",
        "closing",
        "invoicing",
        "charges",
    ]
    tested = worker_command("node@host")
    assert tested[:3] == [sys.executable, "-m", CELERY[0]]
    assert tested[3 : 3 + len(command) - 1] == command[1:]


def test_beat_command_uses_the_redis_lock_scheduler(services) -> None:
    """Compose's beat runs redbeat with the same arguments as the two-beat test."""
    command = services["beat"]["command"]
    assert command == compose_command(beat_arguments())
    assert command[command.index("-S") + 1] == "worker.beat:ResilientRedBeatScheduler"


def test_flower_takes_its_login_from_the_environment_with_no_default(services) -> None:
    """Flower's basic auth comes from FLOWER_BASIC_AUTH, required, never written in the repo."""
    flower = services["flower"]
    assert flower["command"] == compose_command(flower_arguments())
    assert not any("basic" in part for part in flower["command"])
    match = REQUIRED.match(flower["environment"]["FLOWER_BASIC_AUTH"])
    assert match is not None
    assert match["name"] == "FLOWER_BASIC_AUTH"
    assert any(port.endswith(f":{FLOWER_PORT}") for port in flower["ports"])


def test_app_services_share_the_image_and_the_billing_settings(services) -> None:
    """Migration, worker, beat and Flower run one image with PostgreSQL and Redis configured."""
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["BILLING_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in environment["BILLING_DATABASE_URL"]
        assert environment["BILLING_BROKER_URL"] == "redis://redis:6379/0"


def test_no_secret_is_written_in_the_compose_file(services) -> None:
    """Every password comes from the environment as a required variable, never a default."""
    assert REQUIRED.match(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    for name in APP_SERVICES:
        url = services[name]["environment"]["BILLING_DATABASE_URL"]
        password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert REQUIRED.match(password), f"{name}'s database password is not required from env"
    text = COMPOSE_FILE.read_text()
    assert re.search(r"\$\{(POSTGRES_PASSWORD|FLOWER_BASIC_AUTH):-", text) is None


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def _run_compose_config(cli: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def test_compose_itself_accepts_the_file_and_demands_the_secrets() -> None:
    """`docker-compose config` accepts the file with the secrets set, and refuses without."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    env = {
        k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")
    }

    missing = _run_compose_config(cli, env)
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr or "FLOWER_BASIC_AUTH" in missing.stderr

    configured = _run_compose_config(
        cli, {**env, "POSTGRES_PASSWORD": "s3cret", "FLOWER_BASIC_AUTH": "ops:pw"}
    )
    assert configured.returncode == 0, configured.stderr
    resolved = yaml.safe_load(configured.stdout)["services"]
    assert resolved["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "ops:pw"
    assert resolved["worker"]["command"] == compose_command(worker_arguments())
    assert "billing:s3cret@postgres" in resolved["worker"]["environment"]["BILLING_DATABASE_URL"]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_is_python_311_slim_and_runs_as_a_non_root_user() -> None:
    """The image builds on python:3.11-slim and its last USER is not root."""
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in instructions if op == "USER"]
    assert users
    assert users[-1] not in ("root", "0")


def test_the_image_installs_the_pinned_lock_and_copies_files_that_exist() -> None:
    """Dependencies come pinned from requirements.lock; every copied path is in the repo."""
    instructions = _dockerfile_instructions()
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "--constraint requirements.lock" in runs
    for op, arg in instructions:
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (REPO_ROOT / source).exists(), source
    assert not any(
        op in ("ENV", "ARG") and re.search(r"(?i)(password|secret|token)", arg)
        for op, arg in instructions
    )


def test_the_build_context_leaves_out_local_state() -> None:
    """.dockerignore keeps the virtualenv, git history, local data and .env out of the image."""
    ignored = set(Path(REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".billing-data", ".env"} <= ignored
