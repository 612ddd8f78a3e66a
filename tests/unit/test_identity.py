"""Internal identity tokens: only the gateway's secret, only unexpired, only the internal audience."""

import time

import jwt
import pytest

from shared.errors import AuthRequiredError
from shared.identity import Identity, is_internal_header, sign_identity, verify_identity

SECRET = "s" * 32


def test_round_trip_keeps_every_field() -> None:
    identity = Identity(
        user_id="u1",
        auth_method="api_key",
        key_id="k1",
        scopes=["renders:read"],
        platform="revit",
        plugin_version="2.0",
        request_id="r1",
    )
    assert verify_identity(sign_identity(identity, SECRET), SECRET) == identity


def test_other_secret_is_refused() -> None:
    with pytest.raises(AuthRequiredError):
        verify_identity(sign_identity(Identity(user_id="u1"), SECRET), "x" * 32)


def test_expired_token_is_refused() -> None:
    token = sign_identity(Identity(user_id="u1"), SECRET, ttl_seconds=-30)  # beyond the clock-skew leeway
    with pytest.raises(AuthRequiredError):
        verify_identity(token, SECRET)


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "gateway", "aud": "public", "iat": 0, "exp": 2**33},
        {"iss": "someone", "aud": "internal", "iat": 0, "exp": 2**33},
        {"iss": "gateway", "aud": "internal", "iat": 0},
    ],
)
def test_wrong_claims_are_refused(claims: dict[str, object]) -> None:
    with pytest.raises(AuthRequiredError):
        verify_identity(jwt.encode(claims, SECRET, algorithm="HS256"), SECRET)


def test_alg_none_is_refused() -> None:
    token = jwt.encode({"iss": "gateway", "aud": "internal", "iat": int(time.time()), "exp": 2**33}, "", "none")
    with pytest.raises(AuthRequiredError):
        verify_identity(token, SECRET)


@pytest.mark.parametrize(
    ("name", "internal"),
    [
        ("X-Internal-Identity", True),
        ("x-internal-user", True),
        ("X-User-Id", True),
        ("X-Auth-Scopes", True),
        ("Authorization", False),
        ("X-Api-Key", False),
        ("X-Plugin-Platform", False),
    ],
)
def test_internal_header_names(name: str, internal: bool) -> None:
    assert is_internal_header(name) is internal
