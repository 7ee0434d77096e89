"""Delta tables written by the real writer (deltalake, i.e. delta-rs) into a test bucket, and read back by it.

``write_sales`` writes one table through a history a user's table goes through: a partitioned create (one
partition value has a space), appends, a delete, a compaction, a checkpoint, an overwrite of one partition and
a vacuum that deletes the files retired by all of that. ``replay_bucket`` copies a bucket's whole history
(every version and delete marker of every key, in order per key) into another bucket, so each test breaks its
own copy of a table written once per server.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from airflow_fuse.embedded import S3Server
from airflow_fuse.inventory import KeyHistory, iter_histories
from airflow_fuse.listing import iter_object_versions


def storage_options(server: S3Server) -> dict[str, str]:
    """delta-rs storage options for a local test server (plain HTTP, no conditional-put lock needed)."""
    return {
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": server.region,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


def open_table(server: S3Server, uri: str, **kwargs: Any) -> DeltaTable:
    return DeltaTable(uri, storage_options=storage_options(server), **kwargs)


def _plain(table: pa.Table) -> pa.Table:
    """View types (DataFusion returns string_view) as their plain types: pyarrow sorts and compares those."""
    columns = []
    for column in table.columns:
        if pa.types.is_string_view(column.type):
            column = column.cast(pa.string())
        elif pa.types.is_binary_view(column.type):
            column = column.cast(pa.binary())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def rows_of(table: DeltaTable) -> pa.Table:
    """Every row of the table's version as deltalake reads it (its DataFusion scan, not pyarrow's dataset
    reader), columns by name and rows sorted: two reads of the same data compare equal."""
    data = _plain(pa.table(table.scan()))
    data = data.select(sorted(data.column_names))
    return data.sort_by([(name, "ascending") for name in data.column_names])


def read_table(server: S3Server, uri: str) -> pa.Table:
    return rows_of(open_table(server, uri))


def _rows(ids: list[int], cities: list[str]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "city": pa.array(cities, pa.string()),
                     "amount": pa.array([i * 1.5 for i in ids], pa.float64())})


def write_sales(server: S3Server, bucket: str, root: str) -> None:
    """The standard table at ``s3://bucket/root``: versions 0-8, a checkpoint at 4, vacuumed files."""
    uri = f"s3://{bucket}/{root}"
    options = storage_options(server)

    def write(ids: list[int], cities: list[str], **kwargs: Any) -> None:
        write_deltalake(uri, _rows(ids, cities), partition_by=["city"], storage_options=options, **kwargs)

    write([1, 2, 3], ["New York", "Paris", "New York"])  # v0; the key holds "city=New%20York"
    write([4, 5], ["Oslo", "Paris"], mode="append")  # v1
    write([6, 7], ["Oslo", "Paris"], mode="append")  # v2
    open_table(server, uri).delete("id = 2")  # v3: retires the first Paris file
    open_table(server, uri).optimize.compact()  # v4: one file each for Oslo and Paris
    open_table(server, uri).create_checkpoint()  # 4.checkpoint.parquet and _last_checkpoint
    write([8], ["New York"], mode="append")  # v5
    write([9], ["Oslo"], mode="overwrite", predicate="city = 'Oslo'")  # v6: replaces the Oslo partition
    # v7, v8: vacuum start and end; deletes every retired file (delta-rs 1.6 needs full=True for that)
    vacuumed = open_table(server, uri).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False,
                                              full=True)
    assert vacuumed, "the vacuum deleted nothing: the table would not show that vacuumed files stay deleted"


def write_small(server: S3Server, bucket: str, root: str, ids: list[int]) -> None:
    """A tiny unpartitioned table: one append per id."""
    uri = f"s3://{bucket}/{root}"
    for i in ids:
        write_deltalake(uri, _rows([i], ["X"]), mode="append", storage_options=storage_options(server))


def replay_bucket(s3: Any, source: str, target: str) -> None:
    """Make ``target`` hold ``source``'s history: per key, its versions (same bytes) and delete markers, oldest
    first (the listing's order, as the scan reads it). Keys are independent: replayed 8 at a time."""

    def replay(history: KeyHistory) -> None:
        for entry in reversed(history.entries):
            if entry.is_delete_marker:
                s3.delete_object(Bucket=target, Key=entry.key)
            else:
                body = s3.get_object(Bucket=source, Key=entry.key, VersionId=entry.version_id)["Body"].read()
                s3.put_object(Bucket=target, Key=entry.key, Body=body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(replay, iter_histories(iter_object_versions(s3, source, ""))))
