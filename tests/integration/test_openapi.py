"""The published API description: valid OpenAPI 3.1, exactly API.md's operations, generated from the code, and
true to what the live routes accept and return (a walk over every operation, each response checked)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic_asyncapi import AsyncAPI

from services.auth import main as auth_main
from services.credits import main as credits_main
from services.gateway.openapi import DOCUMENTED_SERVICES, build_openapi
from services.renders import main as renders_main
from services.telemetry import main as telemetry_main
from services.webhooks import main as webhooks_main
from shared.apikeys import SCOPES
from shared.events.topics import APIKEY_EVENTS, GATEWAY_REQUESTS, RENDER_EVENTS, RENDER_JOBS, WEBHOOK_EVENTS
from shared.openapi import service_openapi
from shared.testing.contract import Conformance, load_schema, load_spec
from shared.testing.fixtures import PluginUser, Stack, sign_up
from shared.testing.receiver import Receiver
from shared.testing.renders import image_bytes, submission
from shared.testing.servers import serve_in_thread

# API.md, operation by operation: (method, path, who may call it).
CONTRACT: dict[tuple[str, str], str] = {
    ("post", "/api/plugins/auth/signup"): "none",
    ("post", "/api/plugins/auth/signin"): "none",
    ("post", "/api/plugins/auth/refresh"): "none",
    ("post", "/api/plugins/auth/signout"): "none",
    ("get", "/api/plugins/auth/me"): "any",
    ("get", "/.well-known/jwks.json"): "none",
    ("post", "/api/plugins/keys"): "bearer",
    ("get", "/api/plugins/keys"): "bearer",
    ("delete", "/api/plugins/keys/{keyId}"): "bearer",
    ("post", "/api/plugins/renders"): "renders:create",
    ("get", "/api/plugins/renders/{renderId}"): "renders:read",
    ("get", "/api/plugins/renders"): "renders:read",
    ("delete", "/api/plugins/renders/{renderId}"): "renders:create",
    ("get", "/api/plugins/renders/{renderId}/events"): "renders:read",
    ("get", "/api/plugins/projects"): "projects:read",
    ("post", "/api/plugins/projects"): "projects:write",
    ("get", "/api/plugins/projects/{projectId}"): "projects:read",
    ("delete", "/api/plugins/projects/{projectId}"): "projects:write",
    ("get", "/api/plugins/credits"): "any",
    ("get", "/api/plugins/credits/transactions"): "any",
    ("post", "/api/plugins/webhooks/register"): "webhook:write",
    ("get", "/api/plugins/webhooks"): "webhook:write",
    ("delete", "/api/plugins/webhooks/{webhookId}"): "webhook:write",
    ("post", "/api/plugins/webhooks/{webhookId}/test"): "webhook:write",
    ("post", "/api/plugins/webhooks/{webhookId}/enable"): "webhook:write",
    ("get", "/api/plugins/webhooks/{webhookId}/deliveries"): "webhook:write",
    ("post", "/api/plugins/webhooks/{webhookId}/deliveries/{deliveryId}/resend"): "webhook:write",
    ("get", "/api/plugins/webhooks/callback-secret"): "webhook:write",
    ("get", "/api/plugins/health"): "none",
    ("get", "/api/admin/telemetry/summary"): "operator",
    ("get", "/api/admin/telemetry/timeseries"): "operator",
}
ALL_SCOPES = list(SCOPES)


@pytest.fixture(scope="module")
def spec(stack: Stack) -> dict[str, Any]:
    return load_spec(stack.gateway_url)


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}


def test_the_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(spec).validate()


def test_the_spec_describes_exactly_the_contracts_operations(spec: dict[str, Any]) -> None:
    assert set(operations(spec)) == set(CONTRACT)
    ids = [op["operationId"] for op in operations(spec).values()]
    assert len(set(ids)) == len(ids), ids
    assert all(op["summary"] and op["tags"] for op in operations(spec).values())


def in_process_specs() -> dict[str, dict[str, Any]]:
    """Each documented service's own document, from its app built here (the gateway asks the running ones)."""
    apps: dict[str, Callable[[], FastAPI]] = {
        "auth": auth_main.create_app,
        "renders": renders_main.create_app,
        "credits": credits_main.create_app,
        "webhooks": webhooks_main.create_app,
        "telemetry": telemetry_main.create_app,
    }
    assert set(apps) == set(DOCUMENTED_SERVICES)
    return {name: service_openapi(name, apps[name]().state.api_routers) for name in DOCUMENTED_SERVICES}


def test_the_served_spec_is_the_one_the_code_generates(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a copy kept by hand: the gateway serves what the services' routes and models produce now."""
    monkeypatch.setenv("APP_ENV", "dev")  # the apps are only built, never started: dev settings will do
    assert spec == build_openapi(in_process_specs())


def test_each_operation_states_its_credentials_and_scope(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-Api-Key"}
    for key, op in operations(spec).items():
        who = CONTRACT[key]
        bearer_only: list[dict[str, list[str]]] = [{"bearer": []}]
        either: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
        expected = [] if who == "none" else bearer_only if who in ("bearer", "operator") else either
        assert op["security"] == expected, key
        if ":" in who:
            assert op["x-required-scope"] == who, key
            assert f"`{who}`" in op["description"], key


def test_each_operation_documents_its_success_and_errors_in_the_envelope(spec: dict[str, Any]) -> None:
    codes = set(spec["components"]["schemas"]["ErrorResponse"]["properties"]["errorCode"]["enum"])
    assert {"AUTH_REQUIRED", "INSUFFICIENT_PERMISSIONS", "RATE_LIMIT_EXCEEDED", "INSUFFICIENT_CREDITS"} <= codes
    for key, op in operations(spec).items():
        statuses = set(op["responses"])
        assert any(s.startswith("2") for s in statuses), key
        assert "503" in statuses, key
        assert "422" not in statuses, key
        if CONTRACT[key] != "none":
            assert {"401", "429"} <= statuses, key
        for status, response in op["responses"].items():
            assert "X-Request-Id" in response["headers"], (key, status)
            if status.startswith("4"):
                schema = response["content"]["application/json"]["schema"]
                assert "ErrorResponse" in str(schema), (key, status)
    assert "Retry-After" in operations(spec)[("get", "/api/plugins/renders")]["responses"]["429"]["headers"]
    assert "402" in operations(spec)[("post", "/api/plugins/renders")]["responses"]


def test_requests_carry_examples(spec: dict[str, Any]) -> None:
    create = operations(spec)[("post", "/api/plugins/renders")]["requestBody"]["content"]
    assert set(create) == {"application/json", "multipart/form-data"}
    example = create["application/json"]["example"]
    assert base64.b64decode(example["uploadedImageData"]).startswith(b"\x89PNG")
    signup = spec["components"]["schemas"]["SignupRequest"]
    assert signup["examples"], signup
    assert spec["components"]["schemas"]["ErrorResponse"]["examples"]


def test_the_docs_page_works_without_a_cdn(stack: Stack) -> None:
    page = httpx.get(stack.gateway_url + "/api/plugins/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/api/plugins/openapi.json" in page.text
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        assert f"/api/plugins/docs/assets/{asset}" in page.text
        served = httpx.get(f"{stack.gateway_url}/api/plugins/docs/assets/{asset}")
        assert served.status_code == 200, asset
        assert kind in served.headers["content-type"], asset
    assert "cdn." not in page.text.lower()
    assert "persistAuthorization" not in page.text  # credentials typed into the page are not kept in the browser
    missing = httpx.get(stack.gateway_url + "/api/plugins/docs/assets/..%2F..%2Fsecrets")
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "NOT_FOUND"


def test_the_asyncapi_document_describes_every_topic(stack: Stack) -> None:
    document = httpx.get(stack.gateway_url + "/api/plugins/asyncapi.json").json()
    assert document["asyncapi"].startswith("3.")
    AsyncAPI.model_validate(document)  # a valid AsyncAPI 3.0 document
    channels = document["channels"]
    assert set(channels) == {RENDER_EVENTS, RENDER_JOBS, APIKEY_EVENTS, GATEWAY_REQUESTS, WEBHOOK_EVENTS}
    render_event = document["components"]["schemas"]["RenderEventV1"]
    assert {"renderId", "userId", "status"} <= set(render_event["required"])
    assert "CloudEvents" in document["info"]["description"]


async def test_every_operation_answers_as_documented(stack: Stack, operator: PluginUser) -> None:
    """A walk over every operation (successes and the usual refusals), each response checked against the spec:
    this fails when a route returns or accepts something its declared models do not say."""
    contract = Conformance(load_schema(stack.gateway_url))
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:

        async def call(method: str, template: str, path: str | None = None, **kwargs: Any) -> httpx.Response:
            response = await http.request(method, path or template, **kwargs)
            await response.request.aread()  # a multipart body is streamed; the checks read it back
            return contract.check(method, template, response)

        user = await sign_up(http)
        bearer = user.bearer
        await call("get", "/api/plugins/health")
        await call("get", "/.well-known/jwks.json")
        await call("post", "/api/plugins/auth/signup", json={"email": user.email, "password": "another-pass"})
        await call("post", "/api/plugins/auth/signup", json={"email": "not-an-email", "password": "long-enough"})
        signin = await call("post", "/api/plugins/auth/signin", json={"email": user.email, "password": user.password})
        await call("post", "/api/plugins/auth/signin", json={"email": user.email, "password": "wrong-password"})
        refreshed = await call(
            "post", "/api/plugins/auth/refresh", json={"refresh_token": signin.json()["refresh_token"]}
        )
        await call("post", "/api/plugins/auth/refresh", json={"refresh_token": "spent-or-made-up"})
        await call("post", "/api/plugins/auth/signout", json={"refresh_token": refreshed.json()["refresh_token"]})
        await call("get", "/api/plugins/auth/me", headers=bearer)
        await call("get", "/api/plugins/auth/me")

        created = await call("post", "/api/plugins/keys", headers=bearer, json={"name": "ci", "scopes": ALL_SCOPES})
        key = {"X-Api-Key": created.json()["data"]["key"]}
        await call("post", "/api/plugins/keys", headers=bearer, json={"name": "x", "scopes": ["nope"]})
        await call("get", "/api/plugins/keys", headers=bearer)
        await call("get", "/api/plugins/keys", headers=key)  # a key cannot manage keys: 403
        doomed = await call("post", "/api/plugins/keys", headers=bearer, json={"name": "d", "scopes": ["renders:read"]})
        doomed_id = doomed.json()["data"]["id"]
        await call("delete", "/api/plugins/keys/{keyId}", f"/api/plugins/keys/{doomed_id}", headers=bearer)
        await call("delete", "/api/plugins/keys/{keyId}", f"/api/plugins/keys/{uuid.uuid4()}", headers=bearer)

        project = await call("post", "/api/plugins/projects", headers=key, json={"name": "Villa", "platform": "rhino"})
        project_id = project.json()["data"]["id"]
        await call("post", "/api/plugins/projects", headers=key, data={"name": "Form project"})
        await call("post", "/api/plugins/projects", headers=key, json={"description": "no name"})
        await call("get", "/api/plugins/projects", headers=key, params={"platform": "rhino", "limit": 5})
        await call("get", "/api/plugins/projects/{projectId}", f"/api/plugins/projects/{project_id}", headers=key)

        render = await call(
            "post", "/api/plugins/renders", headers=key, json=submission(projectId=project_id, prompt="SLOW_3")
        )
        render_id = render.json()["data"]["renderId"]
        await call(
            "post",
            "/api/plugins/renders",
            headers={**key, "Idempotency-Key": uuid.uuid4().hex},
            data={"uploadedImageType": "image/png", "quality": "standard"},
            files={"uploadedImageData": ("view.png", image_bytes(), "image/png")},
        )
        await call("post", "/api/plugins/renders", headers=key, json=submission(quality="ultra"))  # 402
        await call("post", "/api/plugins/renders", headers=key, json=submission(uploadedImageType="image/gif"))
        await call("post", "/api/plugins/renders", headers={"X-Api-Key": "rk_live_" + "a" * 32}, json=submission())
        await call("get", "/api/plugins/renders", headers=key, params={"status": "processing", "limit": 1})
        one = f"/api/plugins/renders/{render_id}"
        await call("get", "/api/plugins/renders/{renderId}", one, headers=key)
        await call("get", "/api/plugins/renders/{renderId}/events", one + "/events", headers=key)
        await call("delete", "/api/plugins/renders/{renderId}", one, headers=key)
        await call("delete", "/api/plugins/renders/{renderId}", one, headers=key)  # finished: 409
        await call("get", "/api/plugins/renders/{renderId}", f"/api/plugins/renders/{uuid.uuid4()}", headers=key)

        await call("delete", "/api/plugins/projects/{projectId}", f"/api/plugins/projects/{project_id}", headers=key)
        await call("get", "/api/plugins/credits", headers=key)
        await call("get", "/api/plugins/credits/transactions", headers=bearer, params={"limit": 2})

        hooks = Receiver()
        with serve_in_thread(hooks.app) as receiver_url:
            url = f"{receiver_url}/hook/{uuid.uuid4().hex[:8]}"
            registered = await call(
                "post", "/api/plugins/webhooks/register", headers=key, json={"url": url, "events": ["*"]}
            )
            await call("post", "/api/plugins/webhooks/register", headers=key, json={"url": url, "events": ["*"]})
            await call("post", "/api/plugins/webhooks/register", headers=key, json={"url": "ftp://x", "events": []})
            webhook = f"/api/plugins/webhooks/{registered.json()['data']['webhookId']}"
            await call("get", "/api/plugins/webhooks", headers=key)
            await call("get", "/api/plugins/webhooks/callback-secret", headers=key)
            test = await call("post", "/api/plugins/webhooks/{webhookId}/test", webhook + "/test", headers=key)
            delivery_id = test.json()["data"]["deliveryId"]
            await asyncio.sleep(0.5)
            await call("get", "/api/plugins/webhooks/{webhookId}/deliveries", webhook + "/deliveries", headers=key)
            await call(
                "post",
                "/api/plugins/webhooks/{webhookId}/deliveries/{deliveryId}/resend",
                f"{webhook}/deliveries/{delivery_id}/resend",
                headers=key,
            )
            await call("post", "/api/plugins/webhooks/{webhookId}/enable", webhook + "/enable", headers=key)
            await call("delete", "/api/plugins/webhooks/{webhookId}", webhook, headers=key)

        await call("get", "/api/admin/telemetry/summary", headers=operator.bearer)
        await call("get", "/api/admin/telemetry/timeseries", headers=operator.bearer, params={"step": "hour"})
        await call("get", "/api/admin/telemetry/summary", headers=bearer)  # not an operator: 403

    assert contract.seen == set(CONTRACT)
