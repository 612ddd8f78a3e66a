"""Start engines and processes, watch them, stop everything on SIGINT/SIGTERM (or when our parent dies)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg
import httpx

from services.gateway.config import Settings as GatewaySettings
from shared.db import plain_dsn
from shared.devstack.processes import ProcessSpec, gateway_upstream_env, platform_processes
from shared.engines import (
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedRedis,
    die_with_parent,
    port_open,
)
from shared.kafka import ensure_topics
from shared.migrations import upgrade

DATABASE_NAME = "platform"
MAX_RESTARTS = 5


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)  # noqa: T201 - the supervisor talks to a terminal


@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, var_dir: Path) -> None:
        self.var = var_dir.resolve()
        self.logs = self.var / "log"
        self.postgres: EmbeddedPostgres | None = None
        self.kafka: EmbeddedKafka | None = None
        self.redis: EmbeddedRedis | None = None
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self._stopping = asyncio.Event()

    # engines -------------------------------------------------------------------------------------------------
    async def start_engines(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = os.environ
        if env.get("DATABASE_URL"):
            self.env["DATABASE_URL"] = env["DATABASE_URL"]
        else:
            self.postgres = EmbeddedPostgres(
                self.var / "postgres", int(env.get("POSTGRES_PORT", "55432")), self.logs / "postgres.log"
            )
            await asyncio.to_thread(self.postgres.start)
            await self._create_database(self.postgres.url)
            self.env["DATABASE_URL"] = self.postgres.url.rsplit("/", 1)[0] + f"/{DATABASE_NAME}"
        if env.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        else:
            self.kafka = EmbeddedKafka(int(env.get("KAFKA_PORT", "9092")), self.logs / "kafka.log")
            await asyncio.to_thread(self.kafka.start)
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.bootstrap
        if env.get("REDIS_URL"):
            self.env["REDIS_URL"] = env["REDIS_URL"]
        else:
            self.redis = EmbeddedRedis(int(env.get("REDIS_PORT", "56379")), self.var / "redis", self.logs / "redis.log")
            await asyncio.to_thread(self.redis.start)
            self.env["REDIS_URL"] = self.redis.url

    @staticmethod
    async def _create_database(admin_url: str) -> None:
        conn = await asyncpg.connect(plain_dsn(admin_url))
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME):
                await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            await conn.close()

    async def prepare(self) -> None:
        await asyncio.to_thread(upgrade, self.env["DATABASE_URL"])
        partitions = int(os.environ.get("KAFKA_PARTITIONS", "12"))
        await ensure_topics(self.env["KAFKA_BOOTSTRAP_SERVERS"], partitions)

    # processes -----------------------------------------------------------------------------------------------
    def child_env(self, specs: list[ProcessSpec]) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("APP_ENV", "dev")
        env.setdefault("STORAGE_DIR", str(self.var / "storage"))
        env.setdefault("AUTH_SIGNING_KEYS_DIR", str(self.var / "keys"))
        env.update(self.env)
        for name, url in gateway_upstream_env(specs).items():
            env.setdefault(name, url)  # an explicit URL in the environment wins (e.g. a benchmark's own upstream)
        return env

    def spawn(self, spec: ProcessSpec, env: dict[str, str]) -> Child:
        log = open(self.logs / f"{spec.name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", spec.module],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        return Child(spec, proc, log)

    async def start_processes(self) -> None:
        specs = platform_processes()
        taken = [s for s in specs if port_open(s.port)]
        if taken:
            raise RuntimeError("ports already in use: " + ", ".join(f"{s.name}:{s.port}" for s in taken))
        env = self.child_env(specs)
        self.env_for_children = env
        self.children = [self.spawn(spec, env) for spec in specs]

    async def wait_healthy(self, limit_seconds: float = 90) -> str:
        gateway = next(c for c in self.children if c.spec.name == "gateway")
        url = f"http://127.0.0.1:{gateway.spec.port}/api/plugins/health"
        deadline = time.monotonic() + limit_seconds
        status = "unreachable"
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline and not self._stopping.is_set():
                for child in self.children:
                    if child.proc.poll() is not None:
                        raise RuntimeError(f"{child.spec.name} exited during start-up; see {child.log.name}")
                try:
                    status = (await client.get(url)).json().get("status", "unknown")
                    if status == "healthy":
                        return status
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        return status

    async def watch(self) -> None:
        """Restart a process that died (bounded), restart the in-memory broker and recreate its topics."""
        while not self._stopping.is_set():
            await asyncio.sleep(0.5)
            if self._stopping.is_set():
                return
            if self.kafka is not None and not self.kafka.running:
                say("broker exited; restarting it (the embedded broker keeps nothing: topics are recreated)")
                await asyncio.to_thread(self.kafka.start)
                await ensure_topics(self.kafka.bootstrap, int(os.environ.get("KAFKA_PARTITIONS", "12")))
            for i, child in enumerate(self.children):
                code = child.proc.poll()
                if code is None or self._stopping.is_set():
                    continue
                if child.restarts >= MAX_RESTARTS:
                    continue
                say(f"{child.spec.name} exited with {code}; restarting (log: {child.log.name})")
                child.log.close()
                replacement = self.spawn(child.spec, self.env_for_children)
                replacement.restarts = child.restarts + 1
                self.children[i] = replacement

    def stop(self) -> None:
        self._stopping.set()
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 25
        for child in self.children:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(5)
            child.log.close()
        for engine in (self.kafka, self.redis, self.postgres):
            if engine is not None:
                engine.stop()

    def banner(self, status: str, started: float) -> None:
        gateway = next(c for c in self.children if c.spec.name == "gateway")
        base = f"http://127.0.0.1:{gateway.spec.port}"
        lines = [
            f"platform is {status} after {time.monotonic() - started:.1f}s",
            f"  API      {base}/api/plugins   (health: {base}/api/plugins/health)",
            f"  JWKS     {base}/.well-known/jwks.json",
            f"  probes   http://127.0.0.1:{GatewaySettings().internal_port}/health/ready, /metrics (internal listener)",
            f"  data     {self.var}   logs: {self.logs}/<process>.log",
            f"  postgres {self.env['DATABASE_URL']}",
            f"  kafka    {self.env['KAFKA_BOOTSTRAP_SERVERS']}   redis {self.env['REDIS_URL']}",
            "  processes " + ", ".join(f"{c.spec.name}:{c.spec.port}" for c in self.children),
            "Ctrl-C stops everything.",
        ]
        for line in lines:
            say(line)


async def run(var_dir: Path) -> int:
    die_with_parent()  # if `make` (our parent) is killed, we still get SIGTERM and clean up
    supervisor = Supervisor(var_dir)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    started = time.monotonic()
    code = 0
    try:
        say("starting engines")
        await supervisor.start_engines()
        say("applying migrations and creating topics")
        await supervisor.prepare()
        say("starting processes")
        await supervisor.start_processes()
        health = asyncio.create_task(supervisor.wait_healthy())
        stopper = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({health, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if health.done():
            supervisor.banner(health.result(), started)
            watcher = asyncio.create_task(supervisor.watch())
            await stop_requested.wait()
            watcher.cancel()
        else:
            health.cancel()
    except Exception as exc:
        say(f"start-up failed: {exc}")
        code = 1
    finally:
        say("stopping")
        await asyncio.to_thread(supervisor.stop)
        say("stopped")
    return code
