"""The gateway's signer of internal identities: the only holder of the key that mints user and operator identities."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.identity import Identity, sign_identity
from shared.keys import GATEWAY_IDENTITY, dev_private_key, load_private_key


def identity_signing_key(private_key: str, is_dev: bool) -> Ed25519PrivateKey:
    """``GATEWAY_IDENTITY_PRIVATE_KEY``; its well-known dev key only in dev (settings refuse an empty one elsewhere)."""
    if private_key:
        return load_private_key(private_key)
    if not is_dev:
        raise ValueError("GATEWAY_IDENTITY_PRIVATE_KEY is not set")
    return dev_private_key(GATEWAY_IDENTITY)


class IdentitySigner:
    """Signs internal identities, reusing a token for the same caller during half its lifetime (signing is the
    costliest step of a proxied request after the network)."""

    MAX_ENTRIES = 50_000

    def __init__(self, key: Ed25519PrivateKey, ttl_seconds: int) -> None:
        self.key = key
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[str, float]] = {}

    def token(self, identity: Identity) -> str:
        key = identity.model_dump_json()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.clear()
        token = sign_identity(identity, self.key, self.ttl)
        self._cache[key] = (token, now + self.ttl / 2)
        return token
