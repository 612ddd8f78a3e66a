"""No malformed query parameter answers 500, anywhere on the public port.

An outsider's view: every operation of the served OpenAPI document plus the gateway's own routes, called through
the gateway's public port (as a normal user; ``/api/admin`` as the operator), with hostile values for each declared
query parameter and for a few undeclared ones. Every answer must be below 500, every 4xx in the contract's
envelope (the OAuth endpoints answer in their own shape), and no process may log a traceback meanwhile.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from shared.storage import sign, verify_signature
from shared.testing.fixtures import PluginUser, Stack, sign_up

OPENAPI = "/api/plugins/openapi.json"
GATEWAY_ROUTES = (
    "/files/renders/nothing/output.png",
    "/api/plugins/health",
    OPENAPI,
    "/api/plugins/docs",
    "/api/plugins/asyncapi.json",
    "/.well-known/jwks.json",
    "/admin",
    "/admin/",
    "/admin/app.js",
)
FILES_PARAMS = ("expires", "signature")
UNDECLARED = ("limit", "expires", "zz")
OAUTH_SHAPED = ("/api/plugins/auth/token", "/api/plugins/auth/device/code")
CONCURRENCY = 6

DIGITS_5000 = "9" * 5000
HOSTILE: tuple[str, ...] = (
    DIGITS_5000,
    "-" + DIGITS_5000,
    "-1",
    "0",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "-99999999999999999999999999999999",
    "99999999999999999999",
    "\uff11\uff12\uff13",  # fullwidth digits: int() takes them, isascii() does not
    "٣",  # Arabic-Indic digit
    "²",  # isdigit() but not int()
    "0x10",
    "1_000",
    " 1 ",
    "",
    "x" * 4000,
    "true",
    "\u202e",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01",
    "2026-13-45T99:99:99Z",
    "-999999999-01-01",
)
RAW_HOSTILE: tuple[str, ...] = ("%ff", "%00", "%", "%zz", "a%00b", "%c0%80")
"""Sent as they are (not percent-encoded again): invalid UTF-8, NUL, broken escapes."""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: tuple[str, ...]
    admin: bool = False


def queries(params: tuple[str, ...]) -> list[str]:
    """Raw query strings: each hostile value in each parameter, plus repeated and array-shaped parameters."""
    out: list[str] = []
    for name in params:
        out += [f"{name}={quote(value, safe='')}" for value in HOSTILE]
        out += [f"{name}={value}" for value in RAW_HOSTILE]
        out += [f"{name}=1&{name}=2", f"{name}[]=1", f"{name}[]=", f"{name}[0]=x", name, f"{name}=1&{name}"]
    for name in UNDECLARED:
        out += [f"{name}={DIGITS_5000}", f"{name}=%ff", f"{name}[]=", f"{name}=1&{name}=x"]
    out += ["%ff=1", "=", "&&&", "a=" + "b" * 6000]
    return out


def fill(path: str, ids: dict[str, str]) -> str:
    """Path parameters: a real object of the caller's where the test made one, else an id that does not exist."""
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        name = path[start + 1 : end]
        path = path[:start] + ids.get(name, str(uuid.uuid4())) + path[end + 1 :]
    return path


def operations(spec: dict[str, Any]) -> list[Operation]:
    found: list[Operation] = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = tuple(p["name"] for p in op.get("parameters", []) if p.get("in") == "query")
            found.append(Operation(method.upper(), path, params, admin=path.startswith("/api/admin")))
    return found


def acceptable(path: str, response: httpx.Response) -> str | None:
    """Why ``response`` breaks the rule, or None."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} not JSON: {response.text[:200]}"
    if any(path.endswith(p.removeprefix("/api/plugins")) for p in OAUTH_SHAPED) and "error" in body:
        return None
    if body.get("success") is not False or not isinstance(body.get("errorCode"), str) or "error" not in body:
        return f"{response.status_code} outside the envelope: {response.text[:200]}"
    return None


def log_sizes(var_dir: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in (var_dir / "log").glob("*.log")}


def tracebacks_since(sizes: dict[Path, int], var_dir: Path) -> list[str]:
    found: list[str] = []
    for path in (var_dir / "log").glob("*.log"):
        with path.open("rb") as handle:
            handle.seek(sizes.get(path, 0))
            text = handle.read().decode("utf-8", errors="replace")
        for marker in ("Traceback (most recent call last)", "unhandled_exception"):
            if marker in text:
                at = text.index(marker)
                found.append(f"{path.name}: {text[max(0, at - 300) : at + 1500]}")
                break
    return found


async def own_objects(client: httpx.AsyncClient, user: PluginUser) -> dict[str, str]:
    """A project and a webhook of the caller's, so routes get past their ownership lookup to the query."""
    project = await client.post("/api/plugins/projects", json={"name": "fuzz"}, headers=user.bearer)
    assert project.status_code == 201, project.text
    hook = await client.post(
        "/api/plugins/webhooks/register",
        json={"url": f"https://hooks.example.com/{uuid.uuid4().hex}", "events": ["*"]},
        headers=user.bearer,
    )
    assert hook.status_code == 201, hook.text
    return {"projectId": project.json()["data"]["id"], "webhookId": hook.json()["data"]["webhookId"]}


async def test_no_malformed_query_parameter_answers_500(
    stack: Stack, gateway_client: httpx.AsyncClient, operator: PluginUser
) -> None:
    user = await sign_up(gateway_client)
    spec = (await gateway_client.get(OPENAPI)).json()
    ops = operations(spec)
    assert len(ops) > 20, "the public spec lists the platform's operations"
    ids = await own_objects(gateway_client, user)
    # The callers reach the routes (else every answer would be a 401/403 before any query is read).
    for target, caller in [
        ("/api/admin/telemetry/summary", operator),
        (f"/api/plugins/webhooks/{ids['webhookId']}/deliveries", user),
        ("/api/plugins/credits/transactions", user),
    ]:
        baseline = await gateway_client.get(target, headers=caller.bearer)
        assert baseline.status_code == 200, f"{target}: {baseline.text}"
    # Reading first, so deletes (with ids that do not exist anyway) never take the objects away mid-run.
    ops.sort(key=lambda op: op.method != "GET")
    calls: list[tuple[str, str, dict[str, str]]] = []
    for op in ops:
        headers = operator.bearer if op.admin else user.bearer
        path = fill(op.path, {} if op.method == "DELETE" else ids)
        calls += [(op.method, f"{path}?{query}", headers) for query in queries(op.params)]
    for route in GATEWAY_ROUTES:
        params = FILES_PARAMS if route.startswith("/files/") else ()
        calls += [("GET", f"{route}?{query}", user.bearer) for query in queries(params)]
    # A real signature with a hostile expiry, and a real expiry with a hostile signature.
    calls += [("GET", f"{GATEWAY_ROUTES[0]}?expires={DIGITS_5000}&signature=00", {})]

    sizes = log_sizes(stack.var_dir)
    failures: list[str] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def call(method: str, target: str, headers: dict[str, str]) -> None:
        async with gate:
            response = await gateway_client.request(method, httpx.URL(target), headers=headers, timeout=30)
        if (problem := acceptable(target.split("?", 1)[0], response)) is not None:
            failures.append(f"{method} {target[:160]} -> {problem}")

    await asyncio.gather(*(call(*c) for c in calls))
    assert not failures, f"{len(failures)} of {len(calls)} calls misbehaved:\n" + "\n".join(failures[:40])
    await asyncio.sleep(0.5)  # let the processes flush their logs
    logged = tracebacks_since(sizes, stack.var_dir)
    assert not logged, "\n\n".join(logged[:5])


@pytest.mark.parametrize("expires", [DIGITS_5000, "-1", "\uff11\uff12\uff13", "1e309", "%ff", ""])
async def test_signed_file_url_with_a_hostile_expiry_is_a_plain_404(
    gateway_client: httpx.AsyncClient, expires: str
) -> None:
    response = await gateway_client.get(httpx.URL(f"/files/x?expires={expires}&signature=ab"))
    assert response.status_code == 404, response.text
    assert response.json()["errorCode"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("expires", "signature"),
    [(DIGITS_5000, "00"), ("9" * 13, "00"), ("\uff11\uff12\uff13", "00"), ("-1", "00"), ("", ""), ("9" * 10, "é")],
)
def test_verify_signature_refuses_what_it_never_signed(expires: str, signature: str) -> None:
    assert verify_signature("secret", "k", expires, signature) is False


def test_verify_signature_accepts_its_own() -> None:
    expires = int(time.time()) + 60
    assert verify_signature("secret", "k", str(expires), sign("secret", "k", expires)) is True
