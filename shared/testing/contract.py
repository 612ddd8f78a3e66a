"""Checking live responses against the gateway's published OpenAPI document (schemathesis' own checks)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

OPENAPI_PATH = "/api/plugins/openapi.json"

CONFORMANCE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def load_spec(gateway_url: str) -> dict[str, Any]:
    response = httpx.get(gateway_url + OPENAPI_PATH, timeout=30)
    assert response.status_code == 200, response.text
    spec: dict[str, Any] = response.json()
    return spec


def load_schema(gateway_url: str) -> BaseSchema:
    """The published document, with requests going to ``gateway_url``."""
    schema = schemathesis.openapi.from_url(gateway_url + OPENAPI_PATH)
    schema.config.update(base_url=gateway_url)
    return schema


class Conformance:
    """Validates each response against the operation it answers; records which operations were seen."""

    def __init__(self, schema: BaseSchema) -> None:
        self.schema = schema
        self.seen: set[tuple[str, str]] = set()

    def check(self, method: str, path_template: str, response: httpx.Response) -> httpx.Response:
        operation = self.schema[path_template][method.upper()]
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path_template))
        matched = re.fullmatch(pattern, response.request.url.path)
        assert matched is not None, (path_template, response.request.url.path)
        case = operation.Case(path_parameters=matched.groupdict())
        case.validate_response(response, checks=CONFORMANCE_CHECKS)
        self.seen.add((method.lower(), path_template))
        return response
