"""Version-aware reads of table metadata: GetObject with a VersionId, so a scan never writes."""

from __future__ import annotations

import threading
from typing import Any

from airflow_fuse.errors import MetadataError
from airflow_fuse.limits import metadata_cap, over_cap_advice
from airflow_fuse.s3 import explain


class S3VersionReader:
    """Reads ``key`` at ``version_id`` from one bucket; counts the bytes and requests it made.

    :param max_bytes: refuse (MetadataError) a version larger than this, reading at most this many bytes of
        it; default: the metadata cap (``limits.metadata_cap()``). The layouts compare the listed size with
        the cap before they ask; this holds even if a listing and the object disagree.
    """

    def __init__(self, client: Any, bucket: str, *, conn_id: str | None = None, max_bytes: int | None = None) -> None:
        self._lock = threading.Lock()  # metadata is read by a pool of threads
        self.client = client
        self.bucket = bucket
        self.conn_id = conn_id
        self.max_bytes = metadata_cap() if max_bytes is None else max_bytes
        self.requests = 0
        self.bytes_read = 0

    def read(self, key: str, version_id: str) -> bytes:
        with self._lock:
            self.requests += 1
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            length = response.get("ContentLength")
            if length is not None and length > self.max_bytes:
                response["Body"].close()
                body = None
            else:
                # a whole read() when the length is known and within the cap: botocore then checks the length
                body = response["Body"].read(None if length is not None else self.max_bytes + 1)
        except Exception as exc:
            raise explain(exc, bucket=self.bucket, client=self.client, conn_id=self.conn_id,
                          action=f"read {key!r} (version {version_id}) from") from exc
        if body is None or len(body) > self.max_bytes:
            size = f"{length:,} bytes" if length is not None else f"more than {self.max_bytes:,} bytes"
            raise MetadataError(f"cannot read Fuse metadata {key!r}: version {version_id} is {size}, over the "
                                f"cap, so it was not read; {over_cap_advice(self.max_bytes)}")
        with self._lock:
            self.bytes_read += len(body)
        return body

    def read_range(self, key: str, version_id: str, byte_range: str) -> bytes:
        """``byte_range`` as in HTTP, e.g. ``bytes=-8`` for the last 8 bytes."""
        with self._lock:
            self.requests += 1
        body = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id, Range=byte_range)
        data = body["Body"].read()
        with self._lock:
            self.bytes_read += len(data)
        return data
