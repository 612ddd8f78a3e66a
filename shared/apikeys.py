"""API key format, shared by auth (which mints keys) and the gateway (which refuses malformed ones unseen).

``rk_live_`` + 32 base62 characters of randomness (≈190 bits) + 6 base62 characters of CRC-32 checksum over the
random part. The checksum lets the gateway reject typos and garbage without a cache or database lookup; the key is
stored only as its SHA-256 (a fast hash is right here: the input has ≥ 128 random bits, nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

PREFIX = "rk_live_"
ALPHABET = string.digits + string.ascii_letters
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = len(PREFIX) + 6

SCOPES = ("renders:create", "renders:read", "projects:read", "projects:write", "webhook:write")


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), CHECKSUM_LENGTH)


def generate() -> str:
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return PREFIX + random_part + _checksum(random_part)


def is_well_formed(key: str) -> bool:
    """Format and checksum only: no I/O, constant work."""
    if len(key) != KEY_LENGTH or not key.startswith(PREFIX):
        return False
    body = key[len(PREFIX) :]
    if not (body.isascii() and body.isalnum()):
        return False
    return secrets.compare_digest(_checksum(body[:RANDOM_LENGTH]), body[RANDOM_LENGTH:])


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]
