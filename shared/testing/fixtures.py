"""Pytest plugin: real engines chosen per engine (URL in the environment, else Docker, else embedded).

Tests never touch a running ``make run``: they use their own ports, their own database (a fresh one per session,
dropped at the end) and their own data directory.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.gateway.config import Settings as GatewaySettings
from shared.db import plain_dsn
from shared.devstack.processes import LISTENER_PORT_VARIABLES, PROCESS_PORT_VARIABLES
from shared.engines import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, free_port, stop_process
from shared.kafka import ensure_topics
from shared.migrations import upgrade

TEST_PARTITIONS = 3
OPERATOR_EMAIL = "operator@example.com"
FAKE_GEMINI_KEY = "fake-gemini-key-for-tests"


def docker_available() -> bool:
    """True when a Docker engine answers and testcontainers is installed (``pip install testcontainers``)."""
    if not shutil.which("docker") or importlib.util.find_spec("testcontainers") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=10)
    return probe.returncode == 0


@contextmanager
def engine_directory(prefix: str = "plugin-platform-") -> Iterator[Path]:
    """A directory for embedded engines outside pytest's temp tree.

    The embedded PostgreSQL runs as an unprivileged user when tests run as root, so it must be able to traverse
    every parent directory; pytest resets its own temp root to 0700 whenever a pytest session starts, which would
    cut a running server off from its data mid-run.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def engine_dir() -> Iterator[Path]:
    with engine_directory() as path:
        yield path


@pytest.fixture(scope="session")
def postgres_server_url(engine_dir: Path) -> Iterator[str]:
    """An admin URL of a PostgreSQL server: ``DATABASE_URL`` wins, then Docker, then the embedded wheel."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as container:
            yield container.get_connection_url()
        return
    server = EmbeddedPostgres(engine_dir / "postgres", free_port(), engine_dir / "postgres.log")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def empty_database(server_url: str) -> Iterator[str]:
    """Create a uniquely named, empty database; drop it afterwards (whoever is still connected)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = plain_dsn(server_url)

    async def admin_exec(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(admin_exec(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _run(admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def migrated_database(server_url: str) -> Iterator[str]:
    """A fresh database with every service's migrations applied; dropped afterwards."""
    with empty_database(server_url) as url:
        upgrade(url)
        yield url


def _run(coro: Coroutine[Any, Any, object]) -> None:
    """Run a coroutine from sync fixture code, even when the test's event loop is already running."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """The session's database (the stack uses it too)."""
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def isolated_database_url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test alone: no stack process relays or consumes from it."""
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap(engine_dir: Path) -> Iterator[str]:
    """A Kafka-protocol broker with the platform's topics: ``KAFKA_BOOTSTRAP_SERVERS`` wins, else embedded."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        _run(ensure_topics(bootstrap, TEST_PARTITIONS))
        yield bootstrap
        return
    broker = EmbeddedKafka(free_port(), engine_dir / "kafka.log")
    broker.start()
    _run(ensure_topics(broker.bootstrap, TEST_PARTITIONS))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextmanager
def killable_broker(log_dir: Path) -> Iterator[EmbeddedKafka]:
    """An embedded broker with the platform's topics that the caller may kill, stop and start (an external one
    cannot be stopped by a test)."""
    broker = EmbeddedKafka(free_port(), log_dir / "kafka.log")
    broker.start()
    _run(ensure_topics(broker.bootstrap, TEST_PARTITIONS))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    """A broker of this test alone, which it may stop and start."""
    with killable_broker(tmp_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_url(engine_dir: Path) -> Iterator[str]:
    """``REDIS_URL`` wins, else the embedded redis-server (database 15 of an external one, to stay apart)."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = EmbeddedRedis(free_port(), engine_dir / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test alone, to stop or restart mid-test (the session's Redis is never touched)."""
    server = EmbeddedRedis(free_port(), tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    """The whole platform started by the supervisor against the test engines."""

    gateway_url: str
    service_urls: dict[str, str]
    env: dict[str, str]
    var_dir: Path
    supervisor_pid: int = 0

    @property
    def gateway_internal_url(self) -> str:
        """The gateway's internal listener: probes and metrics."""
        return f"http://127.0.0.1:{self.env['GATEWAY_INTERNAL_PORT']}"


def _stack_env(
    database_url: str, kafka: str, redis: str, var_dir: Path, extra: dict[str, str]
) -> tuple[dict[str, str], dict[str, int]]:
    ports = {name: free_port() for name in (*PROCESS_PORT_VARIABLES.values(), *LISTENER_PORT_VARIABLES)}
    env = dict(os.environ)
    env.update({k: str(v) for k, v in ports.items()})
    env.update(
        {
            "APP_ENV": "dev",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "REDIS_URL": redis,
            "KAFKA_PARTITIONS": str(TEST_PARTITIONS),
            "VAR_DIR": str(var_dir),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['GATEWAY_PORT']}",
            "LOG_LEVEL": "INFO",
            "ADMIN_EMAILS": OPERATOR_EMAIL,
            "GATEWAY_AUTH_IP_RATE_LIMIT_PER_MINUTE": "100000",  # every test user signs up from 127.0.0.1
            "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
            "GATEWAY_AUTH_FAILURES_PER_MINUTE": "100000",  # the attack-matrix tests fail on purpose, from one IP
            "AUTH_ARGON2_MEMORY_KIB": "19456",
            "AUTH_ARGON2_TIME_COST": "2",
            "RENDERS_LEASE_SECONDS": "4",
            "RENDERS_WATCHDOG_INTERVAL_SECONDS": "2",
            "RENDERS_PENDING_REQUEUE_SECONDS": "10",
            "WEBHOOK_RETRY_SCHEDULE": "1,2,2,2,2",  # retries within seconds; the tests that need more start their own
        }
    )
    env.update(extra)
    return env, ports


@contextmanager
def running_stack(
    database_url: str, kafka: str, redis: str, var_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Start every process of the platform, as ``make run`` does, on free ports; stop them all afterwards."""
    env, ports = _stack_env(database_url, kafka, redis, var_dir, extra_env or {})
    log = var_dir / "supervisor.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.devstack", "run", "--var-dir", str(var_dir)],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("stack exited: " + log.read_text()[-3000:])
            try:
                if httpx.get(gateway + "/api/plugins/health", timeout=2).json().get("status") == "healthy":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("stack not healthy: " + log.read_text()[-3000:])
            time.sleep(0.2)
        services = {
            name: f"http://127.0.0.1:{ports[var]}" for name, var in PROCESS_PORT_VARIABLES.items() if name != "gateway"
        }
        yield Stack(gateway, services, env, var_dir, proc.pid)
    finally:
        stop_process(proc, signal.SIGTERM, 40)


@pytest.fixture(scope="session")
def fake_gemini_url() -> Iterator[str]:
    """A local server speaking the Gemini image API, so the stack has an AI model configured for tests."""
    from shared.testing.fake_gemini import build_fake_gemini
    from shared.testing.servers import serve_in_thread

    with serve_in_thread(build_fake_gemini()) as url:
        yield url


def gemini_env(url: str) -> dict[str, str]:
    return {"RENDERS_GEMINI_API_KEY": FAKE_GEMINI_KEY, "RENDERS_GEMINI_BASE_URL": url}


@pytest.fixture(scope="session")
def stack(
    database_url: str,
    kafka_bootstrap: str,
    redis_url: str,
    fake_gemini_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The session's platform; tests that stop engines or kill processes start their own (``running_stack``)."""
    var_dir = tmp_path_factory.mktemp("stack-var")
    with running_stack(database_url, kafka_bootstrap, redis_url, var_dir, gemini_env(fake_gemini_url)) as running:
        yield running


@pytest.fixture
async def gateway_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        yield client


@dataclass
class PluginUser:
    """A user signed up through the gateway, with a fresh token pair."""

    email: str
    password: str
    user_id: str
    access_token: str
    refresh_token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def sign_up(client: httpx.AsyncClient, email: str | None = None, password: str | None = None) -> PluginUser:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    password = password or f"pw-{uuid.uuid4().hex}"
    response = await client.post("/api/plugins/auth/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    body = response.json()
    return PluginUser(email, password, body["user"]["id"], body["access_token"], body["refresh_token"])


@pytest.fixture
async def user(gateway_client: httpx.AsyncClient) -> PluginUser:
    return await sign_up(gateway_client)


@pytest.fixture(scope="session")
async def operator(stack: Stack) -> PluginUser:
    """The session's operator (``ADMIN_EMAILS`` of the stack), signed up once."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        return await sign_up(client, email=OPERATOR_EMAIL)


def gateway_settings(stack: Stack, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "app_env": "dev",
        "database_url": stack.env["DATABASE_URL"],
        "redis_url": stack.env["REDIS_URL"],
        "kafka_bootstrap_servers": stack.env["KAFKA_BOOTSTRAP_SERVERS"],
        "storage_dir": str(stack.var_dir / "storage"),
        "auth_url": stack.service_urls["auth"],
        "renders_url": stack.service_urls["renders"],
        "render_worker_url": stack.service_urls["render-worker"],
        "credits_url": stack.service_urls["credits"],
        "webhooks_url": stack.service_urls["webhooks"],
        "webhooks_dispatcher_url": stack.service_urls["webhooks-dispatcher"],
        "telemetry_url": stack.service_urls["telemetry"],
        "health_cache_seconds": 0,
        # As generous as the session stack's gateway: the per-IP sign-in window lives in the shared Redis, and
        # the session's other tests sign in from 127.0.0.1 too. A test of a limit sets the one it tests.
        "auth_ip_rate_limit_per_minute": 100_000,
        "auth_failures_per_minute": 100_000,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The auth operator CLI against the stack (as an operator would run it)."""
    env = dict(stack.env)
    env["AUTH_CREDITS_URL"] = stack.service_urls["credits"]
    env["AUTH_SIGNING_KEYS_DIR"] = str(stack.var_dir / "keys")
    return subprocess.run(
        [sys.executable, "-m", "services.auth.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
