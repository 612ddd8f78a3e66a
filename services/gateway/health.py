"""``/api/plugins/health``: real checks of every dependency, cached briefly so probes cannot overload them.

``down`` (503) when the core path cannot work: the database, authentication or rendering API is unreachable.
``degraded`` when anything else is: the broker (events wait in the outbox), Redis, storage, a worker, webhooks
or telemetry.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from services.gateway.config import Settings
from shared.db import plain_dsn
from shared.kafka import probe_broker
from shared.storage import Storage

HEALTHY, UNHEALTHY = "healthy", "unhealthy"
CORE_CHECKS = ("database", "authentication", "rendering")


class HealthChecker:
    def __init__(self, settings: Settings, client: aiohttp.ClientSession, redis: Redis, storage: Storage) -> None:
        self.settings = settings
        self.client = client
        self.redis = redis
        self.storage = storage
        self._cached: tuple[float, dict[str, str]] | None = None
        self._lock = asyncio.Lock()

    async def _service_ready(self, name: str) -> bool:
        url = self.settings.upstreams()[name] + "/health/ready"
        timeout = aiohttp.ClientTimeout(total=self.settings.health_check_timeout_seconds)
        async with self.client.get(url, timeout=timeout) as response:
            return response.status == 200

    async def _database(self) -> bool:
        conn = await asyncpg.connect(
            plain_dsn(self.settings.database_url), timeout=self.settings.health_check_timeout_seconds
        )
        try:
            return await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    async def _redis(self) -> bool:
        return bool(await self.redis.ping())

    async def _storage(self) -> bool:
        await self.storage.check()
        return True

    async def _broker(self) -> bool:
        return await probe_broker(self.settings.kafka_bootstrap_servers, self.settings.health_check_timeout_seconds)

    async def _guard(self, check: Any) -> bool:
        try:
            return bool(await asyncio.wait_for(check, self.settings.health_check_timeout_seconds + 0.5))
        except Exception:
            return False

    async def _run_checks(self) -> dict[str, str]:
        names = (
            "database",
            "cache",
            "storage",
            "events",
            "auth",
            "renders",
            "render-worker",
            "credits",
            "webhooks",
            "webhooks-dispatcher",
            "telemetry",
        )
        coros = [self._database(), self._redis(), self._storage(), self._broker()]
        coros += [self._service_ready(n) for n in names[4:]]
        results = dict(zip(names, await asyncio.gather(*(self._guard(c) for c in coros)), strict=True))

        def status(*keys: str) -> str:
            return HEALTHY if all(results[k] for k in keys) else UNHEALTHY

        return {
            "api": HEALTHY,
            "authentication": status("auth"),
            "rendering": status("renders"),
            "credits": status("credits"),
            "storage": status("storage"),
            "events": status("events"),
            "webhooks": status("webhooks"),
            "workers": status("render-worker", "webhooks-dispatcher"),
            "telemetry": status("telemetry"),
            "database": status("database"),
            "cache": status("cache"),
        }

    async def services(self) -> dict[str, str]:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.settings.health_cache_seconds:
            return self._cached[1]
        async with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.settings.health_cache_seconds:
                return self._cached[1]
            services = await self._run_checks()
            self._cached = (time.monotonic(), services)
            return services


def overall_status(services: dict[str, str]) -> str:
    if any(services.get(k) != HEALTHY for k in CORE_CHECKS):
        return "down"
    if any(v != HEALTHY for v in services.values()):
        return "degraded"
    return "healthy"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
