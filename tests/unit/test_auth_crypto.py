"""Auth's key material and password hashes: rotation without logouts, rehash when parameters change."""

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.config import Settings
from services.auth.passwords import Passwords
from services.auth.tokens import TokenIssuer, load_signing_keys
from shared.keys import public_text


def pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def verify_with_jwks(token: str, jwks: dict[str, list[dict[str, str]]], settings: Settings) -> dict[str, object]:
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    return jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience=settings.audience, issuer=settings.issuer
    )


def test_rotation_keeps_old_tokens_valid(tmp_path: Path) -> None:
    settings = Settings(app_env="dev", signing_keys_dir=str(tmp_path))
    first = TokenIssuer(settings, load_signing_keys(settings))  # dev: generates and persists one key
    old_token, _ = first.access_token("user-1", is_operator=False)
    assert len(list(tmp_path.glob("*.pem"))) == 1
    assert load_signing_keys(settings)[0].kid == first.active.kid, "the key persists across restarts"

    (tmp_path / "99999999999.pem").write_bytes(pem())  # a new key, rolled in
    rotated = TokenIssuer(settings, load_signing_keys(settings))
    new_token, _ = rotated.access_token("user-1", is_operator=True)
    jwks = rotated.jwks()
    assert len(jwks["keys"]) == 2
    assert jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
    assert verify_with_jwks(old_token, jwks, settings)["sub"] == "user-1"
    assert verify_with_jwks(new_token, jwks, settings)["roles"] == ["operator"]
    assert all("d" not in key for key in jwks["keys"])


def test_keys_from_the_environment_and_none_outside_dev(tmp_path: Path) -> None:
    settings = Settings(app_env="dev", signing_keys=(pem() + pem()).decode(), signing_keys_dir=str(tmp_path))
    assert len(load_signing_keys(settings)) == 2
    production = Settings(
        app_env="production",
        signing_keys_dir=str(tmp_path / "empty"),
        internal_identity_public_key=public_text(Ed25519PrivateKey.generate()),
        storage_signing_secret="y" * 40,
    )
    with pytest.raises(RuntimeError, match="no signing keys"):
        load_signing_keys(production)


async def test_rehash_when_parameters_change() -> None:
    weak = Passwords(Settings(app_env="dev", argon2_time_cost=1, argon2_memory_kib=8192, argon2_parallelism=1))
    strong = Passwords(Settings(app_env="dev", argon2_time_cost=2, argon2_memory_kib=16384, argon2_parallelism=1))
    stored = await weak.hash("correct horse")
    valid, new_hash = await strong.verify("correct horse", stored)
    assert valid
    assert new_hash is not None
    assert "m=16384" in new_hash
    assert await strong.verify("correct horse", new_hash) == (True, None)
    assert (await strong.verify("wrong horse", new_hash))[0] is False
    assert await strong.verify("anything", None) == (False, None), "unknown email still costs a verification"
