"""Iceberg tables written by the real writer (pyiceberg, SqlCatalog on SQLite, S3 FileIO on the test server),
and what the bucket held once each was written: the state a restore must bring back."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

from airflow_fuse.embedded import S3Server
from tests.helpers import delete_keys

WAREHOUSE = "lake"
NAMESPACE = "db"
CITIES = ["New York", "São Paulo", "Paris"]  # keys: city=New+York, city=S%C3%A3o+Paulo (never decoded)


def open_catalog(server: S3Server, bucket: str, sqlite_path: Path) -> SqlCatalog:
    catalog = SqlCatalog(
        "fuse_tests", uri=f"sqlite:///{sqlite_path}", warehouse=f"s3://{bucket}/{WAREHOUSE}",
        **{"s3.endpoint": server.endpoint_url, "s3.access-key-id": server.access_key,
           "s3.secret-access-key": server.secret_key, "s3.region": server.region})
    if (NAMESPACE,) not in catalog.list_namespaces():
        catalog.create_namespace(NAMESPACE)
    return catalog


def _rows(ids: list[int], cities: list[str] | None = None) -> pa.Table:
    cities = cities or [CITIES[i % len(CITIES)] for i in ids]
    return pa.table({"id": pa.array(ids, pa.int64()), "city": pa.array(cities, pa.string()),
                     "amount": pa.array([i * 1.5 for i in ids], pa.float64())})


def read_rows(catalog: SqlCatalog, name: str) -> pa.Table:
    """What a reader gets: the table scanned by pyiceberg, sorted by id."""
    return catalog.load_table(f"{NAMESPACE}.{name}").scan().to_arrow().sort_by("id")


def read_snapshots(catalog: SqlCatalog, name: str) -> dict[int, pa.Table]:
    """Time travel: each retained snapshot scanned by pyiceberg, sorted by id."""
    table = catalog.load_table(f"{NAMESPACE}.{name}")
    return {s.snapshot_id: table.scan(snapshot_id=s.snapshot_id).to_arrow().sort_by("id")
            for s in table.metadata.snapshots}


# the tables ---------------------------------------------------------------------------------------

@contextmanager
def _checksums_when_required() -> Iterator[None]:
    """pyarrow's S3 client (aws-sdk-cpp) sends UploadPart with a trailing checksum and no Content-Length
    unless told to compute checksums only when required; Ceph RGW refuses that (411 MissingContentLength).
    Set for pyiceberg's writes only: boto3 clients made elsewhere in the session keep their defaults."""
    names = ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "WHEN_REQUIRED"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _writer(func: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(func)
    def write(*args: Any, **kwargs: Any) -> None:
        with _checksums_when_required():
            func(*args, **kwargs)
    return write


@_writer

def write_appends(catalog: SqlCatalog, name: str = "appends") -> None:
    """Unpartitioned, three appends."""
    table = catalog.create_table(f"{NAMESPACE}.{name}", schema=_rows([0]).schema)
    for start in (0, 10, 20):
        table.append(_rows(list(range(start, start + 4))))


@_writer
def write_partitioned(catalog: SqlCatalog, name: str = "partitioned") -> None:
    """Identity-partitioned by city (values with a space and a non-ASCII letter), then a copy-on-write delete
    (rewrites a file) and an overwrite of one partition: older snapshots keep files the current one dropped."""
    table = catalog.create_table(f"{NAMESPACE}.{name}", schema=_rows([0]).schema)
    with table.update_spec() as spec:
        spec.add_identity("city")
    table.append(_rows(list(range(6))))
    table.append(_rows(list(range(6, 9))))
    table.delete(EqualTo("id", 3))
    table.overwrite(_rows([100, 101], ["Paris", "Paris"]), overwrite_filter=EqualTo("city", "Paris"))


@_writer
def write_expired(catalog: SqlCatalog, s3: Any, bucket: str, name: str = "expired") -> None:
    """Appends and an overwrite, then snapshot expiry as Java's ExpireSnapshots does it: pyiceberg edits the
    metadata (it deletes no file), then every file no retained snapshot reaches is deleted. The overwrite's
    delete snapshot is retained: its manifest holds DELETED entries (tombstones) of files expiry deleted. The
    writer itself deletes older metadata files (previous-versions-max=1)."""
    table = catalog.create_table(f"{NAMESPACE}.{name}", schema=_rows([0]).schema, properties={
        "write.metadata.delete-after-commit.enabled": "true", "write.metadata.previous-versions-max": "1"})
    table.append(_rows([1, 2, 3]))
    table.append(_rows([4, 5]))
    table.overwrite(_rows([7, 8, 9]))
    table.append(_rows([10]))
    table = catalog.load_table(f"{NAMESPACE}.{name}")
    history = [entry.snapshot_id for entry in table.history()]
    table.maintenance.expire_snapshots().by_ids(history[:-3]).commit()  # keeps delete, append, append
    table = catalog.load_table(f"{NAMESPACE}.{name}")
    keep = reachable_keys(table, bucket)
    root = table_root(table)
    live = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root)
            for o in page.get("Contents", [])]
    garbage = [k for k in live if k not in keep and not k.endswith(".metadata.json")]
    assert any("/data/" in k for k in garbage), "expiry deleted no data file: the fixture tests nothing"
    delete_keys(s3, bucket, garbage)


def table_root(table: Any) -> str:
    """``lake/db/t/`` for a table at ``s3://bucket/lake/db/t``."""
    return table.metadata.location.split("://", 1)[1].split("/", 1)[1].rstrip("/") + "/"


def _key(path: str) -> str:
    return path.split("://", 1)[1].split("/", 1)[1]


def reachable_keys(table: Any, bucket: str, *, current_only: bool = False) -> set[str]:  # noqa: ARG001
    """Every key the table's retained snapshots (or its current one) reach, by pyiceberg's own readers, and the
    current metadata file and statistics files."""
    keys = {_key(table.metadata_location)}
    snapshots = [table.current_snapshot()] if current_only else table.metadata.snapshots
    for snapshot in snapshots:
        keys.add(_key(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            keys.add(_key(manifest.manifest_path))
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                keys.add(_key(entry.data_file.file_path))
    for stats in [*table.metadata.statistics, *table.metadata.partition_statistics]:
        keys.add(_key(stats.statistics_path))
    return keys


# the bucket's state -------------------------------------------------------------------------------

@dataclass
class TableState:
    """A table as written: its keys and rows, to compare a restore with."""

    name: str
    root: str
    metadata_key: str
    live: dict[str, bytes]  # every live key under the root and its bytes
    etags: dict[str, str]
    deleted: set[str]  # keys under the root whose current entry is a delete marker (the writer's housekeeping)
    rows: pa.Table
    snapshot_rows: dict[int, pa.Table] = field(default_factory=dict)  # each retained snapshot's rows
    metadata_log: list[str] = field(default_factory=list)  # keys of the older metadata files it lists

    @property
    def older_metadata(self) -> set[str]:
        """Live metadata files other than the current one: not needed to read the table."""
        return {k for k in self.live if k.endswith(".metadata.json") and k != self.metadata_key}

    def data_keys(self) -> list[str]:
        return sorted(k for k in self.live if k.startswith(self.root + "data/"))


def _listing(s3: Any, bucket: str, prefix: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(key -> its current entry with ``IsDeleteMarker``, every version holding data), from one listing."""
    current: dict[str, dict[str, Any]] = {}
    versions: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        versions += page.get("Versions", [])
        for entry, marker in [(v, False) for v in page.get("Versions", [])] + \
                             [(m, True) for m in page.get("DeleteMarkers", [])]:
            if entry["IsLatest"]:
                current[entry["Key"]] = {**entry, "IsDeleteMarker": marker}
    return current, versions


def current_entries(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """key -> its current entry (``IsDeleteMarker``, ``ETag``, ``VersionId``)."""
    return _listing(s3, bucket, prefix)[0]


def _get(s3: Any, bucket: str, keys: list[str]) -> dict[str, bytes]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = pool.map(lambda key: s3.get_object(Bucket=bucket, Key=key)["Body"].read(), keys)
        return dict(zip(keys, bodies, strict=True))


def live_bytes(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every live key under ``prefix`` and its bytes."""
    return _get(s3, bucket, [k for k, e in current_entries(s3, bucket, prefix).items() if not e["IsDeleteMarker"]])


def record_state(catalog: SqlCatalog, s3: Any, bucket: str, name: str) -> TableState:
    table = catalog.load_table(f"{NAMESPACE}.{name}")
    root = table_root(table)
    entries = current_entries(s3, bucket, root)
    return TableState(
        name=name, root=root, metadata_key=_key(table.metadata_location),
        live=live_bytes(s3, bucket, root),
        etags={k: e["ETag"] for k, e in entries.items() if not e["IsDeleteMarker"]},
        deleted={k for k, e in entries.items() if e["IsDeleteMarker"]},
        rows=read_rows(catalog, name),
        snapshot_rows=read_snapshots(catalog, name),
        metadata_log=[_key(e.metadata_file) for e in table.metadata.metadata_log],
    )


def reset(s3: Any, bucket: str, state: TableState) -> None:
    """Put the table back as written (a test before may have left it broken): copy each key's recorded
    version back where its current entry holds other bytes; re-delete keys the writer had deleted."""
    entries, versions = _listing(s3, bucket, state.root)
    recorded = {v["Key"]: v["VersionId"] for v in versions if v["ETag"] == state.etags.get(v["Key"])}
    changed = [k for k, etag in state.etags.items() if k not in entries or entries[k]["IsDeleteMarker"]
               or entries[k]["ETag"] != etag]
    # A server-side copy may have another ETag than a multipart upload of the same bytes: compare bytes.
    live = _get(s3, bucket, [k for k in changed if k in entries and not entries[k]["IsDeleteMarker"]])
    for key in changed:
        if live.get(key) != state.live[key]:
            source = {"Bucket": bucket, "Key": key, "VersionId": recorded[key]}
            s3.copy_object(Bucket=bucket, Key=key, CopySource=source)
    revived = [k for k in state.deleted if not entries.get(k, {"IsDeleteMarker": True})["IsDeleteMarker"]]
    delete_keys(s3, bucket, revived)


def metadata_json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
