"""Table locations: ``s3://bucket/prefix/`` parsed and checked before any request is made."""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_fuse.errors import BadInputError

# S3 bucket naming rules (general purpose buckets): 3-63 chars, lowercase letters, digits, dots, hyphens,
# starting and ending with a letter or digit, not shaped like an IP address.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def check_bucket_name(bucket: str) -> str:
    if not bucket or not _BUCKET_RE.match(bucket) or _IP_RE.match(bucket) or ".." in bucket:
        raise BadInputError(
            f"{bucket!r} is not a valid S3 bucket name: use 3-63 lowercase letters, digits, dots or hyphens, "
            "starting and ending with a letter or digit (for example s3://my-lake/warehouse/t/)."
        )
    return bucket


@dataclass(frozen=True)
class TableLocation:
    """A bucket and a key prefix. ``prefix`` is "" for the bucket root, else ends with "/"."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def contains(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def __str__(self) -> str:
        return self.uri


def parse_table_uri(uri: str, *, allow_bucket_root: bool = False) -> TableLocation:
    """Parse ``s3://bucket/prefix/``; a prefix without a trailing slash gets one (``t`` must not match ``t2``)."""
    if not isinstance(uri, str) or not uri.startswith(("s3://", "s3a://")):
        raise BadInputError(
            f"table location {uri!r} is not an s3:// URI: write it as s3://BUCKET/PATH/TO/TABLE/"
        )
    rest = uri.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    check_bucket_name(bucket)
    if prefix.startswith("/") or "//" in prefix:
        raise BadInputError(f"table location {uri!r} has an empty path segment ('//'); remove the extra slash")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise BadInputError(f"table location {uri!r} contains '.' or '..' segments; give the table's real prefix")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not prefix and not allow_bucket_root:
        raise BadInputError(
            f"table location {uri!r} is the whole bucket: name the table's prefix (s3://{bucket}/path/), "
            "or pass allow_bucket_root=True (--allow-bucket-root) if the table really is the whole bucket"
        )
    return TableLocation(bucket=bucket, prefix=prefix)
