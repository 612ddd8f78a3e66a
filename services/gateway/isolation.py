"""Per-caller isolation on one gateway replica: how many requests and event streams a caller has open at once.

A rate limit counts requests per minute; it cannot stop one caller from holding hundreds of slow requests open at
the same moment. Here every open request is counted against its caller (the account, whatever key or token it used;
the client address for anonymous calls) and refused with 429 beyond the cap, so one caller's open requests cannot
take the capacity that other callers need. Counts are per replica and in memory: no I/O on the hot path, and a
caller's total across ``n`` replicas is at most ``n`` times the cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter

from services.gateway.errors import RateLimitedError

RETRY_AFTER_SECONDS = 1
REFUSED = Counter(
    "plugin_gateway_protective_refusals",
    "Requests the gateway refused to protect other callers: a caller over its open requests or streams, a body "
    "too slow (408) or too large (413)",
    ["reason"],
)


class OpenSlots:
    """Open items per caller, at most ``cap`` each; entries vanish when a caller's count drops to zero."""

    def __init__(self, cap: int, what: str) -> None:
        self.cap = cap
        self.what = what
        self._open: dict[str, int] = {}

    def count(self, caller: str) -> int:
        return self._open.get(caller, 0)

    @contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        """One slot for the duration of the block, or ``RateLimitedError`` when the caller has ``cap`` open."""
        held = self._open.get(caller, 0)
        if held >= self.cap:
            REFUSED.labels(f"too many open {self.what}").inc()
            raise RateLimitedError(
                f"Too many {self.what} open at once; wait for one to finish",
                retry_after=RETRY_AFTER_SECONDS,
                details={"limit": self.cap},
            )
        self._open[caller] = held + 1
        try:
            yield
        finally:
            left = self._open[caller] - 1
            if left:
                self._open[caller] = left
            else:
                del self._open[caller]
