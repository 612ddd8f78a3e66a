"""The process pool the adapters run their Pillow work in, so the event loop keeps serving while pixels are pushed.

Started lazily (constructing a registry costs nothing), with the ``spawn`` start method (forking a process that
runs threads and an event loop is unsafe), and replaced when a worker process dies (e.g. killed for memory).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import structlog

from services.renders.rendering.errors import InvalidImageError, RenderFailure

T = TypeVar("T")
log = structlog.stdlib.get_logger(__name__)


def _init_worker(parent_pid: int) -> None:
    """Ctrl+C reaches the whole process group: the parent decides when the pool stops, not the workers.

    A worker blocks on its job queue forever if the parent is killed (SIGKILL, OOM killer), so it watches its
    parent and exits once orphaned.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


class RenderPool:
    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def _ensure(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("render pool is closed")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker process; failures come back as ``RenderFailure``.

        Bad image data is final (``INVALID_IMAGE``); a dead worker or exhausted memory may pass on another try.
        """
        executor = self._ensure()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except InvalidImageError as exc:
            raise RenderFailure(exc.message, error_code="INVALID_IMAGE", retryable=False) from exc
        except MemoryError as exc:
            raise RenderFailure(
                "Not enough memory to render this image now", error_code="RENDERER_OUT_OF_MEMORY", retryable=True
            ) from exc
        except BrokenProcessPool as exc:
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            log.warning("render_pool_broken", function=getattr(fn, "__name__", "?"))
            raise RenderFailure(
                "The render process stopped unexpectedly", error_code="RENDERER_CRASHED", retryable=True
            ) from exc

    async def aclose(self) -> None:
        """Stop accepting work, drop queued jobs and wait (off the loop) for running ones to end."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
