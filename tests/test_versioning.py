"""VersionedS3Hook and the version walk, against the real servers."""

from __future__ import annotations

import pytest

from airflow_fuse.errors import BadInputError, PreconditionError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.listing import iter_object_versions
from tests.conftest import new_bucket


def test_versioning_status_enabled_suspended_never(s3, conn_id):
    hook = VersionedS3Hook(aws_conn_id=conn_id)
    never = new_bucket(s3, versioning=None)
    enabled = new_bucket(s3)
    suspended = new_bucket(s3)
    s3.put_bucket_versioning(Bucket=suspended, VersioningConfiguration={"Status": "Suspended"})
    assert hook.get_versioning_status(never) == "Disabled"
    assert hook.get_versioning_status(enabled) == "Enabled"
    assert hook.get_versioning_status(suspended) == "Suspended"


def _history(s3, bucket: str, key: str) -> list[tuple[str, bool]]:
    """A key's history straight from the server, one key per request (the slow, obvious way)."""
    page = s3.list_object_versions(Bucket=bucket, Prefix=key)
    entries = [(v["VersionId"], False, v["LastModified"]) for v in page.get("Versions", []) if v["Key"] == key]
    entries += [(m["VersionId"], True, m["LastModified"]) for m in page.get("DeleteMarkers", []) if m["Key"] == key]
    return sorted((e[0], e[1]) for e in entries)


KEYS = ["t/plain.parquet", "t/with space/ü nicode ✓.parquet", "t/special+&%?=#;,@!$'()*.bin", "t/z/€~"]


def test_walk_is_complete_and_ordered_on_small_pages(s3, bucket, conn_id):
    hook = VersionedS3Hook(aws_conn_id=conn_id)
    written: dict[str, list[str]] = {}
    for key in KEYS:
        for body in (b"one", b"two"):
            written.setdefault(key, []).append(s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"])
        s3.delete_object(Bucket=bucket, Key=key)
    s3.put_object(Bucket=bucket, Key="t2/outside", Body=b"x")  # same leading characters, other table

    entries = list(listing_small_pages(s3, bucket))
    assert {e.key for e in entries} == set(KEYS)
    for key in KEYS:
        mine = [e for e in entries if e.key == key]
        # newest first: the delete marker, then the two data versions, newest first
        assert [e.is_delete_marker for e in mine] == [True, False, False]
        assert [e.version_id for e in mine[1:]] == list(reversed(written[key]))
        assert mine[0].is_latest and not mine[1].is_latest
        assert sorted((e.version_id, e.is_delete_marker) for e in mine) == _history(s3, bucket, key)
    # the hook walks the same entries with the connection's client
    assert [(e.key, e.version_id) for e in hook.iter_object_versions(bucket, "t/")] == [
        (e.key, e.version_id) for e in entries
    ]


def listing_small_pages(s3, bucket):
    return iter_object_versions(s3, bucket, "t/", page_size=2)


def test_walk_handles_pages_of_only_delete_markers(s3, bucket):
    # 5 keys whose newest entries are 3 delete markers each sort first; pages of 2 hold only markers.
    for i in range(5):
        key = f"t/k{i}"
        s3.put_object(Bucket=bucket, Key=key, Body=f"data{i}".encode())
        for _ in range(3):
            s3.delete_object(Bucket=bucket, Key=key)
    entries = list(iter_object_versions(s3, bucket, "t/", page_size=2))
    for i in range(5):
        mine = [e for e in entries if e.key == f"t/k{i}"]
        # Ceph does not stack markers (2 entries), moto does (4); moto lists same-second entries of a
        # page versions-first, so only the current entry's position is asserted.
        assert len(mine) in (2, 4) and mine[0].is_latest and mine[0].is_delete_marker
        data = [e for e in mine if not e.is_delete_marker]
        assert len(data) == 1 and data[0].size == len(f"data{i}")
        assert len({(e.version_id) for e in mine}) == len(mine)  # nothing listed twice


def test_walk_reports_null_versions_written_before_versioning(s3):
    bucket = new_bucket(s3, versioning=None)
    s3.put_object(Bucket=bucket, Key="t/old", Body=b"before versioning")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.delete_object(Bucket=bucket, Key="t/old")
    entries = list(iter_object_versions(s3, bucket, "t/"))
    assert [(e.version_id, e.is_delete_marker) for e in entries][1:] == [("null", False)]
    assert entries[0].is_delete_marker and entries[0].version_id != "null"


def test_recovery_risks_name_lifecycle_rules(s3, bucket, conn_id):
    hook = VersionedS3Hook(aws_conn_id=conn_id)
    assert hook.get_recovery_risks(bucket, "t/") == []
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {"ID": "expire-old", "Status": "Enabled", "Filter": {"Prefix": "t/"},
                 "NoncurrentVersionExpiration": {"NoncurrentDays": 7}},
                {"ID": "elsewhere", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
                 "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
            ]
        },
    )
    risks = hook.get_recovery_risks(bucket, "t/")
    assert len(risks) == 1
    assert "expire-old" in risks[0] and "7 day" in risks[0]


def test_missing_bucket_names_bucket_and_connection(s3, conn_id):
    hook = VersionedS3Hook(aws_conn_id=conn_id)
    with pytest.raises(PreconditionError) as info:
        hook.get_versioning_status("no-such-bucket-here")
    message = str(info.value)
    assert "no-such-bucket-here" in message and conn_id in message and "does not exist" in message


def test_invalid_bucket_name_is_refused_before_any_request(moto_server):
    hook = VersionedS3Hook(aws_conn_id="fuse_moto")
    with pytest.raises(BadInputError, match="not a valid S3 bucket name"):
        hook.get_versioning_status("Bad_Bucket")


def test_wrong_credentials_are_named_without_leaking_the_secret(ceph_server, monkeypatch):
    import json

    conn = json.loads(ceph_server.connection_json())
    conn["password"] = "wrong-secret-value-123"
    monkeypatch.setenv("AIRFLOW_CONN_FUSE_BADCREDS", json.dumps(conn))
    hook = VersionedS3Hook(aws_conn_id="fuse_badcreds")
    with pytest.raises(PreconditionError) as info:
        hook.get_versioning_status("any-bucket")
    message = str(info.value)
    assert "credentials" in message and "fuse_badcreds" in message
    assert "wrong-secret-value-123" not in message


def test_unreachable_endpoint_fails_in_bounded_time(monkeypatch):
    import json
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_FUSE_DOWN", json.dumps({
        "conn_type": "aws", "login": "a", "password": "b",
        "extra": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1",
                  "config_kwargs": {"retries": {"max_attempts": 2}, "connect_timeout": 2}},
    }))
    hook = VersionedS3Hook(aws_conn_id="fuse_down")
    started = time.monotonic()
    with pytest.raises(PreconditionError) as info:
        hook.get_versioning_status("some-bucket")
    assert time.monotonic() - started < 60
    assert f"127.0.0.1:{port}" in str(info.value) and "cannot reach" in str(info.value)
