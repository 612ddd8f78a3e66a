"""Run an ASGI app factory with uvicorn (uvloop + httptools), the way every process entry point does."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp


def serve(
    factory: Callable[[], ASGIApp], *, port: int, host: str = "127.0.0.1", forwarded_allow_ips: str = "127.0.0.1"
) -> None:
    """``forwarded_allow_ips``: the proxies (ingress) whose ``X-Forwarded-For`` is trusted for the client address."""
    uvicorn.run(
        factory(),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=20,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
    )
