"""S3-compatible storage adapter (AWS S3, MinIO, moto) behind the async ``Storage`` port.

boto3 is synchronous, so every network call runs in a worker thread (``asyncio.to_thread``) on one client made once;
boto3 clients are thread-safe. Download URLs are SigV4 presigned GET URLs on the bucket itself: anyone holding one
can fetch the object without credentials until it expires, and the gateway is not on that path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.storage import DEFAULT_URL_TTL_SECONDS, StorageError, StorageMissingError, safe_key

T = TypeVar("T")

MAX_PRESIGN_TTL_SECONDS = 7 * 24 * 3600  # SigV4 refuses longer X-Amz-Expires
US_EAST_1 = "us-east-1"  # the one region whose CreateBucket takes no LocationConstraint


def _error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        return f"{_error_code(exc)} {message}".strip()
    return str(exc)


class S3Storage:
    """Objects in one bucket; keys follow the same rules as the local adapter.

    ``endpoint_url`` selects MinIO/moto (path-style addressing, since such endpoints rarely resolve bucket
    subdomains); without it the client talks to AWS. Keys left ``None`` fall back to boto3's default credential chain.
    ``create_bucket`` makes a missing bucket on ``check()`` or the first ``put`` (dev convenience).
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = US_EAST_1,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        url_ttl_seconds: int = DEFAULT_URL_TTL_SECONDS,
        create_bucket: bool = False,
        probe_timeout_seconds: float = 2.0,
    ) -> None:
        if not bucket:
            raise StorageError("S3 storage needs a bucket name")
        if (access_key_id is None) != (secret_access_key is None):
            raise StorageError("S3 access key id and secret access key go together")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.url_ttl_seconds = self._valid_ttl(url_ttl_seconds)
        self.create_bucket = create_bucket
        # A private session: the boto3 default session is shared module state and not safe to build clients from
        # concurrently. Credentials are resolved once here and shared by both clients.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        addressing = {"addressing_style": "path"} if endpoint_url else {}
        common: dict[str, Any] = {"signature_version": "s3v4", "s3": addressing}
        # boto3 ships without type information: the clients are Any.
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=32,  # as many as the default executor runs threads
                **common,
            ),
        )
        # Readiness probes must answer within the health check's budget; a hung probe would also pin a thread.
        self._probe: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=probe_timeout_seconds,
                read_timeout=probe_timeout_seconds,
                retries={"mode": "standard", "total_max_attempts": 1},
                **common,
            ),
        )

    @staticmethod
    def _valid_ttl(ttl_seconds: int) -> int:
        if not 1 <= ttl_seconds <= MAX_PRESIGN_TTL_SECONDS:
            raise StorageError(f"presigned URL ttl must be 1..{MAX_PRESIGN_TTL_SECONDS} seconds, got {ttl_seconds}")
        return ttl_seconds

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        """``call`` in a worker thread, with boto/botocore failures turned into ``StorageError``."""
        try:
            return await asyncio.to_thread(call)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3 {what} failed: {_describe(exc)}") from exc

    def _create_bucket(self, client: Any) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != US_EAST_1:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            client.create_bucket(**kwargs)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":  # a concurrent first put made it
                raise

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """One PutObject: S3 makes the object visible only once fully written, as the local adapter's rename does."""
        safe_key(key)

        def call() -> None:
            kwargs = {"Bucket": self.bucket, "Key": key, "Body": data, "ContentType": content_type}
            try:
                self._client.put_object(**kwargs)
            except ClientError as exc:
                if not (self.create_bucket and _error_code(exc) == "NoSuchBucket"):
                    raise
                self._create_bucket(self._client)
                self._client.put_object(**kwargs)

        await self._run(f"put {key!r}", call)

    async def get(self, key: str) -> bytes:
        safe_key(key)

        def call() -> bytes:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchKey", "404"):
                    raise StorageMissingError(f"no object {key!r}") from exc
                raise
            body: bytes = response["Body"].read()
            return body

        return await self._run(f"get {key!r}", call)

    async def exists(self, key: str) -> bool:
        """HEAD the object. S3 answers 403 rather than 404 for a missing key unless the caller may s3:ListBucket;
        that 403 surfaces as ``StorageError``, not as ``False``."""
        safe_key(key)

        def call() -> bool:
            try:
                self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

        return await self._run(f"head {key!r}", call)

    async def delete(self, key: str) -> None:
        """DeleteObject (S3 answers success for a missing key: idempotent)."""
        safe_key(key)
        await self._run(f"delete {key!r}", lambda: self._client.delete_object(Bucket=self.bucket, Key=key))

    def signed_url(self, key: str, ttl_seconds: int | None = None) -> str:
        """A presigned GET URL valid for ``ttl_seconds`` (default: the configured ttl).

        Signing is local computation, no request is made. A URL signed with temporary credentials (instance or task
        role, STS) stops working when those credentials expire, whatever its own ttl.
        """
        ttl = self._valid_ttl(self.url_ttl_seconds if ttl_seconds is None else ttl_seconds)
        try:
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": safe_key(key)}, ExpiresIn=ttl
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3 presign {key!r} failed: {_describe(exc)}") from exc
        return url

    async def check(self) -> None:
        """Readiness: the bucket exists and these credentials reach it (HeadBucket, one short attempt)."""

        def call() -> None:
            try:
                self._probe.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if not (self.create_bucket and _error_code(exc) in ("404", "NoSuchBucket", "NotFound")):
                    raise
                self._create_bucket(self._probe)

        await self._run(f"check bucket {self.bucket!r}", call)
