"""What a finished attempt means: success, when to try again, when to give up, when to disable the endpoint.

Pure functions of the attempt's outcome and the settings, so the dispatcher's bookkeeping stays a thin layer of SQL
over them and every rule is unit-tested on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_SECONDS = 86400.0
"""A receiver may ask for at most a day's pause per attempt; beyond that the schedule's own budget governs."""
JITTER = 0.2
HONOURS_RETRY_AFTER = frozenset({429, 503})


@dataclass(frozen=True)
class Outcome:
    """One attempt's result as the receiver (or the network) gave it."""

    status_code: int | None
    error: str | None
    duration_ms: int
    response_body: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410: the receiver says this endpoint no longer exists; it is disabled at once."""
        return self.status_code == 410


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), clamped to [0, 1 day]; else None."""
    if not value:
        return None
    value = value.strip()
    seconds: float
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def next_delay(outcome: Outcome, retry_index: int, schedule: tuple[float, ...]) -> float | None:
    """Seconds until the next attempt after failure number ``retry_index + 1``, or None when retries are spent.

    The schedule's delay gets ±20% jitter, so endpoints that failed together do not retry together. A receiver's
    ``Retry-After`` on 429/503 replaces the scheduled delay (it knows when it will be back), within one day.
    """
    if outcome.gone or retry_index >= len(schedule):
        return None
    if outcome.status_code in HONOURS_RETRY_AFTER and outcome.retry_after is not None:
        return outcome.retry_after
    return schedule[retry_index] * random.uniform(1 - JITTER, 1 + JITTER)


def should_disable(
    failure_count: int, failing_since: datetime | None, now: datetime, *, after_failures: int, after_seconds: float
) -> bool:
    """Disabled after ``after_failures`` consecutive failures that span at least ``after_seconds``."""
    if failure_count < after_failures or failing_since is None:
        return False
    return now - failing_since >= timedelta(seconds=after_seconds)


def disable_reason(failure_count: int, failing_since: datetime) -> str:
    return f"{failure_count} consecutive failed attempts since {failing_since.astimezone(UTC).isoformat()}"


GONE_REASON = "the endpoint answered 410 Gone"
