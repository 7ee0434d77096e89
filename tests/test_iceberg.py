"""Apache Iceberg tables written by pyiceberg: break them as users do, amend, and read them back with pyiceberg.

For every table and every way of breaking it: pyiceberg reads the same rows (the current snapshot and every
retained one), every key the table needs holds its original bytes, keys the table does not need (older
metadata files, files snapshot expiry deleted) stay deleted, and nothing outside the table root changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from pyiceberg.table import StaticTable

from airflow_fuse import formats
from airflow_fuse.embedded import S3Server
from airflow_fuse.engine import ScanOptions, amend, scan
from airflow_fuse.errors import MetadataError
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.iceberg import (
    UnsupportedIcebergError,
    _Paths,
    decode_manifest,
    decode_manifest_list,
    decode_metadata,
    metadata_version,
)
from airflow_fuse.listing import VersionEntry
from airflow_fuse.parquet import read_parquet
from airflow_fuse.verify import verify_table
from tests.conftest import new_bucket
from tests.helpers import all_versions, delete_keys
from tests.iceberg_tables import (
    TableState,
    current_entries,
    live_bytes,
    metadata_json,
    open_catalog,
    reachable_keys,
    read_rows,
    read_snapshots,
    record_state,
    reset,
    write_appends,
    write_expired,
    write_partitioned,
)

TABLES = ("appends", "partitioned", "expired")


@dataclass
class Lake:
    """One bucket per server with the three tables under one warehouse (``lake/db/``), as written."""

    server: S3Server
    s3: Any
    bucket: str
    catalog: Any
    states: dict[str, TableState]

    def fresh(self, name: str) -> TableState:
        """The table as written (a failed test before this one may have left it broken)."""
        state = self.states[name]
        reset(self.s3, self.bucket, state)
        return state

    def uri(self, state: TableState) -> str:
        return f"s3://{self.bucket}/{state.root}"

    def outside(self, state: TableState) -> list:
        return [v for v in all_versions(self.s3, self.bucket) if not v[0].startswith(state.root)]


@pytest.fixture(scope="module")
def lake(s3_server: S3Server, tmp_path_factory) -> Lake:
    s3 = s3_server.client()
    bucket = new_bucket(s3)
    catalog = open_catalog(s3_server, bucket, tmp_path_factory.mktemp("iceberg") / "catalog.db")
    write_appends(catalog)
    write_partitioned(catalog)
    write_expired(catalog, s3, bucket)
    s3.put_object(Bucket=bucket, Key="elsewhere/data/x.parquet", Body=b"another table's file")
    return Lake(s3_server, s3, bucket, catalog, {name: record_state(catalog, s3, bucket, name) for name in TABLES})


def _assert_reads_as_written(lake: Lake, state: TableState, *, every_snapshot: bool = False) -> None:
    assert read_rows(lake.catalog, state.name).equals(state.rows)
    if every_snapshot:  # time travel to every retained snapshot
        assert read_snapshots(lake.catalog, state.name) == state.snapshot_rows


def _assert_still_deleted(lake: Lake, keys: set[str], root: str) -> None:
    entries = current_entries(lake.s3, lake.bucket, root)
    assert keys and all(entries[k]["IsDeleteMarker"] for k in keys), sorted(k for k in keys
                                                                            if not entries[k]["IsDeleteMarker"])


# breaking a table -----------------------------------------------------------------------------------

def _delete_under(lake: Lake, state: TableState, folder: str) -> list[str]:
    keys = [k for k in state.live if k.startswith(state.root + folder)]
    delete_keys(lake.s3, lake.bucket, keys)
    return keys


def _overwrite_data_file(lake: Lake, state: TableState) -> list[str]:
    key = state.data_keys()[-1]
    lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=b"PAR1 not the data PAR1")
    return []


BREAKS = {
    "whole root deleted": lambda lake, state: _delete_under(lake, state, ""),
    "data files deleted": lambda lake, state: _delete_under(lake, state, "data/"),
    "metadata deleted": lambda lake, state: _delete_under(lake, state, "metadata/"),
    "a data file overwritten": _overwrite_data_file,
}


# Each table loses its whole root; the other breaks go where they test most: data files where older snapshots
# and expiry left files the current snapshot does not reach, metadata where deleted older metadata must stay
# deleted, an overwrite where partition folders are encoded.
CASES = [*(("whole root deleted", name) for name in TABLES),
         ("data files deleted", "partitioned"), ("data files deleted", "expired"),
         ("metadata deleted", "appends"), ("metadata deleted", "expired"),
         ("a data file overwritten", "partitioned")]


@pytest.mark.parametrize(("how", "name"), CASES)
def test_a_broken_table_reads_the_same_after_amend(lake, how, name):
    state = lake.fresh(name)
    outside = lake.outside(state)
    deleted = BREAKS[how](lake, state)

    report = amend(lake.s3, table=lake.uri(state))

    assert report.plan.table_format == "iceberg"  # detected, even with every metadata file deleted
    assert report.remaining == 0 and report.unrecoverable == 0, report.summary()
    # Older metadata files are not needed: deleted, they stay deleted; everything else is back, byte for byte.
    older_deleted = state.older_metadata & set(deleted)
    expected = {k: v for k, v in state.live.items() if k not in older_deleted}
    assert live_bytes(lake.s3, lake.bucket, state.root) == expected
    if older_deleted:
        _assert_still_deleted(lake, older_deleted, state.root)
    if state.deleted:  # what expiry and the writer's own clean-up deleted
        _assert_still_deleted(lake, state.deleted, state.root)
    if how == "a data file overwritten":
        damaged = [i for i in report.plan.items if i.status == "damaged"]
        assert [i.key for i in damaged] == [state.data_keys()[-1]] and "the metadata says" in damaged[0].reason
    _assert_reads_as_written(lake, state, every_snapshot=how != "a data file overwritten")
    assert lake.outside(state) == outside


def test_partition_values_are_used_as_written(lake):
    """A space is '+' and 'ã' is '%C3%A3' in the keys pyiceberg writes: restored as written, never decoded."""
    state = lake.fresh("partitioned")
    assert any("city=New+York/" in k for k in state.live) and any("city=S%C3%A3o+Paulo/" in k for k in state.live)
    delete_keys(lake.s3, lake.bucket, state.data_keys())
    plan = scan(lake.s3, lake.uri(state), ScanOptions(table_format="iceberg"))
    restored = sorted(i.key for i in plan.items if i.status == "restore")
    assert restored == state.data_keys()
    assert all(i.kind == "data_file" and i.row_count and i.expected_size for i in plan.items if i.key in restored)


def test_amend_from_the_command_line(lake):
    state = lake.fresh("partitioned")
    delete_keys(lake.s3, lake.bucket, list(state.live))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=lake.server.access_key, AWS_SECRET_ACCESS_KEY=lake.server.secret_key,
               AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run([sys.executable, "-m", "airflow_fuse.cli", "amend", lake.uri(state), "--format", "iceberg",
                           "--json", "--endpoint-url", lake.server.endpoint_url],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["table_format"] == "iceberg" and summary["remaining"] == 0
    assert summary["tables"][0]["metadata_key"] == state.metadata_key
    assert summary["skipped"] == len(state.older_metadata)  # the metadata-log files, left deleted
    _assert_reads_as_written(lake, state)


def test_only_the_named_table_changes(lake):
    appends, partitioned = lake.fresh("appends"), lake.fresh("partitioned")
    for state in (appends, partitioned):
        delete_keys(lake.s3, lake.bucket, state.data_keys())
    untouched = all_versions(lake.s3, lake.bucket, partitioned.root)

    report = amend(lake.s3, table=lake.uri(appends))  # the table root names it
    assert report.remaining == 0 and [t["table_root"] for t in report.plan.tables] == [appends.root]
    _assert_reads_as_written(lake, appends)
    assert all_versions(lake.s3, lake.bucket, partitioned.root) == untouched

    # The warehouse lists both tables: metadata_location (as the catalog reports it) names one.
    untouched = all_versions(lake.s3, lake.bucket, appends.root)
    location = lake.catalog.load_table(f"db.{partitioned.name}").metadata_location
    report = amend(lake.s3, table=f"s3://{lake.bucket}/lake/",
                   scan_options=ScanOptions(layout_options={"metadata_location": location}))
    assert report.plan.table_format == "iceberg" and report.remaining == 0
    assert {f"lake/db/{n}/" for n in TABLES} <= set(report.plan.info["tables_found"])
    assert all(i.key.startswith(partitioned.root) for i in report.plan.items)
    _assert_reads_as_written(lake, partitioned)
    assert all_versions(lake.s3, lake.bucket, appends.root) == untouched


def test_include_history_restores_the_older_metadata_files(lake):
    state = lake.fresh("appends")
    delete_keys(lake.s3, lake.bucket, list(state.live))
    report = amend(lake.s3, table=lake.uri(state), scan_options=ScanOptions(table_format="iceberg",
                                                                           include_history=True))
    assert report.remaining == 0
    assert state.older_metadata == set(state.metadata_log) and state.older_metadata
    assert live_bytes(lake.s3, lake.bucket, state.root) == state.live


def test_current_snapshot_only_leaves_older_snapshots_files_deleted(lake):
    state = lake.fresh("partitioned")
    table = lake.catalog.load_table("db.partitioned")
    current = reachable_keys(table, lake.bucket, current_only=True)
    older_only = set(state.live) - current - state.older_metadata
    assert older_only and any(k.startswith(state.root + "data/") for k in older_only)
    delete_keys(lake.s3, lake.bucket, list(state.live))

    report = amend(lake.s3, table=lake.uri(state),
                   scan_options=ScanOptions(layout_options={"current_snapshot_only": True}))

    assert report.remaining == 0
    assert live_bytes(lake.s3, lake.bucket, state.root) == {k: state.live[k] for k in current}
    _assert_still_deleted(lake, older_only, state.root)
    assert read_rows(lake.catalog, state.name).equals(state.rows)
    assert report.plan.tables[0]["row_count"] == state.rows.num_rows == report.plan.tables[0]["current_snapshot_rows"]


def test_metadata_versions_that_do_not_decode_are_passed_over(lake):
    """Garbage over the current metadata.json, a manifest list (same size: only decoding tells) and a manifest
    (another size than its manifest list records): each comes back from its older, good version."""
    state = lake.fresh("appends")
    metadata = metadata_json(lake.s3, lake.bucket, state.metadata_key)
    manifest_list = metadata["snapshots"][-1]["manifest-list"].split("/", 3)[3]
    manifest = next(k for k in state.live if k.endswith("-m0.avro"))
    garbage = {state.metadata_key: b"{ not json", manifest_list: b"\0" * len(state.live[manifest_list]),
               manifest: b"Obj\x01 truncated"}
    for key, body in garbage.items():
        lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=body)

    report = amend(lake.s3, table=lake.uri(state))

    damaged = {i.key: i.reason for i in report.plan.items if i.status == "damaged"}
    assert set(damaged) == set(garbage), damaged
    assert "does not decode" in damaged[state.metadata_key] and "does not decode" in damaged[manifest_list]
    assert report.remaining == 0
    assert live_bytes(lake.s3, lake.bucket, state.root) == state.live
    _assert_reads_as_written(lake, state)


def test_version_hint_is_followed_and_never_rolled_back_unless_named(lake):
    """A Hadoop-style table: version-hint.text names the current metadata file (here an older one than the
    newest listed: the hint wins). Deleted with the table, the hint is reported and left deleted."""
    state = lake.fresh("appends")
    hinted = sorted(state.older_metadata)[-1]
    hint_key = state.root + "metadata/version-hint.text"
    lake.s3.put_object(Bucket=lake.bucket, Key=hint_key, Body=hinted.rsplit("/", 1)[1].encode())
    try:
        delete_keys(lake.s3, lake.bucket, [*state.live, hint_key])

        report = amend(lake.s3, table=lake.uri(state))
        assert report.plan.info["metadata_source"] == "version_hint" and report.plan.info["metadata_key"] == hinted
        assert any("newer metadata is listed" in w for w in report.plan.info["warnings"])
        skipped = {i.key: i.reason for i in report.plan.items if i.status == "skipped"}
        assert "pointer file" in skipped[hint_key] and "rollback_keys" in skipped[hint_key]
        _assert_still_deleted(lake, {hint_key, state.metadata_key}, state.root)

        report = amend(lake.s3, table=lake.uri(state), scan_options=ScanOptions(rollback_keys=[hint_key]))
        assert report.remaining == 0 and hint_key in {i.key for i in report.plan.items if i.status == "restore"}
        properties = {k: v for k, v in lake.catalog.properties.items() if k.startswith("s3.")}
        static = StaticTable.from_metadata(f"s3://{lake.bucket}/{state.root.rstrip('/')}", properties=properties)
        assert static.metadata_location.endswith(hinted)
        rows = static.scan().to_arrow().sort_by("id")
        assert rows.equals(state.snapshot_rows[static.metadata.current_snapshot_id])
    finally:  # the shared table has no hint file: remove every version of it
        for key, version_id, _ in all_versions(lake.s3, lake.bucket, hint_key):
            lake.s3.delete_object(Bucket=lake.bucket, Key=key, VersionId=version_id)


def test_statistics_files_listed_in_the_metadata_are_needed(lake):
    """Puffin statistics and partition statistics files (pyiceberg writes none: added to the metadata here)."""
    state = lake.fresh("appends")
    metadata = metadata_json(lake.s3, lake.bucket, state.metadata_key)
    current, older = metadata["current-snapshot-id"], metadata["snapshots"][0]["snapshot-id"]
    stats = {state.root + f"metadata/{name}.stats": f"PFA1 {name} PFA1".encode() for name in ("current", "older")}
    table_stats_key, partition_stats_key = stats
    metadata["statistics"] = [{"snapshot-id": current, "statistics-path": f"s3://{lake.bucket}/{table_stats_key}",
                               "file-size-in-bytes": len(stats[table_stats_key]), "file-footer-size-in-bytes": 4,
                               "blob-metadata": []}]
    metadata["partition-statistics"] = [{"snapshot-id": older,
                                         "statistics-path": f"s3://{lake.bucket}/{partition_stats_key}",
                                         "file-size-in-bytes": len(stats[partition_stats_key])}]
    lake.s3.put_object(Bucket=lake.bucket, Key=state.metadata_key, Body=json.dumps(metadata).encode())
    try:
        for key, body in stats.items():
            lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=body)
        delete_keys(lake.s3, lake.bucket, [*state.live, *stats])

        report = amend(lake.s3, table=lake.uri(state), scan_options=ScanOptions(
            layout_options={"current_snapshot_only": True}))
        assert report.remaining == 0
        assert live_bytes(lake.s3, lake.bucket, table_stats_key) == {table_stats_key: stats[table_stats_key]}
        _assert_still_deleted(lake, {partition_stats_key}, state.root)

        report = amend(lake.s3, table=lake.uri(state))
        assert {i.key: (i.kind, i.expected_size) for i in report.plan.items if i.key in stats} == {
            key: ("statistics", len(body)) for key, body in stats.items()}
        assert all(live_bytes(lake.s3, lake.bucket, key) == {key: body} for key, body in stats.items())
        assert read_rows(lake.catalog, state.name).equals(state.rows)
    finally:  # the shared table has no statistics files: remove every version of them
        for key, version_id, _ in all_versions(lake.s3, lake.bucket, state.root + "metadata/"):
            if key in stats:
                lake.s3.delete_object(Bucket=lake.bucket, Key=key, VersionId=version_id)


def test_verification_checks_each_data_file_against_its_manifest(lake):
    state = lake.fresh("partitioned")
    result = verify_table(lake.s3, lake.uri(state))
    assert result.ok, result.problems
    assert len(result.files) == len(state.data_keys()) and result.total_rows == result.expected_rows
    # Rows of every data file a retained snapshot reaches (here every data file written), before deletes.
    assert result.expected_rows == sum(read_parquet(state.live[k]).num_rows for k in state.data_keys())
    broken = state.data_keys()[0]
    lake.s3.put_object(Bucket=lake.bucket, Key=broken, Body=b"not parquet")
    result = verify_table(lake.s3, lake.uri(state))
    assert not result.ok and any(p.startswith(broken) and "damaged" in p for p in result.problems)


@pytest.mark.parametrize("where", ["another table", "another bucket", "a parent folder"])
def test_metadata_pointing_outside_the_table_is_refused(lake, where):
    state = lake.fresh("appends")
    metadata = metadata_json(lake.s3, lake.bucket, state.metadata_key)
    path = {"another table": f"s3://{lake.bucket}/elsewhere/data/x.parquet",
            "another bucket": f"s3://other-bucket/{state.root}metadata/snap-1.avro",
            "a parent folder": f"s3://{lake.bucket}/{state.root}metadata/../../../elsewhere/data/x.parquet"}[where]
    metadata["snapshots"][0]["manifest-list"] = path
    lake.s3.put_object(Bucket=lake.bucket, Key=state.metadata_key, Body=json.dumps(metadata).encode())
    delete_keys(lake.s3, lake.bucket, state.data_keys())
    before = all_versions(lake.s3, lake.bucket)

    with pytest.raises(MetadataError) as raised:
        amend(lake.s3, table=lake.uri(state))

    assert path in str(raised.value) and "outside the table root" in str(raised.value)
    assert all_versions(lake.s3, lake.bucket) == before  # nothing written anywhere


def test_a_location_inside_the_table_is_refused(lake):
    state = lake.fresh("appends")
    with pytest.raises(MetadataError, match="inside the Iceberg table"):
        scan(lake.s3, f"s3://{lake.bucket}/{state.root}metadata/", ScanOptions(table_format="iceberg"))


# pure decisions -------------------------------------------------------------------------------------

def _inventory(keys: dict[str, bool]) -> Inventory:
    """key -> is deleted (a delete marker over one version)."""
    now = datetime.now(timezone.utc)
    entries = []
    for key in sorted(keys):
        if keys[key]:
            entries.append(VersionEntry(key, "m1", True, True, 0, now, ""))
        entries.append(VersionEntry(key, "v1", False, not keys[key], 10, now, '"e"'))
    return Inventory.from_entries("b", "lake/", entries)


def test_detection_needs_a_metadata_file_deleted_or_not():
    assert formats.detect(_inventory({"lake/t/metadata/00001-a.metadata.json": True,
                                      "lake/t/data/x.parquet": True})) == "iceberg"
    assert formats.detect(_inventory({"lake/t/metadata/snap-1.avro": False, "lake/t/data/x.parquet": False})) \
        == "prefix"
    assert formats.get("iceberg").row_kinds == {"data_file"}


def test_metadata_version_numbers():
    assert metadata_version("t/metadata/00042-0f3e.metadata.json") == 42
    assert metadata_version("t/metadata/v7.metadata.json") == 7
    assert metadata_version("t/metadata/00003-ab.gz.metadata.json") == 3
    assert metadata_version("t/metadata/v7.gz.metadata.json") == 7
    assert metadata_version("t/metadata/snap-1-0-ab.avro") is None
    assert metadata_version("t/metadata/latest.metadata.json") is None


def test_paths_are_used_as_written_and_confined_to_the_table_root():
    paths = _Paths("b", "lake/db/t/")
    assert paths.resolve("s3://b/lake/db/t/data/city=New+York/a%20b.parquet", "m", "data file") \
        == "lake/db/t/data/city=New+York/a%20b.parquet"
    assert paths.resolve("s3a://b/lake/db/t/metadata/m.avro", "m", "manifest") == "lake/db/t/metadata/m.avro"
    for outside in ("s3://b/lake/db/t2/data/x.parquet", "s3://c/lake/db/t/data/x.parquet", "/lake/db/t/x",
                    "lake/db/t/data/x.parquet", "s3://b/lake/db/t/../t2/x", "s3://b/lake/db/t/", "gs://b/lake/db/t/x",
                    None):
        with pytest.raises(MetadataError, match="outside the table root"):
            paths.resolve(outside, "lake/db/t/metadata/00001-a.metadata.json", "data file")


def test_undecodable_metadata_is_damage_and_unknown_versions_are_refused():
    for data in (b"", b"{", b"[]", b'{"format-version": 2}', b"\x1f\x8b not gzip"):
        with pytest.raises(MetadataError):
            decode_metadata("k", data)
    with pytest.raises(UnsupportedIcebergError, match="format-version 9"):
        decode_metadata("k", b'{"format-version": 9, "location": "s3://b/t"}')
    for decode in (decode_manifest, decode_manifest_list):
        for data in (b"", b"Obj\x01", b"PAR1 not avro"):
            with pytest.raises(MetadataError, match="not a readable Avro file"):
                decode("k", data)


def _avro(schema: dict, records: list[dict]) -> bytes:
    import io

    import fastavro

    sink = io.BytesIO()
    fastavro.writer(sink, fastavro.parse_schema(schema), records)
    return sink.getvalue()


_DATA_FILE = {"type": "record", "name": "r2", "fields": [
    {"name": "content", "type": "int", "field-id": 134},
    {"name": "file_path", "type": "string", "field-id": 100},
    {"name": "file_format", "type": "string", "field-id": 101},
    # A timestamp partition value past year 9999 is valid Iceberg; as a Python datetime it overflows.
    {"name": "partition", "type": {"type": "record", "name": "r102", "fields": [
        {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}], "field-id": 1000}]},
     "field-id": 102},
    {"name": "record_count", "type": "long", "field-id": 103},
    {"name": "file_size_in_bytes", "type": "long", "field-id": 104}]}
_MANIFEST = {"type": "record", "name": "manifest_entry", "fields": [
    {"name": "status", "type": "int", "field-id": 0}, {"name": "data_file", "type": _DATA_FILE, "field-id": 2}]}
_MANIFEST_LIST = {"type": "record", "name": "manifest_file", "fields": [
    {"name": "manifest_path", "type": "string", "field-id": 500},
    {"name": "manifest_length", "type": "long", "field-id": 501},
    {"name": "content", "type": "int", "field-id": 517}]}


def _entry(status: int, content: int, path: str, file_format: str = "PARQUET", rows: int = 10, size: int = 100):
    return {"status": status, "data_file": {"content": content, "file_path": f"s3://b/lake/t/{path}",
                                            "file_format": file_format, "partition": {"ts": 2**62},
                                            "record_count": rows, "file_size_in_bytes": size}}


class _Reader:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def read(self, key: str, version_id: str) -> bytes:  # noqa: ARG002 - one version each
        return self.objects[key]


def test_delete_files_and_other_formats_get_their_own_kinds():
    """Position and equality deletes and deletion vectors are delete files (no Parquet rows to check); an ORC
    data file is not a Parquet data file; DELETED entries are tombstones. Manifests written by fastavro with
    Iceberg's schema; logical types are not decoded (partition values are not needed)."""
    from airflow_fuse.layouts.iceberg import IcebergLayout

    data = _avro(_MANIFEST, [_entry(1, 0, "data/a.parquet", rows=7, size=70), _entry(0, 0, "data/b.orc", "ORC"),
                             _entry(2, 0, "data/gone.parquet")])
    deletes = _avro(_MANIFEST, [_entry(1, 1, "data/pos.parquet", rows=2, size=20),
                                _entry(1, 2, "data/eq.parquet", rows=1, size=10),
                                _entry(1, 1, "data/dv.puffin", "PUFFIN", rows=3, size=30)])
    manifest_list = _avro(_MANIFEST_LIST, [
        {"manifest_path": "s3://b/lake/t/metadata/m-data.avro", "manifest_length": len(data), "content": 0},
        {"manifest_path": "s3://b/lake/t/metadata/m-deletes.avro", "manifest_length": len(deletes), "content": 1}])
    metadata = {"format-version": 2, "location": "s3://b/lake/t", "current-snapshot-id": 5,
                "snapshots": [{"snapshot-id": 5, "manifest-list": "s3://b/lake/t/metadata/snap-5.avro",
                               "summary": {"operation": "overwrite", "total-records": "17"}}]}
    objects = {"lake/t/metadata/00001-a.metadata.json": json.dumps(metadata).encode(),
               "lake/t/metadata/snap-5.avro": manifest_list, "lake/t/metadata/m-data.avro": data,
               "lake/t/metadata/m-deletes.avro": deletes}
    now = datetime.now(timezone.utc)
    inventory = Inventory.from_entries("b", "lake/", [VersionEntry(k, "v1", False, True, len(v), now, '"e"')
                                                      for k, v in sorted(objects.items())])

    result = IcebergLayout().needed(inventory, _Reader(objects))

    needed = {o.key.removeprefix("lake/t/"): (o.kind, o.expected_size, o.row_count) for o in result.needed}
    assert needed == {
        "metadata/00001-a.metadata.json": ("metadata", None, None),
        "metadata/snap-5.avro": ("manifest_list", None, None),
        "metadata/m-data.avro": ("manifest", len(data), None),
        "metadata/m-deletes.avro": ("manifest", len(deletes), None),
        "data/a.parquet": ("data_file", 70, 7),
        "data/b.orc": ("data_file_orc", 100, None),
        "data/pos.parquet": ("delete_file", 20, None),
        "data/eq.parquet": ("delete_file", 10, None),
        "data/dv.puffin": ("delete_file", 30, None),
    }
    summary = result.tables[0]
    assert (summary["row_count"], summary["current_snapshot_rows"], summary["delete_files"]) == (17, 17, 3)
    assert any("3 delete file(s)" in w for w in result.info["warnings"])
