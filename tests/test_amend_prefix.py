"""Prefix tables: scan → plan → restore against the real servers. Arrange, break, amend, assert."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_fuse.engine import AmendOptions, ScanOptions, amend, scan
from airflow_fuse.errors import BadInputError, PreconditionError
from airflow_fuse.plan import load_plan
from tests.conftest import new_bucket
from tests.helpers import all_versions, data_versions, delete_keys, put_objects, read, sha


def _table(n: int = 20, prefix: str = "t/") -> dict[str, bytes]:
    return {f"{prefix}part={i % 3}/f{i:04d}.parquet": os.urandom(100 + i) for i in range(n)}


def _assert_back(s3, bucket, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        got = read(s3, bucket, key)
        assert got is not None, f"{key} is still missing"
        assert sha(got) == sha(body), f"{key} has the wrong bytes"


def test_everything_deleted_comes_back_by_marker_removal(s3, bucket):
    objects = _table(30)
    outside = {"t2/keep.parquet": b"other table", "t2/gone.parquet": b"other table, deleted"}
    put_objects(s3, bucket, {**objects, **outside})
    data_before = data_versions(s3, bucket)
    delete_keys(s3, bucket, list(objects) + ["t2/gone.parquet"])
    outside_before = all_versions(s3, bucket, "t2/")

    report = amend(s3, table=f"s3://{bucket}/t")
    summary = report.summary()
    assert summary["restore"] == 30 and summary["results"] == {"undeleted": 30}
    assert summary["remaining"] == 0 and summary["to_copy"] == 0
    _assert_back(s3, bucket, objects)
    # nothing was copied (no new data versions), every data version is still there, markers are gone
    assert data_versions(s3, bucket) == data_before
    assert not [v for v in all_versions(s3, bucket, "t/") if v[2]]
    # t2/ shares the leading characters but is another table: untouched, still deleted
    assert all_versions(s3, bucket, "t2/") == outside_before
    assert read(s3, bucket, "t2/gone.parquet") is None
    # requests: one listing + one DeleteObjects batch (+ GetBucketVersioning before the scan and again just
    # before the first write: versioning suspended in between must stop the restore)
    assert summary["requests"] == {"GetBucketVersioning": 2, "ListObjectVersions": 1, "DeleteObjects": 1}
    assert summary["requests"].get("CopyObject", 0) == 0


def test_part_deleted_restores_only_the_deleted_keys(s3, bucket):
    objects = _table(12)
    versions = put_objects(s3, bucket, objects)
    gone = sorted(objects)[:5]
    delete_keys(s3, bucket, gone)
    report = amend(s3, table=f"s3://{bucket}/t/")
    s = report.summary()
    assert (s["present"], s["restore"]) == (0, 5)  # the prefix layout only lists deleted keys as needed
    _assert_back(s3, bucket, objects)
    for key in set(objects) - set(gone):  # healthy live objects were not rewritten
        assert [v for k, v in data_versions(s3, bucket, key) if k == key] == [versions[key]]


def test_dry_run_writes_nothing_and_plans_exactly_the_deleted_keys(s3, bucket, tmp_path):
    objects = _table(10)
    put_objects(s3, bucket, objects)
    gone = sorted(objects)[3:7]
    delete_keys(s3, bucket, gone)
    before = all_versions(s3, bucket)
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(dry_run=True, plan_uri=str(tmp_path / "p.json")))
    assert all_versions(s3, bucket) == before
    assert sorted(o.key for o in report.restore.outcomes) == gone
    assert {o.result for o in report.restore.outcomes} == {"would undelete"}
    assert set(report.requests) <= {"GetBucketVersioning", "ListObjectVersions"}
    plan = load_plan(str(tmp_path / "p.json"))
    assert sorted(i.key for i in plan.actionable()) == gone
    assert all(i.delete_markers for i in plan.actionable())  # the undo manifest


def test_second_run_does_nothing(s3, bucket):
    objects = _table(8)
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    amend(s3, table=f"s3://{bucket}/t/")
    after_first = all_versions(s3, bucket)
    second = amend(s3, table=f"s3://{bucket}/t/").summary()
    assert second["restore"] == 0 and second["remaining"] == 0
    assert all_versions(s3, bucket) == after_first


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_two_runs_at_once_converge(s3, bucket, strategy):
    from concurrent.futures import ThreadPoolExecutor

    objects = _table(40)
    put_objects(s3, bucket, objects)
    originals = data_versions(s3, bucket)
    delete_keys(s3, bucket, list(objects))
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(
            strategy=strategy, max_workers=4)), range(2)))
    _assert_back(s3, bucket, objects)
    for report in reports:
        assert report.summary()["failed"] == 0
    assert set(originals) <= set(data_versions(s3, bucket))  # every original data version survives
    third = amend(s3, table=f"s3://{bucket}/t/").summary()
    assert third["restore"] == 0 and third["remaining"] == 0


def test_copy_strategy_keeps_all_history(s3, bucket):
    objects = _table(6)
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    before = all_versions(s3, bucket)
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy"))
    assert report.summary()["results"] == {"copied": 6}
    _assert_back(s3, bucket, objects)
    after = all_versions(s3, bucket)
    assert set(before) <= set(after)  # markers and old versions all still there
    assert len(after) == len(before) + 6


def test_copy_multipart_path_with_lowered_threshold(s3, bucket):
    body = os.urandom(12 * 1024 * 1024)
    put_objects(s3, bucket, {"t/big.bin": body, "t/small.bin": b"small"})
    delete_keys(s3, bucket, ["t/big.bin", "t/small.bin"])
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy",
                                                                        multipart_threshold=5 * 1024 * 1024))
    assert report.summary()["results"] == {"copied": 2}
    assert report.requests.get("UploadPartCopy", 0) >= 2  # the big one went through multipart copy
    assert sha(read(s3, bucket, "t/big.bin")) == sha(body)


def test_thousand_and_one_keys_of_only_delete_markers(s3, bucket):
    # 1001 keys that sort first and hold only markers over data: a listing page holds only markers.
    objects = {f"t/a/{i:05d}": f"v{i}".encode() for i in range(1001)}
    put_objects_parallel(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    put_objects(s3, bucket, {"t/z/live": b"live"})
    report = amend(s3, table=f"s3://{bucket}/t/")
    s = report.summary()
    assert s["restore"] == 1001 and s["results"] == {"undeleted": 1001}
    assert s["requests"]["DeleteObjects"] == 2  # 1000 + 1 per call
    for key in ("t/a/00000", "t/a/00999", "t/a/01000"):
        assert read(s3, bucket, key) == objects[key]


def put_objects_parallel(s3, bucket, objects):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))


def test_null_versions_and_special_keys(s3):
    bucket = new_bucket(s3, versioning=None)
    objects = {"t/before versioning.parquet": b"null version", "t/ü nicode/+&=?.bin": b"special"}
    put_objects(s3, bucket, objects)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    delete_keys(s3, bucket, list(objects))
    report = amend(s3, table=f"s3://{bucket}/t/")
    assert report.summary()["restored"] == 2
    _assert_back(s3, bucket, objects)
    assert ("t/before versioning.parquet", "null") in data_versions(s3, bucket)


def test_stacked_markers_are_all_removed(s3, bucket, s3_server):
    put_objects(s3, bucket, {"t/k": b"data"})
    for _ in range(3):
        s3.delete_object(Bucket=bucket, Key="t/k")
    markers = [v for v in all_versions(s3, bucket) if v[2]]
    assert len(markers) == (1 if s3_server.name == "ceph" else 3)  # Ceph does not stack markers
    report = amend(s3, table=f"s3://{bucket}/t/")
    assert report.restore.outcomes[0].result == "undeleted"
    assert len(report.restore.outcomes[0].markers_removed) == len(markers)
    assert read(s3, bucket, "t/k") == b"data"


def test_key_overwritten_after_delete_is_left_alone(s3, bucket):
    put_objects(s3, bucket, {"t/k": b"old", "t/gone": b"gone"})
    delete_keys(s3, bucket, ["t/k", "t/gone"])
    put_objects(s3, bucket, {"t/k": b"new after the incident"})
    report = amend(s3, table=f"s3://{bucket}/t/")
    assert read(s3, bucket, "t/k") == b"new after the incident"
    assert read(s3, bucket, "t/gone") == b"gone"
    assert report.summary()["restored"] == 1


def test_as_of_restores_the_version_current_then(s3, bucket):
    put_objects(s3, bucket, {"t/k": b"v1", "t/d": b"d1", "t/last_snapshot_location_hint": b"hint1"})
    time.sleep(1.2)
    as_of = datetime.now(timezone.utc)
    time.sleep(1.2)
    put_objects(s3, bucket, {"t/k": b"v2 overwritten", "t/new": b"written after",
                             "t/last_snapshot_location_hint": b"h2"})
    delete_keys(s3, bucket, ["t/d"])
    plan = scan(s3, f"s3://{bucket}/t/", ScanOptions(as_of=as_of))
    by_key = {i.key: i for i in plan.items}
    assert by_key["t/d"].status == "restore"
    assert by_key["t/k"].status == "skipped" and "rollback_overwrites" in by_key["t/k"].reason
    assert by_key["t/new"].status == "skipped" and "after as_of" in by_key["t/new"].reason
    assert by_key["t/last_snapshot_location_hint"].status == "skipped"
    amend(s3, plan=plan, options=AmendOptions())
    assert read(s3, bucket, "t/d") == b"d1" and read(s3, bucket, "t/k") == b"v2 overwritten"
    report = amend(s3, table=f"s3://{bucket}/t/", scan_options=ScanOptions(as_of=as_of, rollback_overwrites=True))
    assert read(s3, bucket, "t/k") == b"v1"
    assert read(s3, bucket, "t/last_snapshot_location_hint") == b"h2"  # pointer file never rolled back
    assert read(s3, bucket, "t/new") == b"written after"
    assert report.summary()["results"] == {"copied": 1}


def test_incident_window_only_counts_markers_inside_it(s3, bucket):
    put_objects(s3, bucket, {"t/early": b"e", "t/incident": b"i"})
    delete_keys(s3, bucket, ["t/early"])
    time.sleep(1.2)
    since = datetime.now(timezone.utc)
    time.sleep(1.1)
    delete_keys(s3, bucket, ["t/incident"])
    report = amend(s3, table=f"s3://{bucket}/t/", scan_options=ScanOptions(deleted_since=since))
    assert read(s3, bucket, "t/incident") == b"i"
    assert read(s3, bucket, "t/early") is None
    skipped = [i for i in report.plan.items if i.status == "skipped"]
    assert [i.key for i in skipped] == ["t/early"] and "outside the incident window" in skipped[0].reason


def test_data_lost_while_suspended_is_reported_unrecoverable(ceph_server):
    # Ceph, as AWS: a DELETE while Suspended replaces the 'null' version with a 'null' marker and keeps
    # older versions. moto instead drops every version of the key, so this is asserted on Ceph only.
    s3 = ceph_server.client()
    bucket = new_bucket(s3)
    put_objects(s3, bucket, {"t/ok": b"ok"})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    put_objects(s3, bucket, {"t/suspended": b"written while suspended"})
    delete_keys(s3, bucket, ["t/suspended", "t/ok"])
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    report = amend(s3, table=f"s3://{bucket}/t/")
    by_key = {i.key: i for i in report.plan.items}
    assert read(s3, bucket, "t/ok") == b"ok", report.render()
    assert read(s3, bucket, "t/suspended") is None
    assert by_key["t/suspended"].status == "unrecoverable"
    assert "Suspended" in by_key["t/suspended"].reason
    assert report.summary()["remaining"] == 1


def test_plan_saved_to_s3_and_applied_later(s3, bucket):
    objects = _table(5)
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    plans = new_bucket(s3)
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(dry_run=True,
                                                                        plan_uri=f"s3://{plans}/plans/p.parquet"))
    assert report.plan_location == f"s3://{plans}/plans/p.parquet"
    applied = amend(s3, plan=f"s3://{plans}/plans/p.parquet")
    assert applied.summary()["restored"] == 5
    _assert_back(s3, bucket, objects)


@pytest.mark.parametrize(
    ("table", "kwargs", "message"),
    [
        ("bucket/t/", {}, "not an s3:// URI"),
        ("s3://Bad_Bucket/t/", {}, "not a valid S3 bucket name"),
        ("s3://{bucket}", {}, "whole bucket"),
        ("s3://{bucket}/t/", {"as_of": "2026-01-01T00:00:00Z", "deleted_since": "2026-01-01T00:00:00Z"},
         "cannot be combined"),
        ("s3://{bucket}/t/", {"as_of": "2026-01-01T00:00:00"}, "no timezone"),
        ("s3://{bucket}/t/", {"as_of": "2999-01-01T00:00:00Z"}, "in the future"),
        ("s3://{bucket}/t/", {"as_of": "yesterday"}, "not an ISO 8601 time"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(s3, bucket, table, kwargs, message):
    before = all_versions(s3, bucket)
    with pytest.raises(BadInputError, match=message):
        amend(s3, table=table.format(bucket=bucket), scan_options=ScanOptions(table_format="prefix", **kwargs))
    assert all_versions(s3, bucket) == before


def test_missing_bucket_and_unversioned_bucket_are_preconditions(s3):
    with pytest.raises(PreconditionError, match="does not exist"):
        amend(s3, table="s3://no-such-bucket-4242/t/")
    plain = new_bucket(s3, versioning=None)
    with pytest.raises(PreconditionError, match="never enabled"):
        amend(s3, table=f"s3://{plain}/t/")


def test_plan_from_another_bucket_or_malformed_is_refused(s3, bucket, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInputError, match="not an airflow-fuse plan"):
        amend(s3, plan=str(bad))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "something-else", "items": []}))
    with pytest.raises(BadInputError, match="not an airflow-fuse plan"):
        amend(s3, plan=str(wrong))
    with pytest.raises(BadInputError, match="not an airflow-fuse plan"):
        amend(s3, table=f"s3://{bucket}/t/", plan=str(wrong))
    with pytest.raises(BadInputError, match="give table= .* or plan="):
        amend(s3)


def test_plan_or_report_inside_the_table_is_refused(s3, bucket):
    put_objects(s3, bucket, {"t/a": b"a"})
    delete_keys(s3, bucket, ["t/a"])
    before = all_versions(s3, bucket)
    with pytest.raises(BadInputError, match="inside the table"):
        amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(plan_uri=f"s3://{bucket}/t/plan.json"))
    assert all_versions(s3, bucket) == before


def test_changed_since_scan_is_left_alone(s3, bucket):
    put_objects(s3, bucket, {"t/a": b"a", "t/b": b"b"})
    delete_keys(s3, bucket, ["t/a", "t/b"])
    plan = scan(s3, f"s3://{bucket}/t/")
    put_objects(s3, bucket, {"t/a": b"rewritten by the pipeline after the scan"})
    report = amend(s3, plan=plan)
    results = {o.key: o.result for o in report.restore.outcomes}
    assert results == {"t/a": "changed since scan", "t/b": "undeleted"}
    assert read(s3, bucket, "t/a") == b"rewritten by the pipeline after the scan"
    assert timedelta(0) <= timedelta(seconds=report.seconds)


def _deny_marker_removal(s3, bucket: str) -> None:
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "keep-history", "Effect": "Deny", "Principal": "*",
                       "Action": ["s3:DeleteObjectVersion"], "Resource": [f"arn:aws:s3:::{bucket}/*"]}],
    }))


def test_marker_removal_denied_by_policy_falls_back_to_copy(ceph_server):
    s3 = ceph_server.client()
    bucket = new_bucket(s3)
    objects = _table(5)
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    _deny_marker_removal(s3, bucket)
    before = all_versions(s3, bucket)

    refused = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="undelete"))
    assert refused.summary()["failed"] == 5
    assert "denied" in refused.restore.failed[0].detail and "'copy'" in refused.restore.failed[0].detail
    assert all_versions(s3, bucket) == before  # nothing changed

    report = amend(s3, table=f"s3://{bucket}/t/")
    assert report.summary()["results"] == {"copied": 5}
    assert all("copied instead" in o.detail for o in report.restore.outcomes)
    _assert_back(s3, bucket, objects)
    assert set(before) <= set(all_versions(s3, bucket))  # markers and versions all kept


@pytest.mark.parametrize("recheck", ["per-key", "listing"])
def test_a_restore_rechecks_and_never_overwrites_a_newer_write(s3, bucket, recheck):
    from airflow_fuse.restore import Restorer

    put_objects(s3, bucket, {"t/a": b"a", "t/b": b"b", "t/c": b"c"})
    delete_keys(s3, bucket, ["t/a", "t/b", "t/c"])
    plan = scan(s3, f"s3://{bucket}/t/")
    # after the scan, a pipeline writes t/a again and deletes t/c again
    put_objects(s3, bucket, {"t/a": b"written after the scan"})
    s3.delete_object(Bucket=bucket, Key="t/c")
    # Ceph does not stack a second delete marker on a deleted key; moto (and AWS) do
    stacked = sum(1 for k, _, marker in all_versions(s3, bucket, "t/c") if marker) == 2

    copied = Restorer(s3, plan, strategy="copy").run(recheck=recheck)
    results = {o.key: o.result for o in copied.outcomes}
    # t/c deleted once more after the scan: a deletion newer than the plan's listing is not undone
    assert results == {"t/a": "changed since scan", "t/b": "copied",
                       "t/c": "changed since scan" if stacked else "copied"}
    assert read(s3, bucket, "t/a") == b"written after the scan"
    assert (read(s3, bucket, "t/c") is None) == stacked

    put_objects(s3, bucket, {"t/b": b"b2"})
    delete_keys(s3, bucket, ["t/b"])
    plan = scan(s3, f"s3://{bucket}/t/")
    put_objects(s3, bucket, {"t/b": b"b3 after the scan"})
    undeleted = Restorer(s3, plan).run(recheck=recheck)
    c = {"t/c": "undeleted"} if stacked else {}
    if recheck == "per-key":
        # the listed marker is removed; the newer write stays on top of it, and every data version is kept
        assert {o.key: o.result for o in undeleted.outcomes} == {"t/b": "undeleted", **c}
    else:
        assert {o.key: o.result for o in undeleted.outcomes} == {"t/b": "changed since scan", **c}
    assert read(s3, bucket, "t/b") == b"b3 after the scan"
    assert len([1 for k, _ in data_versions(s3, bucket, "t/b") if k == "t/b"]) == 4


def test_a_fresh_plan_is_rechecked_on_the_listing_that_made_it(s3_server, s3, bucket):
    """amend() re-checks a fresh plan's copies on the scan's own listing (no second sweep, no HeadObject per key),
    as a bare list-then-copy loop would; the copies are looked at once after they land: by a listing of their key
    range when they outnumber 100 per page of the table, else one listing of each copied key."""
    many = {f"t/k{i:03d}": f"v{i}".encode() for i in range(120)}
    put_objects(s3, bucket, many)
    delete_keys(s3, bucket, list(many))
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy"))
    assert report.summary()["results"] == {"copied": 120}
    assert report.restore.relist_pages == 0 and "HeadObject" not in report.requests
    assert report.requests["ListObjectVersions"] == 1 + 1  # the scan, and the copies' range after them
    assert all(o.new_version_id == s3.head_object(Bucket=bucket, Key=o.key)["VersionId"]
               for o in report.restore.outcomes)
    _assert_back(s3, bucket, many)

    few = {"t/x": b"x", "t/y": b"y"}
    put_objects(s3, bucket, few)
    delete_keys(s3, bucket, list(few))
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy"))
    assert report.summary()["results"] == {"copied": 2}
    assert report.restore.relist_pages == 0 and "HeadObject" not in report.requests
    # the scan's page, then one per copied key after its copy: it reads the new version id where the CopyObject
    # answer has none (Ceph; undo needs it) and withdraws a copy that buried a concurrent write
    assert report.requests["ListObjectVersions"] == 1 + 2
    assert all(o.new_version_id == s3.head_object(Bucket=bucket, Key=o.key)["VersionId"]
               for o in report.restore.outcomes)
    _assert_back(s3, bucket, few)


def test_a_fresh_plan_whose_listing_began_long_ago_is_listed_again_before_its_copies(s3, bucket, monkeypatch):
    """A large table's listing may be minutes old by the time its keys are written: such a plan is re-checked by a
    new listing, streamed into the copies, as a saved plan is."""
    from airflow_fuse import engine

    monkeypatch.setattr(engine, "FRESH_LISTING", timedelta(0))
    many = {f"t/k{i:03d}": f"v{i}".encode() for i in range(120)}
    put_objects(s3, bucket, many)
    delete_keys(s3, bucket, list(many))
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy"))
    assert report.summary()["results"] == {"copied": 120}
    assert report.restore.relist_pages == 1 and "HeadObject" not in report.requests
    _assert_back(s3, bucket, many)
