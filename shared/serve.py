"""Run an ASGI app factory with uvicorn (uvloop + httptools), the way every process entry point does."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class Listeners:
    """A process that serves two listeners: the public API, and probes and metrics on a port of their own."""

    public: ASGIApp
    internal: ASGIApp


class ByListener:
    """One server, two sockets: each request goes to the app of the socket it arrived on; lifespan to the public
    app (the internal one holds no resources of its own)."""

    def __init__(self, listeners: Listeners, internal_port: int) -> None:
        self.listeners = listeners
        self.internal_port = internal_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "lifespan" and server is not None and server[1] == self.internal_port:
            await self.listeners.internal(scope, receive, send)
            return
        await self.listeners.public(scope, receive, send)


def serve(
    factory: Callable[[], ASGIApp | Listeners],
    *,
    port: int,
    host: str = "127.0.0.1",
    forwarded_allow_ips: str = "127.0.0.1",
    internal_port: int | None = None,
    internal_host: str = "127.0.0.1",
) -> None:
    """Serve the app on ``host:port``; a factory that gives ``Listeners`` serves its internal app on
    ``internal_host:internal_port`` too: what a client can reach and what only the cluster (probes, Prometheus)
    can reach are different sockets. ``forwarded_allow_ips``: the proxies (ingress) whose ``X-Forwarded-For`` is
    trusted for the client address."""
    built = factory()
    if isinstance(built, Listeners):
        if internal_port is None:
            raise ValueError("an app with an internal listener needs internal_port")
        config = uvicorn.Config(ByListener(built, internal_port), forwarded_allow_ips=forwarded_allow_ips, **_COMMON)
        uvicorn.Server(config).run(sockets=[_bound(host, port), _bound(internal_host, internal_port)])
        return
    uvicorn.run(built, host=host, port=port, forwarded_allow_ips=forwarded_allow_ips, **_COMMON)


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


_COMMON: dict[str, Any] = {  # every listener of every process
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "log_config": None,
    "timeout_graceful_shutdown": 20,
    "server_header": False,
    "proxy_headers": True,
}
