"""Internal identity tokens: the gateway's key alone mints user identities; a service's key only its own credential,
addressed to one callee; nothing unexpired, unsigned, symmetric or for another audience passes."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared import identity as identity_module
from shared.errors import AuthRequiredError
from shared.identity import (
    Identity,
    is_internal_header,
    sign_identity,
    sign_service_token,
    verify_identity,
    verify_service_token,
)
from shared.keys import load_private_key, load_public_key, private_text, public_text

GATEWAY = Ed25519PrivateKey.generate()
AUTH = Ed25519PrivateKey.generate()
CALLERS = {"auth": AUTH.public_key()}


def key_of(service: str) -> Ed25519PublicKey | None:
    return CALLERS.get(service)


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
    token = sign_identity(identity, GATEWAY)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert verify_identity(token, GATEWAY.public_key()) == identity


def test_other_key_is_refused_and_a_rotated_in_key_is_accepted() -> None:
    other = Ed25519PrivateKey.generate()
    token = sign_identity(Identity(user_id="u1"), other)
    with pytest.raises(AuthRequiredError):
        verify_identity(token, GATEWAY.public_key())
    assert verify_identity(token, (GATEWAY.public_key(), other.public_key())).user_id == "u1"


def test_expired_token_is_refused() -> None:
    token = sign_identity(Identity(user_id="u1"), GATEWAY, ttl_seconds=-30)  # beyond the clock-skew leeway
    with pytest.raises(AuthRequiredError):
        verify_identity(token, GATEWAY.public_key())


def test_a_verified_token_is_remembered_only_for_its_keys_and_its_lifetime() -> None:
    token = sign_identity(Identity(user_id="u1"), GATEWAY, ttl_seconds=60)
    assert verify_identity(token, GATEWAY.public_key()).user_id == "u1"  # now remembered
    with pytest.raises(AuthRequiredError):  # remembered for the key that verified it, not for any other
        verify_identity(token, Ed25519PrivateKey.generate().public_key())
    assert verify_identity(token, GATEWAY.public_key()).user_id == "u1"
    # Expired 4 s ago: still within the clock-skew leeway, for one more second.
    ending = sign_identity(Identity(user_id="u2"), GATEWAY, ttl_seconds=-(identity_module.CLOCK_SKEW_SECONDS - 1))
    assert verify_identity(ending, GATEWAY.public_key()).user_id == "u2"
    time.sleep(1.2)
    with pytest.raises(AuthRequiredError):  # remembered, but not past its end
        verify_identity(ending, GATEWAY.public_key())


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "gateway", "aud": "public", "iat": 0, "exp": 2**33},
        {"iss": "someone", "aud": "internal", "iat": 0, "exp": 2**33},
        {"iss": "gateway", "aud": "internal", "iat": 0},
        {"iss": "gateway", "aud": "internal", "iat": 0, "exp": 2**33, "idn": {"auth_method": "service"}},
        {"iss": "gateway", "aud": "internal", "iat": 0, "exp": 2**33, "idn": {"service": "renders"}},
        {"iss": "gateway", "aud": "internal", "iat": 0, "exp": 2**33, "idn": {"scopes": 5}},
    ],
)
def test_wrong_claims_are_refused(claims: dict[str, object]) -> None:
    with pytest.raises(AuthRequiredError):
        verify_identity(jwt.encode(claims, GATEWAY, algorithm="EdDSA"), GATEWAY.public_key())


def test_symmetric_and_unsigned_tokens_are_refused() -> None:
    claims = {"iss": "gateway", "aud": "internal", "iat": int(time.time()), "exp": 2**33, "idn": {"user_id": "u"}}
    for token in (jwt.encode(claims, "s" * 32, algorithm="HS256"), jwt.encode(claims, "", "none")):
        with pytest.raises(AuthRequiredError):
            verify_identity(token, GATEWAY.public_key())
        with pytest.raises(AuthRequiredError):
            verify_service_token(token, "credits", key_of)


def test_the_gateway_signer_never_mints_a_service_identity() -> None:
    with pytest.raises(ValueError, match="services sign their own"):
        sign_identity(Identity(auth_method="service", service="auth"), GATEWAY)


def test_service_credential_names_its_caller_for_its_callee_only() -> None:
    token = sign_service_token("auth", "credits", AUTH)
    assert verify_service_token(token, "credits", key_of) == "auth"
    with pytest.raises(AuthRequiredError):
        verify_service_token(token, "renders", key_of)  # addressed to credits, replayed elsewhere


@pytest.mark.parametrize(
    "token",
    [
        lambda: sign_service_token("auth", "credits", Ed25519PrivateKey.generate()),  # not auth's key
        lambda: sign_service_token("renders", "credits", AUTH),  # a caller this service does not know
        lambda: sign_service_token("auth", "credits", AUTH, ttl_seconds=-30),
        lambda: sign_identity(Identity(user_id="u1", is_operator=True), GATEWAY),  # a user identity
    ],
    ids=["wrong-key", "unknown-caller", "expired", "user-identity"],
)
def test_service_credentials_that_are_refused(token: object) -> None:
    assert callable(token)
    with pytest.raises(AuthRequiredError):
        verify_service_token(token(), "credits", key_of)


def test_a_service_credential_is_never_a_user_identity() -> None:
    with pytest.raises(AuthRequiredError):
        verify_identity(sign_service_token("auth", "credits", AUTH), (GATEWAY.public_key(), AUTH.public_key()))


def test_key_texts_round_trip() -> None:
    assert public_text(load_private_key(private_text(AUTH))) == public_text(AUTH)
    assert public_text(load_public_key(public_text(AUTH))) == public_text(AUTH)


@pytest.mark.parametrize(
    ("name", "internal"),
    [
        ("X-Internal-Identity", True),
        ("X-Internal-Service", True),
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
