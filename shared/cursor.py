"""Opaque page cursors (ledger, delivery log): base64url of a versioned last-seen id, not buildable by clients."""

from __future__ import annotations

import base64
import binascii
import re

from shared.errors import DomainError

_ALPHABET = re.compile(r"[A-Za-z0-9_-]{4,64}")
_PAYLOAD = re.compile(r"v1:([1-9][0-9]{0,17})")


class InvalidCursorError(DomainError):
    status_code = 400
    error_code = "INVALID_INPUT"

    def __init__(self) -> None:
        super().__init__(
            "Invalid cursor", details={"field": "cursor", "reason": "not a cursor returned by this endpoint"}
        )


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
