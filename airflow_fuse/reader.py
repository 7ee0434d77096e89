"""Version-aware reads of table metadata: GetObject with a VersionId, so a scan never writes."""

from __future__ import annotations

from typing import Any

from airflow_fuse.s3 import explain


class S3VersionReader:
    """Reads ``key`` at ``version_id`` from one bucket; counts the bytes and requests it made."""

    def __init__(self, client: Any, bucket: str, *, conn_id: str | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.conn_id = conn_id
        self.requests = 0
        self.bytes_read = 0

    def read(self, key: str, version_id: str) -> bytes:
        self.requests += 1
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)["Body"].read()
        except Exception as exc:
            raise explain(exc, bucket=self.bucket, client=self.client, conn_id=self.conn_id,
                          action=f"read {key!r} (version {version_id}) from") from exc
        self.bytes_read += len(body)
        return body

    def read_range(self, key: str, version_id: str, byte_range: str) -> bytes:
        """``byte_range`` as in HTTP, e.g. ``bytes=-8`` for the last 8 bytes."""
        self.requests += 1
        body = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id, Range=byte_range)
        data = body["Body"].read()
        self.bytes_read += len(data)
        return data
