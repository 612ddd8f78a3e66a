"""Rate limits in Redis, shared by every gateway replica: one atomic script per check.

Sliding-window estimate over two fixed windows (the previous window's count weighted by how much of it still
overlaps the last ``window`` seconds, plus the current count): smooth at window edges, two keys per subject, one
round trip. A refused request is not counted, so a client that waits ``Retry-After`` gets through.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

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


class RateLimiter:
    def __init__(self, redis: Redis, window_seconds: int = 60) -> None:
        self.redis = redis
        self.window = window_seconds
        self._script = redis.register_script(SLIDING_WINDOW)

    async def check(self, bucket: str, subject: str, limit: int) -> Decision | None:
        """A decision, or None when Redis is unreachable (fail open: availability over throttling)."""
        now = time.time()
        index = int(now // self.window)
        elapsed = now - index * self.window
        weight = 1.0 - elapsed / self.window
        keys = [f"rl:{bucket}:{subject}:{index}", f"rl:{bucket}:{subject}:{index - 1}"]
        try:
            allowed, estimate, current, previous = await self._script(
                keys=keys, args=[limit, f"{weight:.6f}", self.window * 2 + 1]
            )
        except (RedisError, OSError) as exc:
            log.warning("rate_limit_unavailable", error=type(exc).__name__)
            return None
        reset = max(1, math.ceil(self.window - elapsed))
        if allowed:
            return Decision(True, limit, max(0, limit - int(estimate)), reset, 0)
        return Decision(False, limit, 0, reset, retry_after(int(current), int(previous), limit, elapsed, self.window))


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
    """The account a sign-in family request is about: its email, else a digest of its refresh token."""
    try:
        payload = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return "-"
    if not isinstance(payload, dict):
        return "-"
    email, token = payload.get("email"), payload.get("refresh_token")
    if isinstance(email, str):
        return email.strip().lower()[:320]
    if isinstance(token, str):
        return "rt:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "-"
