"""Ledger cursors: opaque, round-trip, and anything not produced by the service is a 400 on ``cursor``."""

import base64

import pytest

from shared.cursor import InvalidCursorError, decode_cursor, encode_cursor


@pytest.mark.parametrize("last_id", [1, 42, 10**17 - 1])
def test_round_trip(last_id: int) -> None:
    cursor = encode_cursor(last_id)
    assert str(last_id) not in cursor, "opaque: the id is not readable in the cursor"
    assert decode_cursor(cursor) == last_id


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "abc",
        "a b c d",
        b64(b"v1:"),
        b64(b"v1:0"),
        b64(b"v1:-3"),
        b64(b"v1:x"),
        b64(b"v2:5"),
        b64(b"7"),
        b64(b"\xff\xfe\xfd"),
        b64(b"v1:" + b"9" * 30),
        "A" * 65,
    ],
)
def test_malformed_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursorError) as caught:
        decode_cursor(cursor)
    assert caught.value.status_code == 400
    assert caught.value.error_code == "INVALID_INPUT"
    assert caught.value.details["field"] == "cursor"
