"""The gateway's signer of internal identities."""

from __future__ import annotations

import time

from shared.identity import Identity, sign_identity


class IdentitySigner:
    """Signs internal identities, reusing a token for the same caller during half its lifetime (signing is the
    costliest step of a proxied request after the network)."""

    MAX_ENTRIES = 50_000

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self.secret = secret
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
        token = sign_identity(identity, self.secret, self.ttl)
        self._cache[key] = (token, now + self.ttl / 2)
        return token
