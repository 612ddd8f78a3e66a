"""The webhook transport against real local HTTP receivers: outcomes, redirects, timeouts and the SSRF guard.

A delivery goes to a URL a user typed, so the transport is the last line of defence against server-side request
forgery: every refused range must be refused before any connection (literal addresses statically, hostnames on the
address the resolver returned, which is also the address connected to), redirects must not be followed, and what
the receiver or the network does must come back as an ``Outcome``, never as an exception. Receivers are real HTTP
servers (``Receiver`` served by uvicorn); the only stand-in is the inner DNS resolver, so that a hostname can
resolve to an address the test chooses. No database or broker is needed.
"""

import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook

from services.webhooks import signing
from services.webhooks.errors import InvalidInputError
from services.webhooks.service import check_destination
from services.webhooks.transport import Transport
from shared.engines import free_port
from shared.testing.receiver import Receiver, Reply
from shared.testing.servers import serve_in_thread

PAYLOAD = b'{"event":"render.completed","timestamp":"2025-03-14T12:30:05Z","data":{"renderId":"rnd_1"}}'
HEADERS = {"content-type": "application/json", "x-webhook-event": "render.completed"}

REFUSED_WITHOUT_PRIVATE = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # CGNAT
    "169.254.169.254",  # link-local: cloud metadata
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "[::1]",
    "[fe80::1]",
    "[ff02::1]",
    "[::]",
    "[fc00::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:169.254.169.254]",
]
ALWAYS_REFUSED = [
    "169.254.169.254",
    "[fe80::1]",
    "224.0.0.1",
    "[ff02::1]",
    "0.0.0.0",
    "[::]",
    "[::ffff:169.254.169.254]",
]

FAKE_DNS = {
    "metadata.internal.test": ["169.254.169.254"],
    "rebind.test": ["127.0.0.1"],
    "private.test": ["10.1.2.3"],
    "mixed.test": ["93.184.216.34", "10.0.0.7"],  # one public, one private address: the whole name is refused
}


class FakeResolver(AbstractResolver):
    """The inner resolver: answers from ``FAKE_DNS`` and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in FAKE_DNS:
            raise OSError(socket.EAI_NONAME, f"{host}: no such host in the fake DNS")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in FAKE_DNS[host]
        ]

    async def close(self) -> None:
        pass


@asynccontextmanager
async def running(
    *,
    allow_private: bool,
    timeout_seconds: float = 5.0,
    response_body_bytes: int = 1024,
    resolver: AbstractResolver | None = None,
) -> AsyncIterator[Transport]:
    transport = Transport(
        timeout_seconds=timeout_seconds,
        allow_private=allow_private,
        response_body_bytes=response_body_bytes,
        resolver=resolver,
    )
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as url:
        yield hooks, url


def unique_path(name: str) -> str:
    return f"/{name}-{uuid.uuid4().hex[:8]}"


class Trap:
    """Listening sockets on 127.0.0.1 and ::1 (same port) that record whether anything connected to them."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.port = 0

    def open(self) -> None:
        for _ in range(20):
            v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            v4.bind(("127.0.0.1", 0))
            port = v4.getsockname()[1]
            sockets = [v4]
            if socket.has_ipv6:
                v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                try:
                    v6.bind(("::1", port))
                except OSError:
                    v6.close()
                    if _ipv6_loopback_works():
                        v4.close()
                        continue  # that port is taken on ::1; try another
                else:
                    sockets.append(v6)
            for s in sockets:
                s.listen(16)
                s.setblocking(False)
            self.sockets, self.port = sockets, port
            return
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")

    def connections(self) -> int:
        count = 0
        for s in self.sockets:
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
        return count

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def _ipv6_loopback_works() -> bool:
    with suppress(OSError), socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return True
    return False


@pytest.fixture
def trap() -> Iterator[Trap]:
    t = Trap()
    t.open()
    try:
        yield t
    finally:
        t.close()


# -- outcomes from a real receiver ---------------------------------------------------------------------------------


async def test_200_succeeds_and_the_receiver_can_verify(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("ok")
    hooks.script(path, Reply(200, body=b'{"received":true}'))
    secret = signing.new_secret()
    headers = signing.headers(secret, "evt_1", "render.completed", PAYLOAD)
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, headers)
    assert outcome.succeeded, outcome
    assert outcome.status_code == 200
    assert outcome.error is None
    assert outcome.response_body == '{"received":true}'
    assert outcome.retry_after is None
    assert 0 <= outcome.duration_ms < 5000
    (got,) = hooks.received(path)
    assert got.body == PAYLOAD
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == "evt_1"
    assert got.headers["user-agent"] == "Renderiq-Webhooks/1.0"  # aiohttp's own User-Agent is not added
    assert Webhook(secret).verify(got.body, got.headers) == {
        "event": "render.completed",
        "timestamp": "2025-03-14T12:30:05Z",
        "data": {"renderId": "rnd_1"},
    }


async def test_no_client_library_user_agent(receiver: tuple[Receiver, str]) -> None:
    """Without a User-Agent from the signing headers, aiohttp's own (naming the library and version) is not sent."""
    hooks, url = receiver
    path = unique_path("agent")
    assert "user-agent" not in HEADERS
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.succeeded
    (got,) = hooks.received(path)
    assert "aiohttp" not in got.headers.get("user-agent", "").lower()


@pytest.mark.parametrize("status", [201, 202, 204])
async def test_other_2xx_succeed(receiver: tuple[Receiver, str], status: int) -> None:
    hooks, url = receiver
    path = unique_path(f"s{status}")
    hooks.script(path, Reply(status, body=b"" if status == 204 else b"ok"))
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.succeeded
    assert outcome.status_code == status


async def test_response_body_is_truncated(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("big")
    body = b"0123456789" * 2000
    hooks.script(path, Reply(200, body=body))
    async with running(allow_private=True, response_body_bytes=100) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.succeeded
    assert outcome.response_body == body[:100].decode()


async def test_response_body_not_kept_when_disabled(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("nobody")
    hooks.script(path, Reply(200, body=b"something"))
    async with running(allow_private=True, response_body_bytes=0) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.succeeded
    assert outcome.response_body is None


async def test_error_status_fails_with_its_body(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("e500")
    hooks.script(path, Reply(500, body=b"database down"))
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert not outcome.succeeded
    assert outcome.status_code == 500
    assert outcome.error is None
    assert outcome.response_body == "database down"


async def test_410_is_gone(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("gone")
    hooks.script(path, 410)
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.status_code == 410
    assert outcome.gone
    assert not outcome.succeeded


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_not_followed(receiver: tuple[Receiver, str], status: int) -> None:
    hooks, url = receiver
    path, target = unique_path("redirect"), unique_path("target")
    hooks.script(path, Reply(status, headers={"Location": url + target}))
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.status_code == status
    assert outcome.error is None
    assert not outcome.succeeded
    assert len(hooks.received(path)) == 1
    assert hooks.received(target) == []


async def test_503_retry_after_seconds(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("busy")
    hooks.script(path, Reply(503, headers={"Retry-After": "7"}))
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.status_code == 503
    assert not outcome.succeeded
    assert outcome.retry_after == 7


async def test_429_retry_after_http_date(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("limited")
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    hooks.script(path, Reply(429, headers={"Retry-After": when}))
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.status_code == 429
    assert outcome.retry_after is not None
    assert 110 <= outcome.retry_after <= 120


async def test_garbage_retry_after_is_ignored(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("garbage")
    hooks.script(path, Reply(503, headers={"Retry-After": "later, maybe"}))
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.status_code == 503
    assert outcome.retry_after is None


async def test_odd_retry_after_never_raises(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("superscript")
    # Starlette encodes header values as latin-1: these two characters go out as the UTF-8 bytes of "²".
    hooks.script(path, Reply(200, headers={"Retry-After": "\xc2\xb2"}))
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.succeeded
    assert outcome.retry_after is None


async def test_slow_receiver_times_out(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("slow")
    hooks.script(path, Reply(200, delay=3.0))
    async with running(allow_private=True, timeout_seconds=0.5) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.status_code is None
    assert not outcome.succeeded
    assert outcome.error is not None
    assert outcome.error.startswith("no answer"), outcome.error
    assert "0.5 s" in outcome.error
    assert 450 <= outcome.duration_ms < 1500, outcome.duration_ms
    assert len(hooks.received(path)) == 1  # it did connect and send; the answer is what never came


async def test_connection_refused() -> None:
    port = free_port()
    async with running(allow_private=True) as transport:
        outcome = await transport.send(f"http://127.0.0.1:{port}/hook", PAYLOAD, HEADERS)
    assert outcome.status_code is None
    assert not outcome.succeeded
    assert outcome.error is not None
    assert outcome.error.startswith("connection failed"), outcome.error


async def test_unresolvable_host_is_a_connection_failure() -> None:
    async with running(allow_private=False, resolver=FakeResolver()) as transport:
        outcome = await transport.send("https://nowhere.test/hook", PAYLOAD, HEADERS)
    assert outcome.error is not None
    assert outcome.error.startswith("connection failed"), outcome.error


# -- SSRF: literal addresses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", REFUSED_WITHOUT_PRIVATE)
async def test_literal_refused_addresses_without_private_networks(host: str, trap: Trap) -> None:
    resolver = FakeResolver()
    async with running(allow_private=False, resolver=resolver) as transport:
        outcome = await transport.send(f"https://{host}:{trap.port}/hook", PAYLOAD, HEADERS)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("refused"), outcome.error
    assert "resolves to" not in outcome.error  # refused statically, before any resolution
    assert resolver.asked == []
    assert trap.connections() == 0


async def test_http_refused_without_private_networks(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    path = unique_path("plain-http")
    async with running(allow_private=False) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.error is not None
    assert outcome.error.startswith("refused"), outcome.error
    assert "https" in outcome.error
    assert hooks.received(path) == []


async def test_http_to_a_public_name_refused_without_private_networks() -> None:
    resolver = FakeResolver()
    async with running(allow_private=False, resolver=resolver) as transport:
        outcome = await transport.send("http://hooks.example.com/render", PAYLOAD, HEADERS)
    assert outcome.error is not None
    assert outcome.error.startswith("refused"), outcome.error
    assert resolver.asked == []


@pytest.mark.parametrize("host", ALWAYS_REFUSED)
async def test_literal_always_refused_even_with_private_networks(host: str, trap: Trap) -> None:
    async with running(allow_private=True) as transport:
        outcome = await transport.send(f"http://{host}:{trap.port}/hook", PAYLOAD, HEADERS)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("refused"), outcome.error
    assert trap.connections() == 0


async def test_trap_sees_a_real_connection(trap: Trap) -> None:
    """The trap can fail: an allowed loopback attempt at it is counted (so ``connections() == 0`` means something)."""
    async with running(allow_private=True, timeout_seconds=0.5) as transport:
        outcome = await transport.send(f"http://127.0.0.1:{trap.port}/hook", PAYLOAD, HEADERS)
    assert outcome.error is not None  # the trap accepts nothing, so no answer comes
    assert trap.connections() == 1


async def test_loopback_allowed_with_private_networks(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    assert url.startswith("http://127.0.0.1:")
    path = unique_path("loopback")
    async with running(allow_private=True) as transport:
        outcome = await transport.send(url + path, PAYLOAD, HEADERS)
    assert outcome.succeeded, outcome
    assert outcome.status_code == 200
    assert len(hooks.received(path)) == 1


async def test_mapped_loopback_allowed_with_private_networks(receiver: tuple[Receiver, str]) -> None:
    """An IPv4-mapped IPv6 address is judged as the IPv4 address it maps: loopback, so allowed here."""
    hooks, url = receiver
    port = url.rsplit(":", 1)[1]
    path = unique_path("mapped")
    async with running(allow_private=True) as transport:
        outcome = await transport.send(f"http://[::ffff:127.0.0.1]:{port}{path}", PAYLOAD, HEADERS)
    assert outcome.succeeded, outcome
    assert len(hooks.received(path)) == 1


# -- SSRF: hostnames, checked on the resolved address ------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("metadata.internal.test", "169.254.169.254"),
        ("rebind.test", "127.0.0.1"),
        ("private.test", "10.1.2.3"),
        ("mixed.test", "10.0.0.7"),
    ],
)
async def test_hostname_resolving_to_a_refused_address(host: str, address: str) -> None:
    resolver = FakeResolver()
    async with running(allow_private=False, resolver=resolver) as transport:
        outcome = await transport.send(f"https://{host}/hook", PAYLOAD, HEADERS)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("refused"), outcome.error
    assert f"{host} resolves to a refused address" in outcome.error
    assert address not in outcome.error  # the owner reads the log: never what an internal name resolves to
    assert resolver.asked == [host]


async def test_hostname_resolving_to_link_local_refused_even_with_private_networks(
    receiver: tuple[Receiver, str],
) -> None:
    _, url = receiver
    port = url.rsplit(":", 1)[1]
    resolver = FakeResolver()
    async with running(allow_private=True, resolver=resolver) as transport:
        outcome = await transport.send(f"http://metadata.internal.test:{port}/hook", PAYLOAD, HEADERS)
    assert outcome.error is not None
    assert outcome.error.startswith("refused"), outcome.error
    assert "reserved or special-purpose network" in outcome.error
    assert "169.254.169.254" not in outcome.error


async def test_hostname_connects_to_the_resolved_address(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    port = url.rsplit(":", 1)[1]
    path = unique_path("rebind")
    resolver = FakeResolver()
    async with running(allow_private=True, resolver=resolver) as transport:
        outcome = await transport.send(f"http://rebind.test:{port}{path}", PAYLOAD, HEADERS)
    assert outcome.succeeded, outcome
    assert outcome.status_code == 200
    assert resolver.asked == ["rebind.test"]
    (got,) = hooks.received(path)
    assert got.headers["host"] == f"rebind.test:{port}"


# -- registration-time check ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [f"https://{host}/hook" for host in REFUSED_WITHOUT_PRIVATE]
    + ["https://localhost/hook", "https://LOCALHOST./hook", "https://api.localhost/hook", "http://hooks.example.com/x"],
)
async def test_check_destination_refuses(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await check_destination(url, allow_private=False)
    assert caught.value.details["field"] == "url"
    assert caught.value.status_code == 400
    assert caught.value.error_code == "INVALID_INPUT"


@pytest.mark.parametrize("url", ["https://2130706433/hook", "https://0x7f000001/hook"])
async def test_check_destination_refuses_names_that_resolve_to_loopback(url: str) -> None:
    """Numeric host forms the resolver turns into 127.0.0.1 are caught on the resolved address."""
    with pytest.raises(InvalidInputError) as caught:
        await check_destination(url, allow_private=False)
    assert caught.value.details["field"] == "url"
    assert "resolves to a refused address" in caught.value.details["reason"]
    assert "private network" in caught.value.details["reason"]
    assert "127.0.0.1" not in caught.value.message


@pytest.mark.parametrize("host", ALWAYS_REFUSED)
async def test_check_destination_always_refused_even_with_private_networks(host: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await check_destination(f"http://{host}/hook", allow_private=True)
    assert caught.value.details["field"] == "url"


async def test_check_destination_accepts_an_unresolvable_host() -> None:
    await check_destination("https://no-such-host.invalid/x", allow_private=False)


ALLOWED_ONLY_WITH_PRIVATE = [
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "[::1]",
    "[fc00::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
]


@pytest.mark.parametrize("host", ALLOWED_ONLY_WITH_PRIVATE)
async def test_check_destination_accepts_private_addresses_with_private_networks(host: str) -> None:
    await check_destination(f"http://{host}:8080/hook", allow_private=True)
