"""Server-sent events for one render: its status now, then one event per status change until a final state.

Each API process holds one ``LISTEN render_status`` connection and fans notifications out to the streams of that
render, so a change made by any worker reaches every replica's open streams at once, without polling.
Progress-only changes are sent as named ``progress`` events; ``EventSource.onmessage`` sees status changes only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import structlog

from services.renders.events import STATUS_CHANNEL
from services.renders.models import FINAL_STATES, RenderStatus
from shared.db import plain_dsn

log = structlog.stdlib.get_logger(__name__)


class StatusHub:
    def __init__(self, database_url: str) -> None:
        self.dsn = plain_dsn(database_url)
        self._subscribers: defaultdict[str, set[asyncio.Queue[None]]] = defaultdict(set)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_listening(), name="render-status-listener")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def _keep_listening(self) -> None:
        while True:
            try:
                closed = asyncio.Event()
                self._conn = await asyncpg.connect(self.dsn)
                self._conn.add_termination_listener(lambda _, done=closed: done.set())
                await self._conn.add_listener(STATUS_CHANNEL, self._notified)
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("render_status_listener_retry", error=type(exc).__name__)
            # Wake every stream after a reconnect: a notification may have been missed meanwhile.
            for queues in self._subscribers.values():
                for queue in queues:
                    queue.put_nowait(None)
            await asyncio.sleep(1)

    def _notified(self, *args: object) -> None:
        render_id = str(args[3])
        for queue in self._subscribers.get(render_id, ()):
            queue.put_nowait(None)

    @contextlib.contextmanager
    def subscribe(self, render_id: str) -> Iterator[asyncio.Queue[None]]:
        queue: asyncio.Queue[None] = asyncio.Queue()
        self._subscribers[render_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[render_id].discard(queue)
            if not self._subscribers[render_id]:
                del self._subscribers[render_id]


def _frame(status: RenderStatus, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {status.model_dump_json()}\n\n".encode()


async def render_events(
    hub: StatusHub, render_id: str, load: Callable[[], Awaitable[RenderStatus]], heartbeat_seconds: float
) -> AsyncIterator[bytes]:
    """The event stream; ``load`` reads the render's current status with a fresh session each time."""
    with hub.subscribe(render_id) as queue:
        current = await load()
        yield _frame(current)
        while current.status not in FINAL_STATES:
            try:
                await asyncio.wait_for(queue.get(), heartbeat_seconds)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            latest = await load()
            if latest.status != current.status:
                yield _frame(latest)
            elif latest.progress != current.progress:
                yield _frame(latest, "progress")
            current = latest
