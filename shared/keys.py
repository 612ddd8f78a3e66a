"""Ed25519 keys of the internal identity: parsing from settings, and the deterministic keys of ``APP_ENV=dev``.

A key in a setting is either PEM (PKCS#8 private / SubjectPublicKeyInfo public) or the raw 32 bytes in base64url.
Dev keys are derived from public names, so anyone can compute them: settings refuse them outside dev.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GATEWAY_IDENTITY = "gateway-identity"
"""The dev key name of the gateway's user-identity key (distinct from the gateway's own service key)."""
SERVICE_CALLERS = ("gateway", "auth", "renders", "credits")
"""The services that call another one's ``/internal`` API: each has a service key pair of its own."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=64)
def load_private_key(text: str) -> Ed25519PrivateKey:
    """``ValueError`` for anything but an Ed25519 private key (PEM or base64url raw seed)."""
    if "-----BEGIN" in text:
        key = serialization.load_pem_private_key(text.strip().encode() + b"\n", password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("an Ed25519 private key is required")
        return key
    raw = _b64url_decode(text)
    if len(raw) != 32:
        raise ValueError("an Ed25519 private key is 32 bytes (base64url) or a PEM")
    return Ed25519PrivateKey.from_private_bytes(raw)


@lru_cache(maxsize=64)
def load_public_key(text: str) -> Ed25519PublicKey:
    """``ValueError`` for anything but an Ed25519 public key (PEM or base64url raw 32 bytes)."""
    if "-----BEGIN" in text:
        key = serialization.load_pem_public_key(text.strip().encode() + b"\n")
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("an Ed25519 public key is required")
        return key
    raw = _b64url_decode(text)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes (base64url) or a PEM")
    return Ed25519PublicKey.from_public_bytes(raw)


def private_text(key: Ed25519PrivateKey) -> str:
    """The setting value of a private key (base64url raw seed)."""
    return _b64url(
        key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    )


def public_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The setting value of a public key (base64url raw 32 bytes)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return _b64url(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def generate_private_text() -> str:
    return private_text(Ed25519PrivateKey.generate())


@lru_cache(maxsize=16)
def dev_private_key(name: str) -> Ed25519PrivateKey:
    """The dev key of ``name`` (``GATEWAY_IDENTITY`` or a service name): known to everyone, valid only in dev."""
    seed = hashlib.sha256(f"plugin-platform dev identity key: {name}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


@lru_cache(maxsize=1)
def dev_public_texts() -> frozenset[str]:
    return frozenset(public_text(dev_private_key(n)) for n in (GATEWAY_IDENTITY, *SERVICE_CALLERS))


def is_dev_key(text: str, *, private: bool) -> bool:
    """Whether a configured key (private or public) is one of the publicly derivable dev keys."""
    try:
        key = load_private_key(text) if private else load_public_key(text)
    except ValueError:
        return False
    return public_text(key) in dev_public_texts()
