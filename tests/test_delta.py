"""Delta Lake tables written by the real writer (deltalake): break them as users do, amend, and read them back.

Every test works on its own copy of one table written once per server (``write_sales``: partitioned appends,
a delete, a compaction, a checkpoint, a partition overwrite, a vacuum). After an amend deltalake must read the
same rows as before the break; the files the vacuum deleted, the log older than the checkpoint and the
``_last_checkpoint`` pointer must stay deleted unless asked for; nothing outside the table may change.
The last tests are millisecond unit tests of the log decoding and replay, on hand-made logs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_fuse import formats
from airflow_fuse.embedded import S3Server
from airflow_fuse.engine import ScanOptions, amend, scan
from airflow_fuse.errors import MetadataError
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.delta import (
    DeletionVector,
    DeltaLayout,
    FileAction,
    LiveFiles,
    LogActions,
    decode_actions_json,
    decode_checkpoint_parquet,
    deletion_vector_path,
)
from airflow_fuse.listing import VersionEntry
from airflow_fuse.verify import verify_table
from tests.conftest import new_bucket
from tests.delta_tables import open_table, read_table, replay_bucket, rows_of, write_sales, write_small
from tests.helpers import all_versions, delete_keys, read

ROOT = "lake/sales/"
LOG = ROOT + "_delta_log/"
LAST_CHECKPOINT = LOG + "_last_checkpoint"
CHECKPOINT = LOG + f"{4:020d}.checkpoint.parquet"
OUTSIDE = "elsewhere/other-table/part-0.parquet"


@dataclass
class Sales:
    """The table as written: its rows and its keys, by what they are."""

    bucket: str
    rows: pa.Table
    version: int
    data_files: list[str]  # live data files (every live key outside _delta_log/)
    vacuumed: list[str]  # keys the vacuum deleted
    log_needed: list[str]  # the checkpoint and the commits after it
    log_history: list[str]  # commits up to the checkpoint's version


_WRITTEN: dict[str, Sales] = {}


def _written(server: S3Server) -> Sales:
    """The sales table written once per server (and process) into its own bucket."""
    if server.endpoint_url not in _WRITTEN:
        s3 = server.client()
        bucket = new_bucket(s3)
        write_sales(server, bucket, ROOT)
        deleted = set(_deleted(s3, bucket))
        live = {k for k, _, _ in all_versions(s3, bucket, ROOT)} - deleted
        delta_table = open_table(server, f"s3://{bucket}/{ROOT}")
        version = delta_table.version()
        _WRITTEN[server.endpoint_url] = Sales(
            bucket=bucket,
            rows=rows_of(delta_table),
            version=version,
            data_files=sorted(k for k in live if not k.startswith(LOG)),
            vacuumed=sorted(deleted),
            log_needed=[CHECKPOINT] + [LOG + f"{v:020d}.json" for v in range(5, version + 1)],
            log_history=[LOG + f"{v:020d}.json" for v in range(0, 5)],
        )
    return _WRITTEN[server.endpoint_url]


@pytest.fixture
def sales(s3_server: S3Server) -> Sales:
    return _written(s3_server)


def _deleted(s3, bucket: str, prefix: str = "") -> list[str]:
    """Keys whose current entry is a delete marker."""
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out += [m["Key"] for m in page.get("DeleteMarkers", []) if m["IsLatest"]]
    return out


@pytest.fixture
def table(s3, sales: Sales) -> str:
    """A fresh bucket holding the sales table's whole history, and one object of another table."""
    bucket = new_bucket(s3)
    replay_bucket(s3, sales.bucket, bucket)
    s3.put_object(Bucket=bucket, Key=OUTSIDE, Body=b"not ours")
    return bucket


def _live_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _assert_whole(s3_server, s3, bucket: str, sales: Sales) -> None:
    """deltalake reads the rows written; what the vacuum deleted is still deleted; nothing outside changed."""
    delta_table = open_table(s3_server, f"s3://{bucket}/{ROOT}")
    assert delta_table.version() == sales.version
    assert rows_of(delta_table).equals(sales.rows)
    assert set(sales.vacuumed) <= set(_deleted(s3, bucket, ROOT))
    assert read(s3, bucket, OUTSIDE) == b"not ours"


# the real writer's tables, on every server --------------------------------------------------------

def test_scan_lists_the_current_version_and_nothing_vacuumed(s3, table, sales):
    plan = scan(s3, f"s3://{table}/{ROOT}")
    assert plan.table_format == "delta"  # detected
    summary = plan.tables[0]
    assert (summary["table_root"], summary["version"], summary["checkpoint_version"]) == (ROOT, sales.version, 4)
    assert summary["checkpoint_source"] == "_last_checkpoint" and summary["commits_replayed"] == 4
    assert summary["row_count"] == sales.rows.num_rows and summary["data_files"] == len(sales.data_files)
    by_kind = {kind: sorted(i.key for i in plan.items if i.kind == kind) for kind in ("log", "checkpoint", "data_file")}
    assert by_kind == {"log": sales.log_needed[1:], "checkpoint": [CHECKPOINT], "data_file": sales.data_files}
    assert any("%20" in key for key in sales.data_files)  # the partition value "New York", decoded once
    assert {i.status for i in plan.items} == {"present"}
    assert not set(sales.vacuumed) & {i.key for i in plan.items}
    rows = {i.key: i.row_count for i in plan.items if i.kind == "data_file"}
    assert sum(rows.values()) == sales.rows.num_rows
    # The location above the table finds it too.
    assert scan(s3, f"s3://{table}/lake/").info["tables_found"] == [ROOT]


BREAKS = {
    "whole root deleted": lambda s3, bucket: _live_keys(s3, bucket, ROOT),
    "only data files deleted": lambda s3, bucket: [k for k in _live_keys(s3, bucket, ROOT) if not k.startswith(LOG)],
    "only _delta_log deleted": lambda s3, bucket: _live_keys(s3, bucket, LOG),
}


@pytest.mark.parametrize("how", list(BREAKS))
def test_deleted_objects_come_back(s3_server, s3, table, sales, how):
    broken = BREAKS[how](s3, table)
    delete_keys(s3, table, broken)
    uri = f"s3://{table}/{ROOT}"

    report = amend(s3, table=uri)
    summary = report.summary()
    assert summary["remaining"] == 0 and summary["failed"] == 0 and summary["unrecoverable"] == 0, report.render()
    needed = set(sales.data_files) | set(sales.log_needed)
    assert sorted(o.key for o in report.restore.outcomes) == sorted(set(broken) & needed)  # exactly those
    assert {o.result for o in report.restore.outcomes} == {"undeleted"}
    _assert_whole(s3_server, s3, table, sales)
    skipped = {i.key: i.reason for i in report.plan.items if i.status == "skipped"}
    if LAST_CHECKPOINT in broken:  # a pointer file: never rolled back unless named
        assert read(s3, table, LAST_CHECKPOINT) is None and "pointer file" in skipped[LAST_CHECKPOINT]
        assert all(read(s3, table, key) is None for key in sales.log_history)  # history stays deleted
        assert "include_history" in skipped[sales.log_history[0]]
    verified = verify_table(s3, uri)
    assert verified.ok, verified.render()
    assert verified.total_rows == verified.expected_rows == sales.rows.num_rows


def test_overwritten_data_file_is_replaced_by_its_good_version(s3_server, s3, table, sales):
    key = sales.data_files[0]
    good = read(s3, table, key)
    s3.put_object(Bucket=table, Key=key, Body=b"PAR1 other bytes, not this table's data")
    versions_before = all_versions(s3, table)
    report = amend(s3, table=f"s3://{table}/{ROOT}")
    damaged = [i for i in report.plan.items if i.status == "damaged"]
    assert [i.key for i in damaged] == [key] and f"the metadata says {len(good)}" in damaged[0].reason
    assert [o.result for o in report.restore.outcomes] == ["copied"]
    assert read(s3, table, key) == good
    _assert_whole(s3_server, s3, table, sales)
    assert set(versions_before) <= set(all_versions(s3, table))  # the bad version is kept, not destroyed


def test_the_cli_amends_a_delta_table(s3_server, s3, table, sales):
    delete_keys(s3, table, _live_keys(s3, table, ROOT))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.access_key, AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
               AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run([sys.executable, "-m", "airflow_fuse.cli", "amend", f"s3://{table}/{ROOT}", "--format",
                           "delta", "--json", "--endpoint-url", s3_server.endpoint_url],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["table_format"] == "delta" and summary["remaining"] == 0
    assert summary["restored"] == len(sales.data_files) + len(sales.log_needed)
    _assert_whole(s3_server, s3, table, sales)


# on one server: what does not depend on the server ------------------------------------------------

def test_include_history_restores_the_log_but_not_vacuumed_files(moto_server, sales_on_moto):
    s3, table, sales = sales_on_moto
    delete_keys(s3, table, _live_keys(s3, table, ROOT))
    report = amend(s3, table=f"s3://{table}/{ROOT}", scan_options=ScanOptions(include_history=True))
    assert report.summary()["remaining"] == 0, report.render()
    restored = {o.key for o in report.restore.outcomes}
    assert set(sales.log_history) <= restored
    assert report.plan.tables[0]["history_log_files"] == len(sales.log_history)
    _assert_whole(moto_server, s3, table, sales)
    assert read(s3, table, LAST_CHECKPOINT) is None
    assert open_table(moto_server, f"s3://{table}/{ROOT}", version=1).version() == 1  # time travel over the log


def test_two_tables_under_one_root_only_the_named_one_changes(moto_server):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    write_small(moto_server, bucket, "lake/a/", [1, 2])
    write_small(moto_server, bucket, "lake/b/", [3])
    a_rows = read_table(moto_server, f"s3://{bucket}/lake/a/")
    delete_keys(s3, bucket, _live_keys(s3, bucket, "lake/"))
    b_before = all_versions(s3, bucket, "lake/b/")
    assert scan(s3, f"s3://{bucket}/lake/").info["tables_found"] == ["lake/a/", "lake/b/"]

    report = amend(s3, table=f"s3://{bucket}/lake/", scan_options=ScanOptions(table_prefix="a"))
    assert report.summary()["remaining"] == 0, report.render()
    assert [t["table_root"] for t in report.plan.tables] == ["lake/a/"]
    assert read_table(moto_server, f"s3://{bucket}/lake/a/").equals(a_rows)
    assert all_versions(s3, bucket, "lake/b/") == b_before
    with pytest.raises(MetadataError, match="tables found: a/, b/"):
        scan(s3, f"s3://{bucket}/lake/", ScanOptions(table_format="delta", table_prefix="c"))


def test_multi_part_checkpoint_comes_back_whole(moto_server, sales_on_moto):
    """Both parts of a multi-part checkpoint are needed (made here from delta-rs's own checkpoint, which delta-rs
    then reads: it writes single-file checkpoints only)."""
    s3, table, sales = sales_on_moto
    checkpoint = pq.ParquetFile(pa.BufferReader(read(s3, table, CHECKPOINT))).read(use_threads=False)
    parts = [LOG + f"{4:020d}.checkpoint.{n:010d}.{2:010d}.parquet" for n in (1, 2)]
    half = checkpoint.num_rows // 2
    for key, rows in zip(parts, (checkpoint.slice(0, half), checkpoint.slice(half)), strict=True):
        sink = io.BytesIO()
        pq.write_table(rows, sink)
        s3.put_object(Bucket=table, Key=key, Body=sink.getvalue())
    for _, version_id, _ in all_versions(s3, table, CHECKPOINT):
        s3.delete_object(Bucket=table, Key=CHECKPOINT, VersionId=version_id)  # gone for good
    s3.put_object(Bucket=table, Key=LAST_CHECKPOINT, Body=b'{"version":4,"size":%d,"parts":2}' % checkpoint.num_rows)
    delete_keys(s3, table, _live_keys(s3, table, LOG))

    report = amend(s3, table=f"s3://{table}/{ROOT}")
    assert report.summary()["remaining"] == 0, report.render()
    assert report.plan.tables[0]["checkpoint_parts"] == 2
    assert set(parts) <= {o.key for o in report.restore.outcomes}
    _assert_whole(moto_server, s3, table, sales)


def test_a_commit_that_does_not_decode_is_replaced_by_its_good_version(moto_server, sales_on_moto):
    s3, bucket, sales = sales_on_moto
    newest = sales.log_needed[-1]
    good = read(s3, bucket, newest)
    s3.put_object(Bucket=bucket, Key=newest, Body=b'{"commitInfo": trunc')
    report = amend(s3, table=f"s3://{bucket}/{ROOT}")
    damaged = [i for i in report.plan.items if i.status == "damaged"]
    assert [i.key for i in damaged] == [newest] and "does not decode" in damaged[0].reason
    assert read(s3, bucket, newest) == good
    _assert_whole(moto_server, s3, bucket, sales)


def test_last_checkpoint_comes_back_only_when_named(moto_server, sales_on_moto):
    s3, bucket, sales = sales_on_moto
    original = read(s3, bucket, LAST_CHECKPOINT)
    delete_keys(s3, bucket, [LAST_CHECKPOINT])
    assert amend(s3, table=f"s3://{bucket}/{ROOT}").summary()["restored"] == 0
    assert read(s3, bucket, LAST_CHECKPOINT) is None
    report = amend(s3, table=f"s3://{bucket}/{ROOT}", scan_options=ScanOptions(rollback_keys=[LAST_CHECKPOINT]))
    assert [o.key for o in report.restore.outcomes] == [LAST_CHECKPOINT]
    assert read(s3, bucket, LAST_CHECKPOINT) == original


def test_a_path_outside_the_table_root_is_refused_before_anything_is_written(sales_on_moto):
    s3, bucket, _ = sales_on_moto
    add = {"add": {"path": "../other/part-0.parquet", "partitionValues": {}, "size": 10, "modificationTime": 0,
                   "dataChange": True}}
    s3.put_object(Bucket=bucket, Key=LOG + f"{9:020d}.json", Body=json.dumps(add).encode())
    delete_keys(s3, bucket, _live_keys(s3, bucket, ROOT))
    before = all_versions(s3, bucket)
    with pytest.raises(MetadataError, match="outside the table root") as error:
        amend(s3, table=f"s3://{bucket}/{ROOT}")
    assert "'../other/part-0.parquet'" in str(error.value) and LOG + f"{9:020d}.json" in str(error.value)
    assert all_versions(s3, bucket) == before


def test_formats_registry_lists_delta():
    fmt = formats.get("delta")
    assert fmt.row_kinds == frozenset({"data_file"}) and "delta" in formats.names()
    with pytest.raises(ValueError, match="do not apply"):
        fmt.check_options({"snapshot_location": "x"})


@pytest.fixture
def sales_on_moto(moto_server):
    """A copy of the sales table on moto, for the tests whose subject does not depend on the server."""
    s3 = moto_server.client()
    source = _written(moto_server)
    bucket = new_bucket(s3)
    replay_bucket(s3, source.bucket, bucket)
    s3.put_object(Bucket=bucket, Key=OUTSIDE, Body=b"not ours")
    return s3, bucket, source


# unit tests: hand-made logs -----------------------------------------------------------------------

def test_deletion_vector_locations_follow_the_protocol():
    # The protocol's own example: prefix "ab", then the Z85 form of d2c639aa-8816-431a-aaf6-d3fe2512ff61.
    relative = DeletionVector("u", "ab^-aqEH.-t@S}K{vb[*k^", offset=4, cardinality=6)
    assert deletion_vector_path(relative) == ("ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin", False)
    assert deletion_vector_path(DeletionVector("u", "^-aqEH.-t@S}K{vb[*k^")) == (
        "deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin", False)
    absolute = DeletionVector("p", "s3://b/t/deletion_vector_x.bin")
    assert deletion_vector_path(absolute) == ("s3://b/t/deletion_vector_x.bin", True)
    assert deletion_vector_path(DeletionVector("i", "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L")) is None
    assert relative.unique_id == "uab^-aqEH.-t@S}K{vb[*k^@4"
    with pytest.raises(ValueError, match="storageType"):
        deletion_vector_path(DeletionVector("x", "abc"))


def test_log_replay_keeps_the_newest_logical_file():
    dv1, dv2 = DeletionVector("u", "a" * 20), DeletionVector("u", "b" * 20)
    live = LiveFiles(lambda path: path)
    live.apply(LogActions(adds=[FileAction("f1", 10), FileAction("f2", 20), FileAction("f3", 30)]))
    # f1 gets a deletion vector (remove without, add with); f2 is removed; a remove of a logical file that is
    # not live (f3 with a deletion vector it never had) changes nothing.
    live.apply(LogActions(adds=[FileAction("f1", 10, deletion_vector=dv1)],
                          removes=[FileAction("f1", 10), FileAction("f2", 20), FileAction("f3", 30, None, dv2)]))
    assert {path: add.dv_id for path, add in live.files.items()} == {"f1": dv1.unique_id, "f3": None}
    live.apply(LogActions(adds=[FileAction("f1", 10, deletion_vector=dv2)],
                          removes=[FileAction("f1", 10, deletion_vector=dv1)]))
    assert live.files["f1"].deletion_vector == dv2


def test_log_objects_that_do_not_decode_are_refused():
    for data in (b"", b"\n\n", b"not json\n", b"[1, 2]\n", b'{"add": {"size": 3}}\n', b"\xff\xfe"):
        with pytest.raises(MetadataError, match="not a valid Delta log object"):
            decode_actions_json("t/_delta_log/00000000000000000001.json", data)
    with pytest.raises(MetadataError, match="Parquet"):
        decode_checkpoint_parquet("t/_delta_log/00000000000000000001.checkpoint.parquet", b"PAR1 garbage PAR1")
    actions = decode_actions_json("k", b'{"commitInfo": {}}\n{"add": {"path": "a%20b", "size": 3, '
                                       b'"stats": "{\\"numRecords\\": 7}"}}\n{"remove": {"path": "c"}}\n')
    assert actions.adds == [FileAction("a%20b", 3, 7)] and actions.removes == [FileAction("c")]


_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class _Objects:
    """A hand-made bucket: key -> versions newest first (bytes, or None for a delete marker); a reader of it."""

    def __init__(self, bucket: str, objects: dict[str, list[bytes | None]]) -> None:
        self.bucket, self.objects = bucket, objects

    def inventory(self, prefix: str) -> Inventory:
        entries = []
        for key in sorted(self.objects):
            versions = self.objects[key]
            for n, body in enumerate(versions):
                entries.append(VersionEntry(key, f"{key}#{len(versions) - n}", body is None, n == 0,
                                            0 if body is None else len(body),
                                            _T0 + timedelta(seconds=len(versions) - n), ""))
        return Inventory.from_entries(self.bucket, prefix, entries)

    def read(self, key: str, version_id: str) -> bytes:
        versions = self.objects[key]
        body = versions[len(versions) - int(version_id.rsplit("#", 1)[1])]
        assert body is not None, "a delete marker was read"
        return body


def _lines(*actions: dict) -> bytes:
    return "\n".join(json.dumps(action) for action in actions).encode()


def _sidecar(paths: list[str]) -> bytes:
    adds = pa.array([{"path": p, "size": 100, "stats": json.dumps({"numRecords": 5})} for p in paths])
    sink = io.BytesIO()
    pq.write_table(pa.table({"add": adds}), sink)
    return sink.getvalue()


def test_v2_checkpoint_with_sidecars_deletion_vectors_and_absolute_paths():
    sidecar = _sidecar(["p=1/a.parquet", "p=1/b%2520c.parquet"])
    log = "t/_delta_log/"
    checkpoint = log + "00000000000000000002.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json"
    dv = {"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^", "offset": 1, "sizeInBytes": 40,
          "cardinality": 2}
    objects = _Objects("bkt", {
        **{log + f"{v:020d}.json": [None, b'{"commitInfo": {}}'] for v in range(3)},  # history, deleted
        checkpoint: [None, _lines({"checkpointMetadata": {"version": 2}},
                                  {"sidecar": {"path": "s1.parquet", "sizeInBytes": len(sidecar)}},
                                  {"add": {"path": "d.parquet", "size": 9, "deletionVector": dv}})],
        log + "_sidecars/s1.parquet": [None, sidecar],
        log + "00000000000000000003.json": [_lines(
            {"remove": {"path": "p=1/a.parquet"}},
            {"add": {"path": "s3://bkt/t/e%20f.parquet", "size": 4, "stats": '{"numRecords": 1}'}})],
        log + "_last_checkpoint": [None, b'{"version": 2, "v2Checkpoint": {"path": "' + checkpoint.encode() + b'"}}'],
    })
    result = DeltaLayout().needed(objects.inventory("t/"), objects)
    needed = {o.key: (o.kind, o.expected_size, o.row_count) for o in result.needed}
    assert needed == {
        checkpoint: ("checkpoint", None, None),
        log + "_sidecars/s1.parquet": ("checkpoint", len(sidecar), None),
        log + "00000000000000000003.json": ("log", None, None),
        "t/p=1/b%20c.parquet": ("data_file", 100, 5),  # decoded once: the key holds "%20"
        "t/d.parquet": ("data_file", 9, None),
        "t/e f.parquet": ("data_file", 4, 1),
        "t/ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin": ("deletion_vector", None, None),
    }
    assert {s.key for s in result.skipped} == {log + f"{v:020d}.json" for v in range(3)} | {log + "_last_checkpoint"}
    summary = result.tables[0]
    assert (summary["version"], summary["checkpoint_version"], summary["checkpoint_source"]) == (3, 2,
                                                                                                   "_last_checkpoint")
    assert summary["row_count"] is None  # d.parquet has no statistics: the total is unknown, not a guess
    assert summary["rows_deleted_by_deletion_vectors"] == 2 and summary["deletion_vector_files"] == 1
    with_history = DeltaLayout(include_history=True).needed(objects.inventory("t/"), objects)
    assert {log + f"{v:020d}.json" for v in range(3)} <= {o.key for o in with_history.needed}


def test_a_version_that_does_not_decode_is_a_bad_version_and_older_ones_are_read():
    log = "t/_delta_log/"
    good = _lines({"add": {"path": "a.parquet", "size": 3}})
    objects = _Objects("bkt", {log + "00000000000000000000.json": [b"garbage", good]})
    result = DeltaLayout().needed(objects.inventory("t/"), objects)
    commit = next(o for o in result.needed if o.kind == "log")
    assert commit.bad_versions == frozenset({f"{commit.key}#2"}) and "does not decode" in commit.damaged_reason
    assert [o.key for o in result.needed if o.kind == "data_file"] == ["t/a.parquet"]


@pytest.mark.parametrize("path", ["../other/a.parquet", "x/../../a.parquet", "/t/a.parquet", "a//b.parquet",
                                  "s3://another-bucket/t/a.parquet", "s3://bkt/other/a.parquet", "file:///t/a.parquet",
                                  "gs://bkt/t/a.parquet", "%2E%2E/other/a.parquet"])
def test_a_data_file_path_outside_the_root_is_refused(path):
    objects = _Objects("bkt", {"t/_delta_log/00000000000000000000.json": [_lines({"add": {"path": path, "size": 3}})]})
    with pytest.raises(MetadataError, match="outside the table root") as error:
        DeltaLayout().needed(objects.inventory("t/"), objects)
    assert repr(path) in str(error.value)


def test_absolute_paths_inside_the_root_are_the_same_files():
    log = "t/_delta_log/"
    objects = _Objects("bkt", {
        log + "00000000000000000000.json": [_lines({"add": {"path": "s3a://bkt/t/a%20b.parquet", "size": 3}},
                                                   {"add": {"path": "c.parquet", "size": 4}})],
        log + "00000000000000000001.json": [_lines({"remove": {"path": "a%20b.parquet"}},
                                                   {"remove": {"path": "s3://bkt/t/c.parquet"}},
                                                   {"add": {"path": "d.parquet", "size": 5}})],
    })
    result = DeltaLayout().needed(objects.inventory("t/"), objects)
    assert [o.key for o in result.needed if o.kind == "data_file"] == ["t/d.parquet"]


def test_a_deletion_vector_outside_the_root_is_refused():
    dv = {"storageType": "p", "pathOrInlineDv": "s3://bkt/other/deletion_vector_x.bin", "sizeInBytes": 1,
          "cardinality": 1}
    objects = _Objects("bkt", {"t/_delta_log/00000000000000000000.json": [
        _lines({"add": {"path": "a.parquet", "size": 3, "deletionVector": dv}})]})
    with pytest.raises(MetadataError, match="deletion vector path 's3://bkt/other/deletion_vector_x.bin'"):
        DeltaLayout().needed(objects.inventory("t/"), objects)


def test_an_unreadable_checkpoint_falls_back_to_an_older_one():
    log = "t/_delta_log/"

    def add(path: str) -> bytes:
        return _lines({"add": {"path": path, "size": 1}})

    objects = {
        log + "00000000000000000000.json": [add("a.parquet")],
        log + "00000000000000000001.json": [add("b.parquet")],
        log + "00000000000000000002.json": [add("c.parquet")],
        log + "00000000000000000003.json": [_lines({"remove": {"path": "a.parquet"}})],
        log + "00000000000000000001.checkpoint.parquet": [None, _sidecar(["a.parquet", "b.parquet"])],
        log + "00000000000000000002.checkpoint.parquet": [b"garbage"],  # live, and no version decodes
        log + "00000000000000000000.crc": [None, b'{"numFiles": 1}'],
        log + "00000000000000000003.crc": [None, b'{"numFiles": 2}'],
    }
    live_damaged = _Objects("bkt", objects)
    result = DeltaLayout().needed(live_damaged.inventory("t/"), live_damaged)
    needed = {o.key: o for o in result.needed}
    assert result.tables[0]["checkpoint_version"] == 1 and result.tables[0]["commits_replayed"] == 2
    assert sorted(k for k, o in needed.items() if o.kind == "data_file") == ["t/b.parquet", "t/c.parquet"]
    assert {log + "00000000000000000002.json", log + "00000000000000000003.json", log + "00000000000000000003.crc",
            log + "00000000000000000001.checkpoint.parquet"} <= set(needed)
    assert log + "00000000000000000000.crc" not in needed  # history
    # Readers would pick the damaged newest checkpoint: it is listed as needed, with its only version bad, so the
    # plan reports it (unrecoverable) instead of calling the table whole.
    damaged = needed[log + "00000000000000000002.checkpoint.parquet"]
    assert damaged.bad_versions and "does not decode" in damaged.damaged_reason
    assert any("checkpoint 2" in w and "unusable" in w for w in result.info["warnings"])
    # The same checkpoint deleted: left deleted, with the reason.
    deleted = _Objects("bkt", {**objects, log + "00000000000000000002.checkpoint.parquet": [None, b"garbage"]})
    result = DeltaLayout().needed(deleted.inventory("t/"), deleted)
    assert log + "00000000000000000002.checkpoint.parquet" not in {o.key for o in result.needed}
    assert "damaged checkpoint, left deleted" in next(
        s.reason for s in result.skipped if s.key == log + "00000000000000000002.checkpoint.parquet")
