"""An O(page) ListObjectVersions for the benchmark's moto server (opt-in: ``start_server(fast_listing=True)``).

moto 5's ``S3Backend.list_object_versions`` deep-copies every version of every key in the bucket (the
object bytes included: ``FakeKey.__getstate__`` reads the value) and sorts them all, on every request,
whatever the Prefix and MaxKeys. A page therefore costs O(bucket) instead of O(page) as on S3:
a LIST for one key in a bucket of 40,000 versions takes seconds. That penalises a per-key LIST loop
(Databend's SYSTEM$FUSE_AMEND) far more than a paginated sweep, so a comparison between the two would be
unfair in airflow-fuse's favour.

This replacement returns the same entries in the same order with the same continuation markers for the
calls both contenders make (a prefix, no delimiter, KeyMarker together with VersionIdMarker), and falls
back to moto's own code for everything else (a delimiter, a KeyMarker alone, a KeyMarker outside the
prefix). It only reads the key store; the entries it returns are light views, not copies of the data.
"""

from __future__ import annotations

import bisect
from typing import Any

_FIELDS = ("name", "version_id", "is_latest", "last_modified", "last_modified_ISO8601", "etag", "size",
           "storage_class")


class _View:
    """What moto's ListObjectVersions response template reads from a version or a delete marker."""

    __slots__ = (*_FIELDS, "is_marker")

    def __init__(self, entry: Any, *, is_latest: bool, is_marker: bool) -> None:
        self.name = entry.name
        self.version_id = entry.version_id
        self.is_latest = is_latest
        self.last_modified = entry.last_modified
        self.last_modified_ISO8601 = entry.last_modified_ISO8601
        self.is_marker = is_marker
        self.etag = None if is_marker else entry.etag
        self.size = 0 if is_marker else entry.size
        self.storage_class = None if is_marker else entry.storage_class


def install() -> None:
    from moto.core.utils import unix_time_millis
    from moto.s3.models import FakeKey, S3Backend

    original = S3Backend.list_object_versions

    def list_object_versions(self: Any, bucket_name: str, delimiter: str | None = None,
                             key_marker: str | None = None, max_keys: int | None = 1000, prefix: str = "",
                             version_id_marker: str | None = None) -> tuple:
        prefix = prefix or ""
        if delimiter or (key_marker and (not version_id_marker or not key_marker.startswith(prefix))):
            return original(self, bucket_name, delimiter=delimiter, key_marker=key_marker, max_keys=max_keys,
                            prefix=prefix, version_id_marker=version_id_marker)
        bucket = self.get_bucket(bucket_name)
        store = bucket.keys
        names = sorted(name for name in list(dict.keys(store)) if name.startswith(prefix))
        start = bisect.bisect_left(names, key_marker) if key_marker else 0
        skipping = key_marker is not None
        versions: list[_View] = []
        markers: list[_View] = []
        last: Any = None
        for name in names[start:]:
            if skipping and name != key_marker:
                return [], [], [], None, None  # moto: a marker that is not found skips everything
            entries = sorted(store.getlist(name) or [], key=lambda v: -unix_time_millis(v.last_modified))
            for i, entry in enumerate(entries):  # moto's global sort is stable: same order within a key
                if skipping:
                    if entry.version_id == version_id_marker:
                        skipping = False
                    continue
                if max_keys is not None and len(versions) + len(markers) >= max_keys:
                    if last is None:
                        return versions, [], markers, name, None
                    return versions, [], markers, last.name, last.version_id
                is_marker = not isinstance(entry, FakeKey)
                (markers if is_marker else versions).append(_View(entry, is_latest=i == 0, is_marker=is_marker))
                last = entry
        return versions, [], markers, None, None

    S3Backend.list_object_versions = list_object_versions


def _self_check() -> None:
    """Compare with moto's own listing on mixed histories, page by page (``python -m bench.moto_listing``)."""
    import random

    import boto3
    from moto import mock_aws
    from moto.s3.models import S3Backend, s3_backends

    original = S3Backend.list_object_versions
    rng = random.Random(7)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="check")
        client.put_bucket_versioning(Bucket="check", VersioningConfiguration={"Status": "Enabled"})
        keys = [f"{p}/k{i:03d}" for p in ("t", "t2", "u") for i in range(60)]
        for _ in range(3):
            for key in rng.sample(keys, 100):
                if rng.random() < 0.3:
                    client.delete_object(Bucket="check", Key=key)
                else:
                    client.put_object(Bucket="check", Key=key, Body=b"x" * rng.randint(0, 50))
        backend = s3_backends["123456789012"]["global"]

        def flat(result: tuple) -> tuple:
            versions, prefixes, markers, next_key, next_version = result
            views = [(v.name, v.version_id, v.is_latest, "m" if m else "v") for vs, m in ((versions, 0), (markers, 1))
                     for v in vs]
            return views, prefixes, next_key, next_version

        install()
        fast = S3Backend.list_object_versions
        pages = 0
        for prefix in ("", "t/", "t", "u/k05", "zz"):
            for max_keys in (1, 7, 1000):
                marker = version = None
                while True:
                    args = {"prefix": prefix, "max_keys": max_keys, "key_marker": marker,
                            "version_id_marker": version}
                    mine, theirs = flat(fast(backend, "check", **args)), flat(original(backend, "check", **args))
                    assert mine == theirs, (args, mine, theirs)
                    pages += 1
                    marker, version = mine[2], mine[3]
                    if marker is None:
                        break
        S3Backend.list_object_versions = original
    print(f"fast listing matches moto's on {pages} pages")


if __name__ == "__main__":
    _self_check()
