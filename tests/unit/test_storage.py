"""Local storage: atomic writes, keys cannot escape the root, signed URLs expire and cannot be forged."""

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from shared.storage import LocalStorage, StorageError, sign, verify_signature

SECRET = "sig-secret"


async def test_put_get_and_signed_url(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, public_base_url="http://gw", signing_secret=SECRET)
    await storage.put("renders/r1/output.png", b"png", "image/png")
    assert await storage.get("renders/r1/output.png") == b"png"
    url = urlparse(storage.signed_url("renders/r1/output.png", ttl_seconds=3600))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/files/renders/r1/output.png"
    assert verify_signature(SECRET, "renders/r1/output.png", query["expires"], query["signature"])
    assert not verify_signature(SECRET, "renders/r2/output.png", query["expires"], query["signature"])
    assert not verify_signature("other", "renders/r1/output.png", query["expires"], query["signature"])


def test_expired_signature_refused() -> None:
    expires = int(time.time()) - 1
    assert not verify_signature(SECRET, "k", str(expires), sign(SECRET, "k", expires))
    assert not verify_signature(SECRET, "k", "not-a-number", "x")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "", "a//b"])
async def test_keys_cannot_escape_root(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "root", public_base_url="http://gw", signing_secret=SECRET)
    with pytest.raises(StorageError):
        await storage.put(key, b"x", "text/plain")
