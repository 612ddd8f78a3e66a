"""Per-account sign-in lock-out with exponential back-off, kept in auth's own PostgreSQL (database time).

Why here and not in the gateway: the gateway's limits are per client IP (and per IP + account), in Redis. An attacker
with many addresses (or ``X-Forwarded-For`` behind a trusted proxy) spreads guesses over IPs, and with Redis down the
gateway can only limit per replica. This record is per normalised address, shared by every auth replica, and needs
nothing but the database the sign-in already needs.

Policy: the first ``signin_free_failures - 1`` consecutive failures cost nothing; the ``free``-th locks the address
for ``signin_lockout_base_seconds``, and each further failure (possible only after a lock-out ends) doubles the
window, up to ``signin_lockout_max_seconds``. While locked, sign-in answers 429 ``RATE_LIMIT_EXCEEDED`` with
``Retry-After`` without checking the password, and the refused attempt is not counted (so the lock-out always ends
when it says). A success forgets the failures; failures are also forgotten ``signin_failure_memory_seconds`` after
the last one (or after the end of its lock-out), and a retention job deletes such rows.

Each attempt is counted *before* its password is checked, in a statement of its own that is committed at once: any
number of concurrent guesses gets exactly ``free`` password checks before the lock-out, never one per in-flight
request.

Trade-off: anyone who knows an address can keep its owner locked out, by failing once each time a lock-out ends.
The cap bounds the harm: the owner waits at most ``signin_lockout_max_seconds`` (default 15 min) for a next
attempt, and an existing session, refresh token or API key keeps working meanwhile (only password sign-in is
locked). The attacker in turn gets one guess per window, about 100 a day at the default cap. The record is kept for
unknown addresses exactly as for known ones (a SHA-256 of the address, never the address), so a lock-out does not
reveal which addresses have accounts.
"""

from __future__ import annotations

import hashlib
import math

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.config import Settings
from services.auth.errors import SigninLockedError

log = structlog.stdlib.get_logger(__name__)

# Failures, counted afresh when the last one is older than the memory; the lock-out starts at the free-th one.
_FAILURES = (
    "CASE WHEN greatest(f.last_failure_at, coalesce(f.locked_until, f.last_failure_at))"
    " < now() - make_interval(secs => :memory) THEN 1 ELSE f.failures + 1 END"
)


def _lock_until(failures: str) -> str:
    """SQL for the end of the lock-out after ``failures`` failures (NULL below the free allowance)."""
    return (
        f"CASE WHEN {failures} >= :free THEN now() + make_interval(secs => least(:max_seconds,"
        f" :base * power(2::float8, least({failures} - :free, 62)))) END"
    )


RESERVE = text(
    "INSERT INTO signin_failures AS f (email_key, failures, locked_until, last_failure_at)"
    f" VALUES (:key, 1, {_lock_until('1')}, now())"
    f" ON CONFLICT (email_key) DO UPDATE SET failures = {_FAILURES},"
    f" locked_until = {_lock_until(_FAILURES)}, last_failure_at = now()"
    " WHERE f.locked_until IS NULL OR f.locked_until <= now()"
    " RETURNING failures"
)
LOCKED_FOR = text(
    "SELECT extract(epoch FROM locked_until - now()) FROM signin_failures"
    " WHERE email_key = :key AND locked_until > now()"
)
FORGET = text("DELETE FROM signin_failures WHERE email_key = :key")
PURGE = text(
    "DELETE FROM signin_failures WHERE ctid IN (SELECT ctid FROM signin_failures"
    " WHERE greatest(last_failure_at, coalesce(locked_until, last_failure_at)) < now() - make_interval(secs => :memory)"
    " LIMIT 10000)"
)


def email_key(email: str) -> str:
    """The record's key: a digest of the normalised address (addresses typed by strangers are not stored)."""
    return hashlib.sha256(b"signin:" + email.encode()).hexdigest()


async def reserve_attempt(session: AsyncSession, settings: Settings, email: str) -> int:
    """Count one attempt on ``email`` as failed until proven otherwise and commit that at once, returning the count
    of consecutive failures including it; or raise ``SigninLockedError`` (429, ``Retry-After``) while the address is
    locked, counting nothing."""
    key = email_key(email)
    params = {
        "key": key,
        "free": settings.signin_free_failures,
        "base": settings.signin_lockout_base_seconds,
        "max_seconds": settings.signin_lockout_max_seconds,
        "memory": settings.signin_failure_memory_seconds,
    }
    counted = (await session.execute(RESERVE, params)).first()
    if counted is None:  # locked: the conditional update did not apply
        remaining = (await session.execute(LOCKED_FOR, {"key": key})).scalar_one_or_none()
        await session.rollback()
        if remaining is not None:  # else the lock-out ended in between: count this attempt after all
            log.info("signin_locked_out", account_key=key[:12])
            raise SigninLockedError(max(1, math.ceil(float(remaining))))
        counted = (await session.execute(RESERVE, params)).first()
    # Committed before the (slow) password check: concurrent guesses see each other's counts, and a failed
    # request's rollback cannot undo its own count.
    await session.commit()
    return int(counted[0]) if counted is not None else 1


async def forget_failures(session: AsyncSession, email: str) -> None:
    """A successful sign-in: the address starts afresh (in the request's transaction)."""
    await session.execute(FORGET, {"key": email_key(email)})


async def purge_forgotten(session: AsyncSession, settings: Settings) -> int:
    """Retention: delete records whose failures are forgotten anyway (bounded per round)."""
    result = await session.execute(PURGE, {"memory": settings.signin_failure_memory_seconds})
    return int(getattr(result, "rowcount", 0) or 0)
