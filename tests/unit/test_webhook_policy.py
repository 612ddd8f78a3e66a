"""The webhook retry policy: Retry-After parsing, the jittered schedule, when to give up and when to disable.

These pure functions decide how hard the dispatcher hits a failing receiver and when an endpoint is switched off
(API.md "Webhooks": ±20% jitter, Retry-After honoured on 429/503 only, 410 disables at once, disabling needs both
the failure count and the time span), so each rule is pinned down here on its own.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from services.webhooks.policy import (
    JITTER,
    MAX_RETRY_AFTER_SECONDS,
    Outcome,
    next_delay,
    parse_retry_after,
    should_disable,
)

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DRAWS = 2000


def failed(status: int | None, retry_after: float | None = None) -> Outcome:
    error = None if status is not None else "connection failed: refused"
    return Outcome(status_code=status, error=error, duration_ms=12, retry_after=retry_after)


# -- parse_retry_after ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("0", 0.0), ("120", 120.0), (" 30 ", 30.0), ("86400", 86400.0), ("0042", 42.0)],
)
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize("value", ["86401", "999999999", "9" * 400])
def test_retry_after_delta_seconds_clamped_to_a_day(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == MAX_RETRY_AFTER_SECONDS == 86400.0


def test_retry_after_http_date_in_the_future() -> None:
    value = format_datetime(NOW + timedelta(seconds=90), usegmt=True)  # "Fri, 14 Mar 2025 12:01:30 GMT"
    assert parse_retry_after(value, now=NOW) == 90.0


def test_retry_after_http_date_with_offset_is_converted() -> None:
    plus_two = timezone(timedelta(hours=2))
    value = format_datetime((NOW + timedelta(minutes=5)).astimezone(plus_two))  # "... 14:05:00 +0200"
    assert parse_retry_after(value, now=NOW) == 300.0


@pytest.fixture
def local_time_is_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process's local time zone at UTC+5, so "read as local time" and "read as UTC" differ."""
    monkeypatch.setenv("TZ", "TEST-5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_is_not_utc")
def test_retry_after_http_date_without_zone_is_utc() -> None:
    # "-0000" makes email.utils return a naive datetime; the policy reads it as UTC, not as local time.
    assert datetime(2025, 1, 1).astimezone(UTC).hour == 19  # the fixture took effect
    value = "Fri, 14 Mar 2025 12:00:45 -0000"
    assert parse_retry_after(value, now=NOW) == 45.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    value = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(value, now=NOW) == 0.0


def test_retry_after_http_date_far_ahead_is_clamped() -> None:
    value = format_datetime(NOW + timedelta(days=30), usegmt=True)
    assert parse_retry_after(value, now=NOW) == MAX_RETRY_AFTER_SECONDS


def test_retry_after_http_date_uses_the_clock_by_default() -> None:
    value = format_datetime(datetime.now(UTC) + timedelta(seconds=600), usegmt=True)
    seconds = parse_retry_after(value)
    assert seconds is not None
    assert 590 <= seconds <= 600


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "7.5", "+5", "1e3", "Fri, 99 Foo 2025", "5 s"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["²", "①"])
def test_retry_after_unicode_digit_lookalikes_are_garbage(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


# -- next_delay ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_index", range(len(SCHEDULE)))
def test_next_delay_is_the_schedule_entry_with_jitter(retry_index: int) -> None:
    scheduled = SCHEDULE[retry_index]
    draws = [next_delay(failed(500), retry_index, SCHEDULE) for _ in range(DRAWS)]
    delays = [d for d in draws if d is not None]
    assert len(delays) == DRAWS
    low, high = scheduled * (1 - JITTER), scheduled * (1 + JITTER)
    assert all(low <= d <= high for d in delays), (min(delays), max(delays), low, high)
    # The jitter is real and uses the whole ±20% band (so endpoints that failed together spread out).
    assert min(delays) < scheduled * 0.9
    assert max(delays) > scheduled * 1.1
    assert len(set(delays)) > DRAWS // 2


def test_next_delay_jitter_is_twenty_percent() -> None:
    assert JITTER == pytest.approx(0.2)


def test_next_delay_after_a_network_error_follows_the_schedule() -> None:
    delay = next_delay(failed(None), 1, SCHEDULE)
    assert delay is not None
    assert 240.0 <= delay <= 360.0


@pytest.mark.parametrize("retry_index", [len(SCHEDULE), len(SCHEDULE) + 1, 100])
def test_next_delay_none_when_retries_are_spent(retry_index: int) -> None:
    assert next_delay(failed(500), retry_index, SCHEDULE) is None
    assert next_delay(failed(503, retry_after=5.0), retry_index, SCHEDULE) is None


def test_next_delay_with_an_empty_schedule_never_retries() -> None:
    assert next_delay(failed(500), 0, ()) is None


@pytest.mark.parametrize("retry_index", [0, 3])
def test_next_delay_none_on_410(retry_index: int) -> None:
    assert next_delay(failed(410), retry_index, SCHEDULE) is None
    assert next_delay(failed(410, retry_after=10.0), retry_index, SCHEDULE) is None


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after", [0.0, 42.0, 86400.0])
def test_next_delay_retry_after_replaces_the_schedule_on_429_and_503(status: int, retry_after: float) -> None:
    # 42 s is far outside the 1800 s entry's jitter band, so only Retry-After can produce it.
    for _ in range(50):
        assert next_delay(failed(status, retry_after=retry_after), 2, SCHEDULE) == retry_after


@pytest.mark.parametrize("status", [500, 502, 504, 400, 404, 408, 302])
def test_next_delay_retry_after_ignored_on_other_statuses(status: int) -> None:
    for _ in range(200):
        delay = next_delay(failed(status, retry_after=42.0), 2, SCHEDULE)
        assert delay is not None
        assert 1800.0 * 0.8 <= delay <= 1800.0 * 1.2


@pytest.mark.parametrize("status", [429, 503])
def test_next_delay_without_retry_after_on_429_and_503_follows_the_schedule(status: int) -> None:
    delay = next_delay(failed(status), 0, SCHEDULE)
    assert delay is not None
    assert 4.0 <= delay <= 6.0


# -- should_disable ------------------------------------------------------------------------------------------------


def disable(count: int, since: datetime | None) -> bool:
    return should_disable(count, since, NOW, after_failures=10, after_seconds=86400)


def test_disable_needs_both_the_count_and_the_span() -> None:
    assert disable(10, NOW - timedelta(days=1)) is True
    assert disable(25, NOW - timedelta(days=3)) is True


def test_disable_not_before_enough_failures_however_long() -> None:
    assert disable(9, NOW - timedelta(days=30)) is False
    assert disable(0, NOW - timedelta(days=30)) is False


def test_disable_not_before_the_span_however_many_failures() -> None:
    assert disable(10, NOW - timedelta(seconds=86399)) is False
    assert disable(10_000, NOW - timedelta(hours=1)) is False
    assert disable(50, NOW) is False


def test_disable_without_failing_since_is_false() -> None:
    assert disable(10, None) is False
    assert disable(10_000, None) is False


def test_disable_thresholds_come_from_the_arguments() -> None:
    since = NOW - timedelta(seconds=60)
    assert should_disable(3, since, NOW, after_failures=3, after_seconds=60) is True
    assert should_disable(2, since, NOW, after_failures=3, after_seconds=60) is False
    assert should_disable(3, since, NOW, after_failures=3, after_seconds=61) is False


# -- Outcome -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_outcome_2xx_succeeds(status: int) -> None:
    assert Outcome(status_code=status, error=None, duration_ms=3).succeeded is True


@pytest.mark.parametrize("status", [100, 199, 300, 301, 302, 303, 304, 307, 308, 400, 401, 404, 410, 429, 500, 503])
def test_outcome_other_statuses_fail(status: int) -> None:
    assert Outcome(status_code=status, error=None, duration_ms=3).succeeded is False


def test_outcome_without_status_fails() -> None:
    assert Outcome(status_code=None, error="connection failed: refused", duration_ms=3).succeeded is False
    assert Outcome(status_code=None, error=None, duration_ms=3).succeeded is False


def test_outcome_with_an_error_fails_even_with_a_2xx() -> None:
    assert Outcome(status_code=200, error="body cut short", duration_ms=3).succeeded is False


@pytest.mark.parametrize(("status", "gone"), [(410, True), (404, False), (400, False), (None, False), (200, False)])
def test_outcome_gone_only_on_410(status: int | None, gone: bool) -> None:
    assert Outcome(status_code=status, error=None, duration_ms=3).gone is gone
