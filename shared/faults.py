"""Which failures are the infrastructure's (wait and retry, without limit) and which are the work's own.

A transient failure says nothing about the record or the job in hand: the database, the broker, storage or another
service is away for a while. Work that meets one pauses and tries again, for as long as it takes, and is never
dead-lettered or failed for it. Any other failure is the work's own (a bug, a record no code can handle) and gets a
bounded number of tries.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import aiohttp
import asyncpg
import httpx
from aiokafka import errors as kafka_errors
from botocore import exceptions as boto_errors
from sqlalchemy import exc as sa_errors

from shared.errors import DomainError


class TransientError(Exception):
    """Raised by code that knows a failure is the infrastructure's (e.g. "release this render and retry")."""


class PoisonRecord(Exception):
    """A record no retry can fix (not a CloudEvent, a payload that does not parse): dead-lettered at once."""


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # cannot connect, connection lost, failure during connect
    asyncpg.InterfaceError,  # "connection is closed", a pool closing under us
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock: try again
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a failover in progress: the new primary is not there yet
    socket.gaierror,  # the database's or broker's name does not resolve while its pod restarts
    sa_errors.TimeoutError,  # the engine's pool had no connection in time
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NoBrokersAvailable,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    httpx.TransportError,
    aiohttp.ClientConnectionError,
    boto_errors.EndpointConnectionError,
    boto_errors.ConnectionClosedError,
    boto_errors.ConnectTimeoutError,
    boto_errors.ReadTimeoutError,
)


_UNREACHABLE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: ``__cause__``/``__context__`` chains and SQLAlchemy's ``orig``."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen) or len(seen) > 20:
            continue
        seen.append(current)
        pending.extend([current.__cause__, current.__context__, getattr(current, "orig", None)])
    return seen


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or anything it wraps) is the infrastructure being away, not the work being wrong."""
    for cause in _causes(exc):
        if isinstance(cause, PoisonRecord):
            return False
        if isinstance(cause, _TRANSIENT_TYPES):
            return True
        if isinstance(cause, sa_errors.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, kafka_errors.KafkaError) and getattr(cause, "retriable", False):
            return True
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE:
            return True
        if isinstance(cause, DomainError) and cause.status_code == 503 and getattr(cause, "transient", True):
            return True  # another platform service is unavailable (InternalClient)
    return False


_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def connection_lost(exc: BaseException) -> bool:
    """True when the database connection broke under a statement, so whether it took effect is unknown (a COMMIT
    cut off may or may not have committed); False for an error the server answered (it certainly rolled back)."""
    for cause in _causes(exc):
        if isinstance(cause, _CONNECTION_LOST):
            return True
        if isinstance(cause, sa_errors.DBAPIError) and cause.connection_invalidated:
            return True
    return False
