"""Telemetry end to end through the gateway: who calls from which plugin (headers, legacy headers, User-Agent),
as the operator's summary shows it, and the admin API refusing everyone but operators.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from shared.testing.fixtures import PluginUser, sign_up
from shared.testing.kafka import wait_until
from shared.testing.renders import submission, wait_final

SUMMARY = "/api/admin/telemetry/summary"


async def summary(client: httpx.AsyncClient, operator: PluginUser, **params: str) -> dict[str, Any]:
    response = await client.get(SUMMARY, params=params, headers=operator.bearer)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def version_entry(data: dict[str, Any], platform: str, version: str) -> dict[str, Any] | None:
    for entry in data["platforms"]:
        if entry["platform"] == platform:
            for v in entry["versions"]:
                if v["pluginVersion"] == version:
                    return dict(v)
    return None


async def test_admin_api_is_for_operators_only(
    gateway_client: httpx.AsyncClient, user: PluginUser, operator: PluginUser
) -> None:
    anonymous = await gateway_client.get(SUMMARY)
    assert anonymous.status_code == 401
    assert anonymous.json()["errorCode"] == "AUTH_REQUIRED"
    plugin_user = await gateway_client.get(SUMMARY, headers=user.bearer)
    assert plugin_user.status_code == 403
    assert plugin_user.json()["errorCode"] == "INSUFFICIENT_PERMISSIONS"
    key = await gateway_client.post(
        "/api/plugins/keys", json={"name": "all", "scopes": ["renders:read"]}, headers=operator.bearer
    )
    with_key = await gateway_client.get(SUMMARY, headers={"X-Api-Key": key.json()["data"]["key"]})
    assert with_key.status_code == 403, "an operator's API key is not an operator's access token"
    ok = await gateway_client.get(SUMMARY, headers=operator.bearer)
    assert ok.status_code == 200
    assert {"activeUsers", "platforms", "routes", "webhooks"} <= set(ok.json()["data"])
    series = await gateway_client.get("/api/admin/telemetry/timeseries", headers=operator.bearer)
    assert series.status_code == 200
    assert series.json()["data"]["step"] == "hour"


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2025-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"until": "2026-13-40"},
        {"until": "0.0"},  # found by the fuzzer: was read as a Unix time
        {"since": "1764150000"},
    ],
)
async def test_summary_refuses_bad_windows(
    gateway_client: httpx.AsyncClient, operator: PluginUser, params: dict[str, str]
) -> None:
    response = await gateway_client.get(SUMMARY, params=params, headers=operator.bearer)
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "INVALID_INPUT"
    assert response.json()["details"]["field"] in ("since", "until")


async def test_platform_attribution_end_to_end(gateway_client: httpx.AsyncClient, operator: PluginUser) -> None:
    run = uuid.uuid4().hex[:6]
    cases = [
        ("revit", f"2025.{run}", {"X-Plugin-Platform": "Revit", "X-Plugin-Version": f"2025.{run}"}),
        ("rhino", f"8.{run}", {"X-Renderiq-Platform": "rhino", "X-Renderiq-Plugin-Version": f"8.{run}"}),
        ("sketchup", f"1.{run}", {"User-Agent": f"Renderiq-Plugin/SketchUp/1.{run}"}),
        ("blender", f"4.{run}", {"User-Agent": f"Blender/4.{run} (Windows 11)"}),
    ]
    users: list[PluginUser] = []
    for _, _, headers in cases:
        user = await sign_up(gateway_client)
        users.append(user)
        for _ in range(3):
            assert (await gateway_client.get("/api/plugins/credits", headers={**user.bearer, **headers})).is_success
        created = await gateway_client.post(
            "/api/plugins/renders", json=submission(), headers={**user.bearer, **headers}
        )
        assert created.status_code == 202, created.text
        await wait_final(gateway_client, created.json()["data"]["renderId"], user.bearer)

    async def all_counted() -> bool:
        data = await summary(gateway_client, operator)
        for platform, version, _ in cases:
            entry = version_entry(data, platform, version)
            if entry is None or entry["requests"] < 4 or entry["renders"]["completed"] < 1:
                return False
        return True

    await wait_until(all_counted, 30)
    data = await summary(gateway_client, operator)
    for platform, version, _ in cases:
        entry = version_entry(data, platform, version)
        assert entry is not None
        assert entry["requests"] == 4, (platform, entry)  # 3 credits reads and the render upload
        assert entry["activeUsers"] == 1
        assert entry["renders"]["created"] == 1
        assert entry["renders"]["completed"] == 1
        assert entry["successRate"] == 1.0
        assert entry["creditsSpent"] > 0
        assert entry["renderTimeMs"]["p50"] is not None
        assert entry["queueWaitMs"]["p50"] is not None
    routes = {(r["method"], r["route"]) for r in data["routes"]}
    assert ("GET", "/api/plugins/credits") in routes
    assert ("GET", "/api/plugins/renders/{id}") in routes


async def test_errors_are_counted_by_code(gateway_client: httpx.AsyncClient, operator: PluginUser) -> None:
    before = {(r["method"], r["route"]): r for r in (await summary(gateway_client, operator))["routes"]}
    missing = await gateway_client.get(f"/api/plugins/projects/{uuid.uuid4()}", headers=operator.bearer)
    assert missing.status_code == 404
    anonymous = await gateway_client.get("/api/plugins/projects/x")
    assert anonymous.status_code == 401
    key = ("GET", "/api/plugins/projects/{id}")
    previous = before.get(key, {"errorsByCode": {}})["errorsByCode"]

    async def counted() -> bool:
        routes = {(r["method"], r["route"]): r for r in (await summary(gateway_client, operator))["routes"]}
        codes = routes.get(key, {"errorsByCode": {}})["errorsByCode"]
        return bool(
            codes.get("NOT_FOUND", 0) == previous.get("NOT_FOUND", 0) + 1
            and codes.get("AUTH_REQUIRED", 0) == previous.get("AUTH_REQUIRED", 0) + 1
        )

    await wait_until(counted, 30)


async def test_dashboard_is_served_with_a_strict_policy(gateway_client: httpx.AsyncClient) -> None:
    page = await gateway_client.get("/admin/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert (await gateway_client.get("/admin/app.js")).status_code == 200
    for path in ("/admin/../config.py", "/admin/%2e%2e/config.py", "/admin/nope.js", "/admin/api.py"):
        assert (await gateway_client.get(path)).status_code == 404, path
