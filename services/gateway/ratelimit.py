"""Rate limits in Redis, shared by every gateway replica: one atomic script per check.

Sliding-window estimate over two fixed windows (the previous window's count weighted by how much of it still
overlaps the last ``window`` seconds, plus the current count): smooth at window edges, two keys per subject, one
round trip. A refused request is not counted, so a client that waits ``Retry-After`` gets through.

When Redis does not answer, limits do not switch off: the same estimate runs in this process (``LocalWindows``),
so each replica enforces the limit on what it sees (N replicas admit at most N times the limit). One log line
when falling back and one when Redis answers again; while it is away Redis is retried at most once per
``RETRY_REDIS_SECONDS``, so a dead Redis costs requests no connect timeout each.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

import orjson
import structlog
from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.emails import InvalidEmailError, normalize_email

log = structlog.stdlib.get_logger(__name__)

SLIDING_WINDOW = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit = tonumber(ARGV[1])
local weight = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local estimate = math.floor(previous * weight) + current
if estimate >= limit then
  return {0, estimate, current, previous}
end
current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('EXPIRE', KEYS[1], ttl) end
return {1, math.floor(previous * weight) + current, current, previous}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset_seconds).encode()),
        ]


class LocalWindows:
    """The Lua script's arithmetic over in-process counters: the fallback while Redis is away.

    Memory is bounded: at most ``max_keys`` window counters (least recently used dropped first; a dropped counter
    can only make the limit more lenient for that one subject, never refuse anyone wrongly).
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._counts: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def _get(self, key: str) -> int:
        count = self._counts.get(key)
        if count is None:
            return 0
        self._counts.move_to_end(key)
        return count

    def hit(self, keys: list[str], limit: int, weight: float) -> tuple[int, int, int, int]:
        """``(allowed, estimate, current, previous)`` exactly as ``SLIDING_WINDOW`` returns them."""
        current, previous = self._get(keys[0]), self._get(keys[1])
        estimate = math.floor(previous * weight) + current
        if estimate >= limit:
            return 0, estimate, current, previous
        current += 1
        self._counts[keys[0]] = current
        self._counts.move_to_end(keys[0])
        while len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)
        return 1, math.floor(previous * weight) + current, current, previous

    def forget_before(self, index: int) -> None:
        """Drop counters of windows older than ``index - 1`` (they no longer weigh on any estimate)."""
        stale = [key for key in self._counts if int(key.rsplit(":", 1)[1]) < index - 1]
        for key in stale:
            del self._counts[key]


IN_PROCESS = Gauge(
    "plugin_rate_limit_in_process",
    "1 while this gateway limits in process because Redis is unreachable (limits are then per replica)",
)


class RateLimiter:
    RETRY_REDIS_SECONDS = 1.0

    def __init__(self, redis: Redis, window_seconds: int = 60, max_local_keys: int = 100_000) -> None:
        self.redis = redis
        self.window = window_seconds
        self._script = redis.register_script(SLIDING_WINDOW)
        self.local = LocalWindows(max_local_keys)
        self._redis_down_since: float | None = None
        self._next_redis_try = 0.0
        self._local_index = 0

    @property
    def using_fallback(self) -> bool:
        return self._redis_down_since is not None

    async def check(self, bucket: str, subject: str, limit: int) -> Decision:
        """A decision: from Redis (shared by replicas), or from this process while Redis is unreachable."""
        now = time.time()
        index = int(now // self.window)
        elapsed = now - index * self.window
        weight = 1.0 - elapsed / self.window
        keys = [f"rl:{bucket}:{subject}:{index}", f"rl:{bucket}:{subject}:{index - 1}"]
        result = await self._from_redis(keys, limit, weight, now)
        if result is None:
            if index != self._local_index:
                self.local.forget_before(index)
                self._local_index = index
            result = self.local.hit(keys, limit, weight)
        allowed, estimate, current, previous = result
        reset = max(1, math.ceil(self.window - elapsed))
        if allowed:
            return Decision(True, limit, max(0, limit - int(estimate)), reset, 0)
        return Decision(False, limit, 0, reset, retry_after(int(current), int(previous), limit, elapsed, self.window))

    async def _from_redis(self, keys: list[str], limit: int, weight: float, now: float) -> tuple[int, ...] | None:
        """The script's answer, or None when Redis is (known to be) away; logs the switch each way once."""
        if self._redis_down_since is not None:
            if now < self._next_redis_try:
                return None
            self._next_redis_try = now + self.RETRY_REDIS_SECONDS  # this request probes; the others stay local
        try:
            allowed, estimate, current, previous = await self._script(
                keys=keys, args=[limit, f"{weight:.6f}", self.window * 2 + 1]
            )
        except (RedisError, OSError) as exc:
            self._next_redis_try = now + self.RETRY_REDIS_SECONDS
            if self._redis_down_since is None:
                self._redis_down_since = now
                IN_PROCESS.set(1)
                log.warning("rate_limit_fallback_in_process", error=type(exc).__name__)
            return None
        if self._redis_down_since is not None:
            log.info("rate_limit_redis_back", seconds_in_process=round(now - self._redis_down_since, 1))
            self._redis_down_since = None
            IN_PROCESS.set(0)
            self.local = LocalWindows(self.local.max_keys)
        return int(allowed), int(estimate), int(current), int(previous)


def retry_after(current: int, previous: int, limit: int, elapsed: float, window: int) -> int:
    """Seconds until one more request fits, if nothing else arrives (at least 1).

    The estimate is ``previous * (1 - t/window) + current`` at ``t`` seconds into the current window; past its end
    the current count becomes the previous one and decays the same way.
    """
    if previous > 0:
        t = window * (previous + current - limit + 1) / previous
        if t <= window:
            return max(1, math.ceil(t - elapsed))
    if current <= 0:
        return 1
    t_next = window * (current - limit + 1) / current
    return max(1, math.ceil(window - elapsed + t_next))


def account_of(body: bytes | None) -> str:
    """The account a sign-in family request is about: its email in canonical form (``shared.emails``: every
    spelling of an address is one bucket), else a digest of its refresh token."""
    try:
        payload = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return "-"
    if not isinstance(payload, dict):
        return "-"
    email, token = payload.get("email"), payload.get("refresh_token")
    if isinstance(email, str):
        try:
            return normalize_email(email)
        except InvalidEmailError:
            return "invalid:" + hashlib.sha256(email.encode(errors="replace")).hexdigest()[:32]
    if isinstance(token, str):
        return "rt:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "-"
