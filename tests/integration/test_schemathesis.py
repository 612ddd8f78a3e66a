"""Schemathesis against the live stack: generated requests (valid and invalid) for every operation of the published
spec, authenticated as a test user (API key where the operation takes one, else its access token, an operator's
for the operators' routes). No answer may be a 5xx, and every answer must conform to the spec.

The run is bounded (``FUZZ_EXAMPLES`` per operation and generation mode) and derandomized, so CI is repeatable; set
``FUZZ_EXAMPLES`` higher locally for a deeper run. The figures go to ``test-artifacts/schemathesis.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from shared.apikeys import SCOPES
from shared.testing.contract import CONFORMANCE_CHECKS, load_schema, load_spec
from shared.testing.fixtures import PluginUser, Stack

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
ARTIFACT = Path("test-artifacts") / "schemathesis.json"
ALL_SCOPES = list(SCOPES)


@pytest.fixture(scope="module")
def fuzz_user(stack: Stack) -> dict[str, str]:
    """A fresh account with an all-scopes key: what a plugin holds."""
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        email = f"fuzz-{os.urandom(5).hex()}@example.com"
        signup = http.post("/api/plugins/auth/signup", json={"email": email, "password": "fuzz-password-1"})
        assert signup.status_code == 201, signup.text
        bearer = f"Bearer {signup.json()['access_token']}"
        created = http.post(
            "/api/plugins/keys", headers={"Authorization": bearer}, json={"name": "fuzz", "scopes": ALL_SCOPES}
        )
        assert created.status_code == 201, created.text
        return {"bearer": bearer, "key": created.json()["data"]["key"]}


def credentials_for(operation: dict[str, Any], path: str, user: dict[str, str], operator: PluginUser) -> dict[str, str]:
    schemes = {name for requirement in operation["security"] for name in requirement}
    if not schemes:
        return {}
    if path.startswith("/api/admin"):
        return operator.bearer
    if "apiKey" in schemes:
        return {"X-Api-Key": user["key"]}
    return {"Authorization": user["bearer"]}


# Fields whose validity JSON Schema cannot state: the spec describes them in words, and a schema-valid value can
# still be refused (400 naming that field). Any other refusal of schema-valid data is drift.
SEMANTIC_FIELDS: dict[str, set[str]] = {
    "POST /api/plugins/auth/signup": {"email"},  # a deliverable domain (not .test, .invalid, ...)
    "POST /api/plugins/auth/signin": {"email"},
    "POST /api/plugins/keys": {"expiresAt"},  # in the future
    "GET /api/plugins/keys": {"cursor"},
    "GET /api/plugins/renders": {"cursor"},  # a cursor this endpoint returned
    "GET /api/plugins/credits/transactions": {"cursor"},
    "GET /api/plugins/webhooks/{webhookId}/deliveries": {"cursor"},
    "POST /api/plugins/renders": {"uploadedImageData", "model", "projectId", "callback_url"},  # a real image, model...
    "POST /api/plugins/webhooks/register": {"url", "secret"},  # a public https URL; base64 of >= 24 bytes
    "GET /api/admin/telemetry/summary": {"since", "until"},  # since < until, at most 93 days apart
    "GET /api/admin/telemetry/timeseries": {"since", "until", "step"},
}


SEMANTIC_CODES = {"INVALID_IMAGE", "MODEL_UNAVAILABLE"}  # the image's content, the deployment's models


def positive_data_acceptance_but_semantics(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' ``positive_data_acceptance``, except a 400 on one of the operation's ``SEMANTIC_FIELDS``."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Failure:
        if response.status_code == 402:  # the account ran out of credits: valid, and unaffordable
            return None
        body = response.json() if response.status_code == 400 else {}
        field = body.get("details", {}).get("field")
        semantic = SEMANTIC_FIELDS.get(case.operation.label, set())
        if body.get("details", {}).get("reason") in ("text", "NUL"):  # a NUL character: never stored, never routed
            return None
        if field in semantic or (body.get("errorCode") in SEMANTIC_CODES and "uploadedImageData" in semantic):
            return None
        raise


def acceptance_checks() -> list[Any]:
    """What the routes accept must match the spec both ways: data the spec calls valid is not refused as invalid,
    data it calls invalid is refused (4xx)."""
    return [positive_data_acceptance_but_semantics, negative_data_rejection]


def fuzz(
    operation: Any, mode: GenerationMode, headers: dict[str, str], statuses: Counter[int], per_operation: Counter[str]
) -> None:
    """Hypothesis drives one operation: explicit examples from the spec first, then generated cases."""

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: Any) -> None:
        response = case.call(headers=headers, timeout=30)
        statuses[response.status_code] += 1
        per_operation[operation.label] += 1
        if os.environ.get("FUZZ_DEBUG"):
            print(operation.label, case.headers, response.status_code, response.text[:150])  # noqa: T201
        case.validate_response(response, checks=[*CONFORMANCE_CHECKS, *acceptance_checks()])

    exercise()


def test_fuzzing_every_operation_finds_no_server_error_and_no_divergence(
    stack: Stack, fuzz_user: dict[str, str], operator: PluginUser
) -> None:
    spec = load_spec(stack.gateway_url)
    schema = load_schema(stack.gateway_url)
    schema.config.generation.update(with_security_parameters=False)  # our credentials, not generated ones
    statuses: Counter[int] = Counter()
    per_operation: Counter[str] = Counter()
    failures: list[str] = []
    unnegatable: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    for operation in operations:
        definition = spec["paths"][operation.path][operation.method.lower()]
        headers = credentials_for(definition, operation.path, fuzz_user, operator)

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, headers, statuses, per_operation)
            except Unsatisfiable:  # nothing in the operation can be made invalid (free strings, no body)
                unnegatable.append(operation.label)
            except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
                failures.append(f"{operation.label} ({mode.value}): {exc}")

    figures = {
        "operations": len(operations),
        "requests": sum(per_operation.values()),
        "serverErrors": sum(n for status, n in statuses.items() if status >= 500),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "examplesPerOperationAndMode": FUZZ_EXAMPLES,
        "failures": len(failures),
        "operationsWithNothingToNegate": len(unnegatable),
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))  # noqa: T201 - the figures are the point of this run
    assert not failures, "\n\n".join(failures)
    assert figures["operations"] == len([op for ops in spec["paths"].values() for op in ops])
    assert all(per_operation[operation.label] > 0 for operation in operations)
    assert figures["serverErrors"] == 0
