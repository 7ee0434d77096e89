"""Plans and reports as files: a local path or ``s3://bucket/key``, never inside the table being restored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_fuse.errors import BadInputError
from airflow_fuse.location import TableLocation, parse_table_uri
from airflow_fuse.s3 import explain


def write_document(uri: str, data: bytes, *, client: Any = None, table: TableLocation | None = None) -> str:
    """Write bytes to a local path or ``s3://bucket/key``; never inside the table being restored."""
    if uri.startswith("s3://"):
        target = parse_table_uri(uri.rstrip("/") + "/", allow_bucket_root=True)
        key = target.prefix.rstrip("/")
        if table is not None and target.bucket == table.bucket and key.startswith(table.prefix):
            raise BadInputError(f"{uri} is inside the table {table.uri}: writing there would add an object to "
                                "the table; choose a location outside its prefix")
        if client is None:
            raise BadInputError(f"an S3 client is needed to write {uri}")
        try:
            client.put_object(Bucket=target.bucket, Key=key, Body=data)
        except Exception as exc:
            raise explain(exc, bucket=target.bucket, client=client, action=f"write {uri} to", key=key) from None
        return uri
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def read_document(uri: str, *, client: Any = None, what: str = "document") -> bytes:
    """Bytes from a local path or ``s3://bucket/key`` (a plan or a report); ``what`` names it in errors."""
    if uri.startswith("s3://"):
        target = parse_table_uri(uri.rstrip("/") + "/", allow_bucket_root=True)
        if client is None:
            raise BadInputError(f"an S3 client is needed to read {uri}")
        try:
            return client.get_object(Bucket=target.bucket, Key=target.prefix.rstrip("/"))["Body"].read()
        except Exception as exc:
            key = target.prefix.rstrip("/")
            raise BadInputError(f"cannot read {what} {uri}: " + str(explain(
                exc, bucket=target.bucket, client=client, action="read", key=key, versioned=False))) from None
    try:
        return Path(uri).read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {what} {uri}: {exc.strerror}") from None
