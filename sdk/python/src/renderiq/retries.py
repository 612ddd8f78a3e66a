"""When to try a request again and how long to wait: exponential backoff with jitter, ``Retry-After`` honoured."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one request (the first attempt is not counted).

    429 and 503 answers are retried, and connection failures of requests that are safe to repeat (reads, deletes,
    and creates carrying an ``Idempotency-Key``). A ``Retry-After`` answer waits exactly that long, unless it asks
    for more than ``max_retry_after``: then the error is raised at once (it carries ``retry_after``).
    """

    max_retries: int = 3
    initial_backoff: float = 0.5
    """Seconds before the first retry when the server gave no ``Retry-After``; doubled on each further retry."""
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    jitter: bool = True
    retry_statuses: frozenset[int] = frozenset({429, 503})

    def backoff(self, retry_number: int) -> float:
        """The wait before retry ``retry_number`` (0-based) without a ``Retry-After``: half fixed, half random."""
        delay = min(self.max_backoff, self.initial_backoff * 2**retry_number)
        return delay / 2 + random.uniform(0, delay / 2) if self.jitter else delay

    def delay(self, retry_number: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry ``retry_number``, or None when the request must not be tried again."""
        if retry_number >= self.max_retries:
            return None
        if retry_after is None:
            return self.backoff(retry_number)
        return retry_after if retry_after <= self.max_retry_after else None


NO_RETRIES = RetryPolicy(max_retries=0)


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (from delta-seconds or an HTTP date), None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
