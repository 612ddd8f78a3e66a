"""Access tokens: EdDSA (Ed25519) JWTs with ``kid``; keys persist (dev: generated once under ``var/keys``).

Several keys can be loaded at once: the newest signs, all are published in the JWKS, so a new key can be rolled in
(and an old one retired after the access-token lifetime) without logging anyone out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.config import Settings

ALGORITHM = "EdDSA"
PEM_END = "-----END PRIVATE KEY-----"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("signing keys must be Ed25519")
        return cls(kid=_thumbprint(key), private_key=key)

    def public_jwk(self) -> dict[str, str]:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


def _thumbprint(key: Ed25519PrivateKey) -> str:
    """RFC 7638 JWK thumbprint: a stable ``kid`` derived from the public key itself."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())[:16]


def _split_pems(text: str) -> list[bytes]:
    return [(part.strip() + "\n" + PEM_END + "\n").encode() for part in text.split(PEM_END) if part.strip()]


def load_signing_keys(settings: Settings) -> list[SigningKey]:
    """Keys from ``AUTH_SIGNING_KEYS`` (PEMs), else from the keys directory; dev generates one if there is none."""
    if settings.signing_keys.strip():
        return [SigningKey.from_pem(pem) for pem in _split_pems(settings.signing_keys)]
    directory = Path(settings.signing_keys_dir)
    files = sorted(directory.glob("*.pem")) if directory.is_dir() else []
    if not files:
        if not settings.is_dev:
            raise RuntimeError("no signing keys: set AUTH_SIGNING_KEYS or mount PEM files in AUTH_SIGNING_KEYS_DIR")
        directory.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = directory / f"{int(time.time())}.pem"
        path.write_bytes(pem)
        path.chmod(0o600)
        files = [path]
    return [SigningKey.from_pem(f.read_bytes()) for f in files]


class TokenIssuer:
    def __init__(self, settings: Settings, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self.settings = settings
        self.keys = keys
        self.active = keys[-1]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    def access_token(self, user_id: str, *, is_operator: bool) -> tuple[str, int]:
        """A signed access token and its expiry (epoch seconds)."""
        now = int(time.time())
        exp = now + self.settings.access_token_ttl_seconds
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "aud": self.settings.audience,
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": uuid.uuid4().hex,
        }
        if is_operator:
            claims["roles"] = ["operator"]
        token = jwt.encode(claims, self.active.private_key, algorithm=ALGORITHM, headers={"kid": self.active.kid})
        return token, exp
