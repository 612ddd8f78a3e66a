"""S3 storage against moto's S3 server over real HTTP on 127.0.0.1: round trips, presigned downloads, readiness, keys.

What moto 5.2.5 enforces on a presigned GET: only that the query carries a ``Signature=``; an anonymous request
without one is refused (objects are private). It checks neither the signature nor ``X-Amz-Expires`` (see
``moto/s3/responses.py``, ``_key_response``). Expiry and tampering are therefore
enforced by S3 itself (and MinIO), not checkable here; what is checked is that URLs carry the requested expiry.
"""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from moto.server import ThreadedMotoServer
from pydantic import ValidationError

from shared.engines import free_port
from shared.settings import ServiceSettings
from shared.storage import LocalStorage, StorageError, make_storage, storage_from_settings
from shared.storage_s3 import S3Storage


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 on an ephemeral 127.0.0.1 port, with every route to real AWS or a developer's profile cut off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        # Port 0: the kernel picks the port inside bind, so no other process can take it between choice and use
        # (start() would wait forever if the bind failed).
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def unique_bucket() -> str:
    return f"renders-{uuid.uuid4().hex[:12]}"


def s3_storage(endpoint: str, *, bucket: str = "", region: str = "us-east-1", create_bucket: bool = False) -> S3Storage:
    """An adapter on a fresh bucket (moto keeps state per process) with dummy credentials moto accepts."""
    return S3Storage(
        bucket or unique_bucket(),
        endpoint_url=endpoint,
        region=region,
        access_key_id="test",
        secret_access_key="test",
        create_bucket=create_bucket,
    )


@pytest.fixture
async def storage(endpoint: str) -> S3Storage:
    storage = s3_storage(endpoint, create_bucket=True)
    await storage.check()
    return storage


async def download(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:  # no credentials of any kind
        return await http.get(url)


async def test_round_trip_keeps_bytes_and_content_type(storage: S3Storage) -> None:
    key = "renders/r1/output image+1.png"  # space and plus: both must survive signing and URL encoding
    await storage.put(key, b"\x89PNG-bytes", "image/png")
    assert await storage.exists(key)
    assert not await storage.exists("renders/r1/other.png")
    assert await storage.get(key) == b"\x89PNG-bytes"

    response = await download(storage.signed_url(key, ttl_seconds=3600))
    assert response.status_code == 200
    assert response.content == b"\x89PNG-bytes"
    assert response.headers["content-type"] == "image/png"


async def test_put_overwrites(storage: S3Storage) -> None:
    await storage.put("a/b.txt", b"one", "text/plain")
    await storage.put("a/b.txt", b"two", "text/plain")
    assert await storage.get("a/b.txt") == b"two"


async def test_presigned_url_is_path_style_and_carries_the_ttl(storage: S3Storage, endpoint: str) -> None:
    url = urlparse(storage.signed_url("renders/r1/output.png", ttl_seconds=7200))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}" == endpoint
    assert url.path == f"/{storage.bucket}/renders/r1/output.png"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "7200"
    assert query["X-Amz-Credential"].startswith("test/")
    assert "X-Amz-Signature" in query

    default = parse_qs(urlparse(storage.signed_url("renders/r1/output.png")).query)
    assert default["X-Amz-Expires"] == ["86400"]


@pytest.mark.parametrize("ttl", [0, -5, 7 * 24 * 3600 + 1])
async def test_presign_ttl_outside_sigv4_limits_refused(storage: S3Storage, ttl: int) -> None:
    with pytest.raises(StorageError):
        storage.signed_url("a/b.png", ttl_seconds=ttl)


async def test_unsigned_url_refused(storage: S3Storage) -> None:
    """Objects are private: the same path without the presigned query is an anonymous request, and moto refuses it."""
    await storage.put("private/x.png", b"x", "image/png")
    url = storage.signed_url("private/x.png", ttl_seconds=3600)
    response = await download(url.split("?", 1)[0])
    assert response.status_code == 403


async def test_get_missing_key_raises(storage: S3Storage) -> None:
    with pytest.raises(StorageError, match="no object"):
        await storage.get("renders/nope/output.png")


async def test_check_fails_for_missing_bucket(endpoint: str) -> None:
    storage = s3_storage(endpoint)
    with pytest.raises(StorageError):
        await storage.check()
    with pytest.raises(StorageError):
        await storage.put("a/b.png", b"x", "image/png")
    with pytest.raises(StorageError):
        await storage.get("a/b.png")


async def test_create_bucket_on_first_put(endpoint: str) -> None:
    storage = s3_storage(endpoint, create_bucket=True)
    await storage.put("a/b.png", b"x", "image/png")
    await storage.check()
    assert await storage.get("a/b.png") == b"x"


async def test_create_bucket_outside_us_east_1(endpoint: str) -> None:
    storage = s3_storage(endpoint, region="eu-west-1", create_bucket=True)
    await storage.check()
    await storage.put("a/b.png", b"x", "image/png")
    assert (await download(storage.signed_url("a/b.png"))).content == b"x"


async def test_check_fails_fast_when_endpoint_unreachable() -> None:
    storage = s3_storage(f"http://127.0.0.1:{free_port()}", bucket="renders-down")
    with pytest.raises(StorageError):
        await asyncio.wait_for(storage.check(), timeout=10)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "", "a//b", "a/./b"])
async def test_invalid_keys_refused(storage: S3Storage, key: str) -> None:
    with pytest.raises(StorageError):
        await storage.put(key, b"x", "text/plain")
    with pytest.raises(StorageError):
        await storage.get(key)
    with pytest.raises(StorageError):
        await storage.exists(key)
    with pytest.raises(StorageError):
        storage.signed_url(key)


def test_half_a_key_pair_refused() -> None:
    with pytest.raises(StorageError):
        S3Storage("renders-x", access_key_id="test")


async def test_storage_from_settings_reads_the_unprefixed_env(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = unique_bucket()
    env = {
        "APP_ENV": "dev",
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "S3_URL_TTL_SECONDS": "3600",
        "S3_CREATE_BUCKET": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    storage = storage_from_settings(ServiceSettings())
    assert isinstance(storage, S3Storage)
    assert storage.bucket == bucket
    await storage.check()
    await storage.put("a/b.png", b"x", "image/png")
    url = storage.signed_url("a/b.png")
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["3600"]
    assert (await download(url)).content == b"x"


async def test_default_credential_chain(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without S3_* keys boto3 finds credentials itself; here in AWS_* env vars (dummy ones, moto accepts any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "chain-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-test")
    settings = ServiceSettings(
        app_env="dev", storage_backend="s3", s3_bucket=unique_bucket(), s3_endpoint_url=endpoint, s3_create_bucket=True
    )
    storage = storage_from_settings(settings)
    await storage.check()
    url = storage.signed_url("a/b.png")
    assert parse_qs(urlparse(url).query)["X-Amz-Credential"][0].startswith("chain-test/")


def test_settings_and_factory_validation(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="S3_BUCKET"):
        storage_from_settings(ServiceSettings(app_env="dev", storage_backend="s3"))
    with pytest.raises(ValidationError):
        ServiceSettings(app_env="dev", s3_url_ttl_seconds=60)  # outputs must stay downloadable for an hour
    with pytest.raises(ValidationError):
        ServiceSettings(app_env="dev", s3_url_ttl_seconds=8 * 24 * 3600)  # beyond what SigV4 can sign
    with pytest.raises(StorageError):
        make_storage("s3", storage_dir="x", public_base_url="http://gw", signing_secret="s")
    local = storage_from_settings(ServiceSettings(app_env="dev", storage_dir=str(tmp_path)))
    assert isinstance(local, LocalStorage)
