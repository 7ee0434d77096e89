"""Arrange-break-assert helpers shared by the restore tests."""

from __future__ import annotations

import hashlib
from typing import Any


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_objects(s3: Any, bucket: str, objects: dict[str, bytes]) -> dict[str, str]:
    """Write each object; returns key -> version id."""
    return {key: s3.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId", "null")
            for key, body in objects.items()}


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    """Delete like a careless user or job: DeleteObjects without version ids (delete markers)."""
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})


def all_versions(s3: Any, bucket: str, prefix: str = "") -> list[tuple[str, str, bool]]:
    """Every (key, version id, is delete marker) under prefix, via boto3's own paginator."""
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out += [(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
        out += [(m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", [])]
    return sorted(out)


def data_versions(s3: Any, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
    return [(k, v) for k, v, marker in all_versions(s3, bucket, prefix) if not marker]


def read(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    except Exception as exc:  # Ceph/moto answer a deleted key with 404 NoSuchKey or a bare 404
        if "404" in str(exc) or "Not Found" in str(exc):
            return None
        raise
