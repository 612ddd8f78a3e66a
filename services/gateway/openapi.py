"""The public OpenAPI 3.1 document, built from the services' own routes and models, plus the gateway's policies.

Each service declares what its routes accept and return (request models, ``response_model``, its own refusals).
The gateway adds what it enforces in front of them: which credentials and scope a route needs (``routing``), the
refusals every route shares (401/403/429/503...), the request-id and rate-limit headers, and the plugin headers.
Internal routes (``/internal``) and the dashboard's files are left out: the gateway never routes them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from services.gateway import api as gateway_api
from services.gateway.platform import PLATFORMS
from services.gateway.routing import ROUTES, Access, policy_for, route_for
from shared.errors import ERROR_DESCRIPTIONS, ErrorResponse
from shared.openapi import service_openapi

API_VERSION = gateway_api.API_VERSION
TITLE = "Plugin platform API"
SCHEMA_REF = "#/components/schemas/"
ERROR_REF = {"$ref": SCHEMA_REF + "ErrorResponse"}

DESCRIPTION = """\
The public API of the rendering service's plugin platform: sign in, hold scoped API keys, submit a screenshot of a
3D view, follow the render, spend credits and receive signed webhooks.

* **Envelope.** Success: `{"success": true, "data": ...}` (the auth endpoints put token fields at the top level).
  Error: `{"success": false, "error", "errorCode", "details"}`: branch on `errorCode`, never on the message.
* **Credentials.** `Authorization: Bearer <access_token>` (every scope of its user) or `X-Api-Key: <key>` (only
  the key's scopes). When `Authorization` is present it alone decides. Each operation lists the scope it needs.
* **Plugin identity.** Send `X-Plugin-Platform` and `X-Plugin-Version` (or a User-Agent like
  `Renderiq-Plugin/SketchUp/1.4.2`): every render and request is recorded with them.
* **Retries.** 429 and 503 answers carry `Retry-After`; a render create with the same `Idempotency-Key` and body
  within 24 h is the same render, charged once.
* **Events.** The platform's Kafka topics are described by the AsyncAPI document at `/api/plugins/asyncapi.json`.
"""

TAGS = [
    {"name": "auth", "description": "Accounts and tokens"},
    {"name": "keys", "description": "API keys (an account's own access token only)"},
    {"name": "renders", "description": "Submit a screenshot, follow the render, get the image"},
    {"name": "projects", "description": "Group renders by project"},
    {"name": "credits", "description": "Balance and ledger"},
    {"name": "webhooks", "description": "Signed (Standard Webhooks) deliveries of render events"},
    {"name": "health", "description": "Liveness of the platform"},
    {"name": "operators", "description": "Operators' telemetry (an operator's access token)"},
]
TAG_OF_SEGMENT = {"auth": "auth", "keys": "keys", "renders": "renders", "projects": "projects"}

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from /auth/signup, /auth/signin or /auth/refresh (EdDSA JWT, 1 h).",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "An API key (`rk_live_...`) from POST /keys; carries only its scopes.",
    },
}

COMMON_HEADERS = {
    "X-Request-Id": {
        "description": "The request's id: the caller's `X-Request-Id` when valid, else a new one. Quote it.",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {"description": "Requests allowed in the window", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in the window", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Seconds until the window resets", "schema": {"type": "integer"}},
}
RETRY_AFTER = {"description": "Seconds to wait before retrying", "required": True, "schema": {"type": "integer"}}

PLUGIN_PARAMETERS = [
    {
        "name": "X-Plugin-Platform",
        "in": "header",
        "required": False,
        "description": (
            "The host application of the calling plugin: one of "
            + ", ".join(f"`{p}`" for p in PLATFORMS)
            + " (case-insensitive). Anything else, or none, falls back to the User-Agent, then `unknown`."
        ),
        "schema": {"type": "string", "examples": list(PLATFORMS)},
    },
    {
        "name": "X-Plugin-Version",
        "in": "header",
        "required": False,
        "description": "The calling plugin's version, e.g. `1.4.2`; ignored unless it looks like a version.",
        "schema": {"type": "string", "examples": ["1.4.2"]},
    },
]

INSUFFICIENT_CREDITS = {
    "title": "InsufficientCreditsResponse",
    "allOf": [
        ERROR_REF,
        {
            "type": "object",
            "properties": {"requiredCredits": {"type": "integer"}, "availableCredits": {"type": "integer"}},
            "required": ["requiredCredits", "availableCredits"],
        },
    ],
}


DOCUMENTED_SERVICES = tuple(dict.fromkeys(service for _, service in ROUTES))
"""The services whose public routes the gateway forwards: each serves its own document."""


def gateway_openapi() -> dict[str, Any]:
    """The gateway's own routes (health)."""
    return service_openapi("gateway", [gateway_api.router])


def is_public(path: str) -> bool:
    """Routed by the gateway (or its own health route), and not the dashboard's static files."""
    if path == "/api/plugins/health":
        return True
    return route_for(path) is not None and not path.startswith("/admin")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def public_path(path: str) -> str:
    """``/renders/{render_id}`` → ``/renders/{renderId}``: API.md's parameter names (not visible on the wire)."""
    return re.sub(r"\{([a-z_]+)\}", lambda m: "{" + _camel(m.group(1)) + "}", path)


def _tag(path: str) -> str:
    if path.startswith("/api/admin"):
        return "operators"
    if path.startswith("/.well-known") or path.startswith("/api/plugins/auth"):
        return "auth"
    segment = path.removeprefix("/api/plugins/").split("/")[0]
    return TAG_OF_SEGMENT.get(segment, segment)


def _security(access: Access) -> list[dict[str, list[str]]]:
    if access in (Access.PUBLIC, Access.CREDENTIALS):
        return []
    if access in (Access.BEARER, Access.OPERATOR):
        return [{"bearer": []}]
    return [{"bearer": []}, {"apiKey": []}]


def _shared_errors(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    """The refusals the gateway and the service framework can give on this operation, whatever the route."""
    access = policy_for(method.upper(), path).access
    statuses = [503]
    if path != "/api/plugins/health":
        statuses.append(429)
    if operation.get("parameters") or operation.get("requestBody") or access is not Access.PUBLIC:
        statuses.append(400)
    if access is not Access.PUBLIC:
        statuses.append(401)
    if access in (Access.SCOPE, Access.BEARER, Access.OPERATOR):
        statuses.append(403)
    if "{" in path:
        statuses.append(404)
    if method in ("post", "put", "patch"):
        statuses.append(413)
    return statuses


def _error_response(status: int) -> dict[str, Any]:
    schema = INSUFFICIENT_CREDITS if status == 402 else ERROR_REF
    headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    if status in (429, 503):
        headers["Retry-After"] = RETRY_AFTER if status == 429 else {**RETRY_AFTER, "required": False}
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "headers": headers,
        "content": {"application/json": {"schema": schema}},
    }


def _with_headers(response: dict[str, Any]) -> dict[str, Any]:
    headers = {name: {"$ref": f"#/components/headers/{name}"} for name in COMMON_HEADERS}
    return {**response, "headers": {**headers, **response.get("headers", {})}}


def _operation_id(tag: str, path: str, method: str, fastapi_id: str) -> str:
    """From the route function's name (FastAPI's id is ``{name}{path}_{method}``): ``create_render`` →
    ``createRender``; in ``webhooks``, ``delete`` → ``webhooksDelete``."""
    name = fastapi_id.removesuffix(re.sub(r"\W", "_", path) + "_" + method)
    words = name.split("_")
    if not any(tag.rstrip("s") in word for word in words):
        words.insert(0, tag)
    return _camel("_".join(words))


def _operation(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    """One service operation as the public sees it through the gateway."""
    op = copy.deepcopy(operation)
    shared_errors = _shared_errors(path, method, operation)
    policy = policy_for(method.upper(), path)
    tag = _tag(path)
    op["tags"] = [tag]
    op["operationId"] = _operation_id(tag, path, method, op["operationId"])
    op["security"] = _security(policy.access)
    if policy.scope:
        op["x-required-scope"] = policy.scope
        op["description"] = (op.get("description", "") + f"\n\nRequires scope `{policy.scope}`.").strip()
    elif policy.access is Access.BEARER:
        op["description"] = (
            op.get("description", "") + "\n\nAn access token only: API keys cannot manage keys."
        ).strip()
    elif policy.access is Access.OPERATOR:
        op["description"] = (op.get("description", "") + "\n\nAn operator's access token only.").strip()
    parameters = []
    for parameter in op.get("parameters", []):
        if parameter["in"] == "path":
            parameter["name"] = _camel(parameter["name"])
        parameters.append(parameter)
    op["parameters"] = parameters + copy.deepcopy(PLUGIN_PARAMETERS)
    responses: dict[str, Any] = {}
    for status, response in op.get("responses", {}).items():
        if status == "422":  # the services answer invalid input with the contract's 400, never FastAPI's 422
            continue
        declared = response.get("content", {}).get("application/json", {}).get("schema")
        if status[0] in "45" and declared == ERROR_REF:
            responses[status] = _error_response(int(status))
        else:
            responses[status] = _with_headers(response)
    for status in shared_errors:
        responses.setdefault(str(status), _error_response(status))
    op["responses"] = dict(sorted(responses.items()))
    return op


def _same_shape(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def shape(schema: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in schema.items() if k not in ("title", "description")}

    return shape(a) == shape(b)


def _short_name(name: str) -> str:
    """``services__credits__models__Credits`` (FastAPI's name when one app has two models of a name) → ``Credits``."""
    *module, model = name.split("__")
    return model if module and model and all(part.isidentifier() and part.islower() for part in module) else name


def _merge(specs: Mapping[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The public paths and their schemas from every service's document. Two services' models of one name and
    one shape (auth's and credits' ``Credits``) become one schema; of different shapes, the later is prefixed
    with its service's name."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for service, spec in specs.items():
        own: dict[str, Any] = spec.get("components", {}).get("schemas", {})
        renames: dict[str, str] = {}
        for name, schema in own.items():
            short = _short_name(name)
            taken = schemas.get(short)
            if taken is not None and not _same_shape(taken, schema):
                short = service.title().replace("-", "") + short
            if short != name:
                renames[SCHEMA_REF + name] = SCHEMA_REF + short
        spec = _rewrite_refs(spec, renames)
        for name, schema in spec.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(renames.get(SCHEMA_REF + name, SCHEMA_REF + name).removeprefix(SCHEMA_REF), schema)
        for path, operations in spec.get("paths", {}).items():
            if is_public(path):
                paths[path] = operations
    return paths, schemas


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: renames.get(value, value) if key == "$ref" else _rewrite_refs(value, renames)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def build_openapi(service_specs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The public document from the services' own documents (``/internal/openapi.json``) and the gateway's.
    Deterministic: the same services give the same document."""
    raw_paths, schemas = _merge({**service_specs, "gateway": gateway_openapi()})
    paths = {
        public_path(path): {method: _operation(path, method, operation) for method, operation in operations.items()}
        for path, operations in raw_paths.items()
    }
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template=SCHEMA_REF + "{model}")
    spec = {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": API_VERSION,
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/", "description": "This gateway"}],
        "tags": TAGS,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES, "headers": COMMON_HEADERS},
    }
    return _without_unused_schemas(spec)


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node))
    return set()


def _without_unused_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """Internal routes' models (kept out with their routes) would otherwise linger in ``components``."""
    schemas: dict[str, Any] = spec["components"]["schemas"]
    reachable: set[str] = set()
    frontier = {ref.removeprefix(SCHEMA_REF) for ref in _refs(spec["paths"]) if ref.startswith(SCHEMA_REF)}
    while frontier:
        name = frontier.pop()
        if name in reachable or name not in schemas:
            continue
        reachable.add(name)
        frontier |= {ref.removeprefix(SCHEMA_REF) for ref in _refs(schemas[name]) if ref.startswith(SCHEMA_REF)}
    spec["components"]["schemas"] = {name: schemas[name] for name in sorted(reachable)}
    return spec
