"""Retrying while a dependency is away: the one backoff (doubling, jittered) and the one retry-until-done loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

log = structlog.stdlib.get_logger(__name__)
T = TypeVar("T")


class Backoff:
    """Exponential pauses with jitter: ``first`` doubling up to ``most``; ``reset`` after a success."""

    def __init__(self, first: float = 0.2, most: float = 5.0) -> None:
        self.first = first
        self.most = most
        self.current = first

    def reset(self) -> None:
        self.current = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.current * random.uniform(0.8, 1.2))
        self.current = min(self.current * 2, self.most)


async def until_done(
    operation: Callable[[], Awaitable[T]], *, event: str, first_delay: float = 0.2, max_delay: float = 5.0
) -> T:
    """Run ``operation`` until it returns, doubling the pause after each failure (logged as ``event``).

    For work whose inputs must not be lost (a batch of outcomes, a batch of events whose offsets wait for it):
    the caller blocks instead of dropping them. Cancellation passes through.
    """
    backoff = Backoff(first_delay, max_delay)
    while True:
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(event, error=f"{type(exc).__name__}: {exc}", retry_in=round(backoff.current, 2))
            await backoff.sleep()
