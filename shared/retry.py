"""Retrying an operation that must eventually succeed (a write nothing may drop) while its dependency is away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

log = structlog.stdlib.get_logger(__name__)
T = TypeVar("T")


async def until_done(
    operation: Callable[[], Awaitable[T]], *, event: str, first_delay: float = 0.2, max_delay: float = 5.0
) -> T:
    """Run ``operation`` until it returns, doubling the pause after each failure (logged as ``event``).

    For work whose inputs must not be lost (a batch of outcomes, a batch of events whose offsets wait for it):
    the caller blocks instead of dropping them. Cancellation passes through.
    """
    delay = first_delay
    while True:
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(event, error=f"{type(exc).__name__}: {exc}", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
