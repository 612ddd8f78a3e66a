"""What the gateway's public port serves: ``/api``, ``/admin``, ``/files`` and ``/.well-known``, nothing else.

Probes and metrics (which describe the platform's inside: process names, queue depths, error counts) are on the
internal listener only, which a pod exposes to the kubelet and Prometheus, never to the ingress.
"""

from __future__ import annotations

import httpx
import pytest

from shared.testing.fixtures import Stack

INTERNAL_ONLY = ("/health/live", "/health/ready", "/metrics", "/internal/whoami", "/internal/openapi.json")


@pytest.mark.parametrize("path", INTERNAL_ONLY)
async def test_the_public_port_does_not_serve_probes_metrics_or_internal_routes(stack: Stack, path: str) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as client:
        for method in ("GET", "HEAD", "POST"):
            response = await client.request(method, path)
            assert response.status_code in (404, 405), (method, path, response.status_code)
            if method != "HEAD":
                assert response.json()["errorCode"] in ("NOT_FOUND", "INVALID_INPUT")
            assert "plugin_http_requests_total" not in response.text


async def test_the_internal_listener_serves_probes_and_metrics_and_no_api(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_internal_url) as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"keyEvents": "ok"}
        metrics = await client.get("/metrics")
        assert 'plugin_http_requests_total{method="GET",service="gateway"' in metrics.text
        # Nothing of the public API answers here: it is not a second way in.
        for path in ("/api/plugins/health", "/api/plugins/credits", "/.well-known/jwks.json", "/admin"):
            assert (await client.get(path)).status_code == 404, path


async def test_the_public_port_still_serves_its_own_paths(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as client:
        assert (await client.get("/api/plugins/health")).status_code == 200
        assert (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert (await client.get("/api/plugins/openapi.json")).status_code == 200
        assert (await client.get("/files/nothing?expires=1&signature=x")).status_code == 404
