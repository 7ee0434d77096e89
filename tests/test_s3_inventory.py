"""S3 Inventory as the inventory: reports written from a real listing of the test servers, then scan and amend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from airflow_fuse.engine import AmendOptions, ScanOptions, amend, scan, scan_report
from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import Inventory
from airflow_fuse.inventory_shards import KeyRange, write_shard
from airflow_fuse.location import parse_table_uri
from airflow_fuse.s3_inventory import load_inventory, parse_manifest
from tests.conftest import new_bucket
from tests.helpers import data_versions, delete_keys, put_objects, read
from tests.s3_inventory_files import write_inventory

FORMATS = ["Parquet", "ORC", "CSV"]
# Names an inventory must carry through: spaces and '+' (CSV encodes a space as '+'), '%', unicode.
ODD = ["t/a b+c.parquet", "t/100%.parquet", "t/été/ü.parquet", "t/x&y=z?.parquet"]


def _table(s3, bucket):
    """A prefix table: keys with two versions, deleted keys, and keys next to the table that must be left out."""
    objects = {f"t/d{i // 3}/f{i}.parquet": f"v1 {i}".encode() for i in range(9)}
    objects.update({key: f"odd {key}".encode() for key in ODD})
    put_objects(s3, bucket, objects)
    put_objects(s3, bucket, {"t/d0/f0.parquet": b"v2 0"})  # two data versions
    put_objects(s3, bucket, {"t2/outside.parquet": b"not the table", "other/x": b"x"})
    delete_keys(s3, bucket, ["t/d1/f3.parquet", "t/d1/f4.parquet", "t/a b+c.parquet", "t/été/ü.parquet",
                             "t2/outside.parquet"])
    objects["t/d0/f0.parquet"] = b"v2 0"
    return objects


def _rows(inventory: Inventory) -> pa.Table:
    table = inventory.table
    modified = pc.floor_temporal(table.column("last_modified"), unit="millisecond")  # S3 Inventory keeps ms
    return table.set_column(table.schema.get_field_index("last_modified"), "last_modified", modified)


@pytest.mark.parametrize("fmt", FORMATS)
def test_inventory_from_a_report_equals_the_listing(s3, bucket, fmt):
    _table(s3, bucket)
    manifest = write_inventory(s3, bucket, fmt=fmt)
    location = parse_table_uri(f"s3://{bucket}/t/")

    inventory, info = load_inventory(s3, location, manifest)
    listed = Inventory.sweep(s3, bucket, "t/")

    assert _rows(inventory).equals(_rows(listed))  # same keys (decoded), versions, order, sizes, ETags
    assert "t2/outside.parquet" not in inventory and "other/x" not in inventory
    assert info["format"] == fmt and info["manifest"] == manifest and info["age_hours"] < 1
    assert "warning" not in info


def test_amend_from_a_report_restores_and_leaves_a_key_changed_since(s3, bucket, tmp_path):
    objects = _table(s3, bucket)
    manifest = write_inventory(s3, bucket, fmt="Parquet", created=datetime.now(timezone.utc) - timedelta(hours=3))
    # After the inventory: a deleted key is written again. The inventory still shows it deleted.
    s3.put_object(Bucket=bucket, Key="t/d1/f4.parquet", Body=b"written after the inventory")
    data_before = set(data_versions(s3, bucket))

    report = amend(s3, table=f"s3://{bucket}/t/", scan_options=ScanOptions(inventory_manifest=manifest),
                   options=AmendOptions(report_uri=str(tmp_path / "report.json")))

    for key in ("t/d1/f3.parquet", "t/a b+c.parquet", "t/été/ü.parquet"):
        assert read(s3, bucket, key) == objects[key]  # bytes back
    assert read(s3, bucket, "t/d1/f4.parquet") == b"written after the inventory"  # untouched
    outcome = {o.key: o.result for o in report.restore.outcomes}
    assert outcome["t/d1/f4.parquet"] == "changed since scan"
    assert read(s3, bucket, "t2/outside.parquet") is None  # outside the table: left deleted
    assert data_before <= set(data_versions(s3, bucket))  # no version holding data was removed
    assert report.requests.get("ListObjectVersions", 0) >= 1  # the re-check listing, though the plan was "fresh"
    info = report.summary()["info"]["inventory"]
    assert info["source"] == "s3-inventory" and 2.9 < info["age_hours"] < 3.2
    assert "S3 Inventory" in report.render() and "h before the scan" in report.render()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["plan"]["info"]["inventory"]["created_at"].startswith(
        (datetime.now(timezone.utc) - timedelta(hours=3)).strftime("%Y-%m-%dT%H"))


def test_an_old_report_is_planned_with_a_warning(moto_server):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    _table(s3, bucket)
    manifest = write_inventory(s3, bucket, fmt="CSV", created=datetime.now(timezone.utc) - timedelta(days=3))

    report = scan_report(s3, f"s3://{bucket}/t/", ScanOptions(inventory_manifest=manifest))

    assert report.plan.counts()["restore"] == 4
    assert "3.0 days old" in report.plan.info["inventory"]["warning"]
    assert "WARNING: the S3 Inventory is 3.0 days old" in report.render()
    assert report.plan.listed_at.startswith((datetime.now(timezone.utc) - timedelta(days=3)).strftime("%Y-%m-%d"))


def test_a_plan_from_a_report_equals_the_plan_from_a_listing(moto_server):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    _table(s3, bucket)
    manifest = write_inventory(s3, bucket, fmt="ORC")

    from_report = scan(s3, f"s3://{bucket}/t/", ScanOptions(inventory_manifest=manifest))
    from_listing = scan(s3, f"s3://{bucket}/t/")

    def items(plan):
        rows = [asdict(i) for i in plan.items]
        for row in rows:  # S3 Inventory keeps milliseconds
            for name in ("last_modified", "current_last_modified"):
                row[name] = row[name][:23]
        return rows

    assert items(from_report) == items(from_listing)


def test_reports_that_cannot_be_used_are_refused_saying_why(moto_server, tmp_path):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    _table(s3, bucket)
    other = new_bucket(s3)
    table = f"s3://{bucket}/t/"

    def refused(manifest: str) -> str:
        with pytest.raises(BadInputError) as error:
            scan(s3, table, ScanOptions(inventory_manifest=manifest))
        return str(error.value)

    assert "manifest.json" in refused(f"s3://{bucket}/inventory/nothing/here/manifest.json")
    assert f"inventory of bucket {other!r}" in refused(write_inventory(s3, other))
    current_only = write_inventory(s3, bucket, versions=False, config_id="current")
    assert "not a versioned inventory" in refused(current_only) and "IncludedObjectVersions=All" in refused(
        current_only)
    document = json.loads(s3.get_object(Bucket=bucket, Key=current_only.split(bucket + "/", 1)[1])["Body"].read())
    (tmp_path / "manifest.json").write_text(json.dumps({**document, "fileFormat": "JSON"}))
    assert "reads Parquet, ORC, CSV" in refused(str(tmp_path / "manifest.json"))
    good = write_inventory(s3, bucket, config_id="damaged")
    document = json.loads(s3.get_object(Bucket=bucket, Key=good.split(bucket + "/", 1)[1])["Body"].read())
    s3.put_object(Bucket=bucket, Key=document["files"][0]["key"], Body=b"not what S3 wrote")
    assert "does not match the MD5 checksum" in refused(good)


def test_the_command_scans_and_amends_from_a_report(moto_server, tmp_path):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    objects = _table(s3, bucket)
    manifest = write_inventory(s3, bucket, fmt="CSV")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=moto_server.access_key, AWS_SECRET_ACCESS_KEY=moto_server.secret_key)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow_fuse.cli", *args, "--endpoint-url",
                               moto_server.endpoint_url], env=env, capture_output=True, text=True, timeout=300)

    scanned = run("scan", f"s3://{bucket}/t/", "--inventory-manifest", manifest, "--json")
    assert scanned.returncode == 4, scanned.stderr
    assert json.loads(scanned.stdout)["info"]["inventory"]["manifest"] == manifest
    done = run("amend", f"s3://{bucket}/t/", "--inventory-manifest", manifest)
    assert done.returncode == 0, done.stderr
    assert "versions from the S3 Inventory" in done.stdout
    assert all(read(s3, bucket, k) == v for k, v in objects.items() if k.startswith("t/"))
    # Shards written earlier (here: one range) plan the same way from the command.
    write_shard(s3, f"s3://{bucket}/t/", KeyRange(0, 1, None, None), str(tmp_path / "shards"))
    again = run("scan", f"s3://{bucket}/t/", "--inventory-shards", str(tmp_path / "shards"), "--json")
    assert again.returncode == 0, again.stderr  # nothing left to restore
    assert json.loads(again.stdout)["info"]["inventory"]["shards"] == 1


@pytest.mark.parametrize("fmt, schema", [
    ("CSV", "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, "
            "IsMultipartUploaded, ReplicationStatus, EncryptionStatus"),
    ("Parquet", "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary "
                "version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker;  optional int64 "
                "size;  optional int64 last_modified_date (TIMESTAMP_MILLIS);  optional binary e_tag (UTF8);}"),
    ("Parquet", "message s3.inventory {  required binary bucket (STRING);  required binary key (STRING);  optional "
                "binary version_id (STRING);  optional boolean is_latest;  optional boolean is_delete_marker;  "
                "optional int64 size;  optional int64 last_modified_date (TIMESTAMP(MILLIS,true));  optional binary "
                "e_tag (STRING);  optional binary storage_class (STRING);}"),
    ("ORC", "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,size:bigint,"
            "last_modified_date:timestamp,e_tag:string,storage_class:string,is_multipart_uploaded:boolean>"),
])
def test_manifests_as_aws_writes_them_are_understood(fmt, schema):
    manifest = parse_manifest(json.dumps({
        "sourceBucket": "example-source-bucket", "destinationBucket": "arn:aws:s3:::example-destination-bucket",
        "version": "2016-11-30", "creationTimestamp": "1514944800000", "fileFormat": fmt, "fileSchema": schema,
        "files": [{"key": "inventory/example-source-bucket/data/d754c470.parquet", "size": 56291,
                   "MD5checksum": "5825f2e18e1695c2d030b9f6eexample"}]}).encode(), "s3://x/manifest.json")

    assert manifest.destination_bucket == "example-destination-bucket"
    assert manifest.created_at == datetime(2018, 1, 3, 2, 0, tzinfo=timezone.utc)
    assert manifest.fields[:8] == ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size",
                                   "LastModifiedDate", "ETag")
    assert manifest.files[0].size == 56291
