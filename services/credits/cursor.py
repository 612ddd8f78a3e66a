"""Opaque ledger cursors: base64url of a versioned last-seen id, so clients cannot build or depend on them."""

from __future__ import annotations

import base64
import binascii
import re

from services.credits.errors import InvalidCursorError

_ALPHABET = re.compile(r"[A-Za-z0-9_-]{4,64}")
_PAYLOAD = re.compile(r"v1:([1-9][0-9]{0,17})")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a page continues after; ``InvalidCursorError`` (400, field ``cursor``) for anything else."""
    if _ALPHABET.fullmatch(cursor) is None:
        raise InvalidCursorError()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidCursorError() from exc
    match = _PAYLOAD.fullmatch(raw)
    if match is None:
        raise InvalidCursorError()
    return int(match.group(1))
