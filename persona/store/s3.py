"""S3 backend: any S3-compatible service through boto3.

URL form: ``s3://bucket/prefix?endpoint=http://host:port&region=us-east-1``. Credentials come
from the standard boto3 chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, ...).
S3 puts are atomic per object, so no temporary names are needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from persona.errors import StoreError
from persona.store.backend import (
    BlobInfo,
    ObjectNotFound,
    TransientStoreError,
    check_name,
    check_prefix,
    check_range,
)

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


class S3Backend:
    """Blobs as objects under ``s3://bucket/prefix/``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise StoreError("S3 URL has no bucket: use s3://bucket/prefix?endpoint=...")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        if client is None:
            client = _make_client(endpoint, region)
        self._client = client

    @property
    def location(self) -> str:
        q = f"?endpoint={self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{q}"

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, e: Exception, what: str, name: str = "") -> StoreError:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(e, ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND and name:
                return ObjectNotFound(name, self.location)
            if code == "NoSuchBucket":
                return StoreError(
                    f"{what}: bucket {self.bucket!r} does not exist at {self.endpoint or 'AWS'};"
                    " run `persona store init` first"
                )
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return StoreError(f"{what}: access denied ({code}); check the S3 credentials")
            if code in _TRANSIENT:
                return TransientStoreError(f"{what}: {code}; retrying may help")
            return StoreError(f"{what}: S3 error {code}: {e}")
        if isinstance(e, NoCredentialsError):
            return StoreError(
                f"{what}: no S3 credentials found; set AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY (or an AWS profile)"
            )
        if isinstance(e, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
            return TransientStoreError(f"{what}: cannot reach {self.endpoint or 'S3'}: {e}")
        if isinstance(e, BotoCoreError):
            return StoreError(f"{what}: {e}")
        raise e

    def create_bucket(self) -> None:
        """Create the bucket if it does not exist (used by ``init``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise self._error(e, f"cannot access bucket {self.bucket!r}") from e
        except BotoCoreError as e:
            raise self._error(e, f"cannot access bucket {self.bucket!r}") from e
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, f"cannot create bucket {self.bucket!r}") from e

    def put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, f"cannot write {name!r}", name) from e

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        check_range(name, offset, length)
        from botocore.exceptions import BotoCoreError, ClientError

        if length == 0:
            self.stat(name)
            return b""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self._client.get_object(**kwargs)
            return bytes(resp["Body"].read())
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code == "InvalidRange":
                self.stat(name)
                return b""
            raise self._error(e, f"cannot read {name!r}", name) from e
        except BotoCoreError as e:
            raise self._error(e, f"cannot read {name!r}", name) from e

    def stat(self, name: str) -> BlobInfo:
        key = self._key(name)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, f"cannot stat {name!r}", name) from e
        return BlobInfo(name, int(resp["ContentLength"]), resp["LastModified"].timestamp())

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        check_prefix(prefix)
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            out = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    out.append(
                        BlobInfo(
                            obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].timestamp()
                        )
                    )
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, f"cannot list {prefix!r}") from e
        out.sort(key=lambda b: b.name)
        yield from out

    def delete(self, name: str) -> None:
        key = self._key(name)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            err = self._error(e, f"cannot delete {name!r}", name)
            if isinstance(err, ObjectNotFound):
                return
            raise err from e

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            close()


def _make_client(endpoint: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise StoreError(
            "no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            " (or AWS_PROFILE) before using an s3:// store"
        )
    cfg = Config(
        retries={"max_attempts": 1, "mode": "standard"},  # RetryBackend does the retrying
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
        max_pool_connections=16,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or session.region_name or "us-east-1",
        config=cfg,
    )
