"""Object storage port, its local-directory adapter and the factory choosing an adapter from settings.

Local download URLs are HMAC-signed and expire: the gateway serves ``/files/<key>?expires=..&signature=..`` after
checking the signature, so outputs can be fetched without credentials for as long as the URL is valid and never after.
The S3 adapter (``shared.storage_s3``) hands out presigned URLs pointing at the bucket instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from shared.settings import ServiceSettings

FILES_PREFIX = "/files/"
DEFAULT_URL_TTL_SECONDS = 3600 * 24


class StorageError(Exception):
    """Storage failed; unless it is a :class:`StorageMissingError`, trying again later may work."""


class StorageMissingError(StorageError):
    """No object under that key: trying again will not make one appear."""


class Storage(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...
    async def get(self, key: str) -> bytes: ...
    async def exists(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...
    def signed_url(self, key: str, ttl_seconds: int = DEFAULT_URL_TTL_SECONDS) -> str: ...
    async def check(self) -> None: ...


def safe_key(key: str) -> str:
    """The key itself when it is a plain relative path: no empty, "." or ".." segment, no leading "/"."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key: {key!r}")
    return key


SIGNATURE_HEX_DIGITS = 64  # HMAC-SHA256, hex


def sign(secret: str, key: str, expires: int) -> str:
    return hmac.new(secret.encode(), f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


MAX_EXPIRES_DIGITS = 12
"""A Unix time in seconds has 10 digits until the year 2286; a longer ``expires`` was never signed here (and
``int()`` refuses strings of more than 4300 digits with an error)."""


def parse_expires(expires: str) -> int | None:
    """The Unix time of a signed URL's ``expires``, or None for anything ``signed_url`` never produced."""
    if not (0 < len(expires) <= MAX_EXPIRES_DIGITS and expires.isascii() and expires.isdigit()):
        return None
    return int(expires)


def verify_signature(secret: str, key: str, expires: str, signature: str, now: float | None = None) -> bool:
    """True when ``signature`` was made with ``secret`` for ``key`` and ``expires`` is still in the future."""
    moment = parse_expires(expires)
    if moment is None or moment < (now if now is not None else time.time()):
        return False
    if not (signature.isascii() and len(signature) == SIGNATURE_HEX_DIGITS):
        return False
    return hmac.compare_digest(sign(secret, key, moment), signature)


class LocalStorage:
    """Files under a directory; writes are atomic (temp file + rename) so a reader never sees half a file."""

    def __init__(self, root: str | Path, *, public_base_url: str, signing_secret: str) -> None:
        self.root = Path(root).resolve()
        self.public_base_url = public_base_url.rstrip("/")
        self.signing_secret = signing_secret

    def path_of(self, key: str) -> Path:
        path = (self.root / safe_key(key)).resolve()
        if self.root not in path.parents:
            raise StorageError(f"invalid storage key: {key!r}")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.path_of(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self.path_of(key).read_bytes)
        except FileNotFoundError as exc:
            raise StorageMissingError(f"no object {key!r}") from exc

    async def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is already gone (idempotent)."""
        await asyncio.to_thread(self.path_of(key).unlink, True)

    def signed_url(self, key: str, ttl_seconds: int = DEFAULT_URL_TTL_SECONDS) -> str:
        expires = int(time.time()) + ttl_seconds
        query = urlencode({"expires": expires, "signature": sign(self.signing_secret, safe_key(key), expires)})
        return f"{self.public_base_url}{FILES_PREFIX}{quote(key)}?{query}"

    async def check(self) -> None:
        """Readiness: the directory exists and is writable."""
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()


def make_storage(backend: str, *, storage_dir: str, public_base_url: str, signing_secret: str) -> Storage:
    """The local adapter from explicit arguments; S3 needs more configuration, see ``storage_from_settings``."""
    if backend == "local":
        return LocalStorage(storage_dir, public_base_url=public_base_url, signing_secret=signing_secret)
    if backend == "s3":
        raise StorageError("the s3 storage backend is built with storage_from_settings(settings)")
    raise StorageError(f"unknown storage backend {backend!r}")


def storage_from_settings(settings: ServiceSettings) -> Storage:
    """The adapter ``STORAGE_BACKEND`` names, configured from the shared settings; no network I/O happens here."""
    if settings.storage_backend == "s3":
        from shared.storage_s3 import S3Storage  # boto3 is imported only by processes that use it

        if not settings.s3_bucket:
            raise StorageError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
            url_ttl_seconds=settings.s3_url_ttl_seconds,
            create_bucket=settings.s3_create_bucket,
        )
    return make_storage(
        settings.storage_backend,
        storage_dir=settings.storage_dir,
        public_base_url=settings.public_base_url,
        signing_secret=settings.storage_signing_secret,
    )
