"""An S3 Inventory report as the inventory: the table's versions read from files S3 wrote, not from a listing.

A bucket with billions of objects takes hours to list; S3 Inventory (``IncludedObjectVersions=All``) writes
every version and delete marker of the bucket daily or weekly, in Parquet, ORC or CSV files described by a
``manifest.json`` (``destination-prefix/source-bucket/config-ID/YYYY-MM-DDTHH-MMZ/manifest.json``)::

    {"sourceBucket": "…", "destinationBucket": "arn:aws:s3:::…", "version": "2016-11-30",
     "creationTimestamp": "1514944800000", "fileFormat": "Parquet" | "ORC" | "CSV",
     "fileSchema": "…", "files": [{"key": "…", "size": 56291, "MD5checksum": "…"}]}

``creationTimestamp`` (milliseconds since the epoch) is when S3 began scanning the bucket: the inventory is
that old, and eventually consistent besides (recent writes may be missing). A plan made from it is never
trusted as fresh: the restore re-checks every key with a listing before writing, and the plan says how old
the inventory was (``info["inventory"]``).

Column names: Parquet and ORC files use ``bucket, key, version_id, is_latest, is_delete_marker, size,
last_modified_date, e_tag, …``; CSV files (gzip'ed, no header) hold the fields ``fileSchema`` names, in its
order (``Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, …``), keys
URL-encoded (a space as ``+``).
"""

from __future__ import annotations

import concurrent.futures as futures
import gzip
import hashlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote_plus

import pyarrow as pa
import pyarrow.compute as pc

from airflow_fuse.documents import read_document
from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import SCHEMA, Inventory
from airflow_fuse.listing import sort_entries
from airflow_fuse.location import TableLocation, check_bucket_name
from airflow_fuse.plan import human_age
from airflow_fuse.s3 import explain
from airflow_fuse.times import isoformat

log = logging.getLogger(__name__)

__all__ = ["AGE_WARNING", "FORMATS", "Manifest", "load_inventory", "parse_manifest"]

FORMATS = ("Parquet", "ORC", "CSV")
# An inventory older than this is reported with a warning: S3 writes one daily or weekly.
AGE_WARNING = timedelta(hours=48)
# Inventory files read at once (each is held in memory while it is read).
READ_CONCURRENCY = 4

# The fields a versioned inventory must hold: the CSV name and the Parquet / ORC column of each.
_FIELDS = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag",
}
_VERSION_FIELDS = ("VersionId", "IsLatest", "IsDeleteMarker")
_NEEDED_OPTIONAL = ("Size", "LastModifiedDate", "ETag")
_SETUP = ("configure the inventory with IncludedObjectVersions=All (the console's 'Include all versions') "
          "and the optional fields Size, LastModifiedDate and ETag")


@dataclass(frozen=True)
class InventoryFile:
    key: str
    size: int | None
    md5: str | None


@dataclass(frozen=True)
class Manifest:
    """A ``manifest.json``, checked."""

    uri: str
    source_bucket: str
    destination_bucket: str
    created_at: datetime
    file_format: str
    fields: tuple[str, ...]  # the fileSchema's fields, as CSV names (Bucket, Key, VersionId, …)
    files: tuple[InventoryFile, ...]

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(timezone.utc)) - self.created_at


def _refused(uri: str, problem: str) -> BadInputError:
    return BadInputError(f"S3 Inventory manifest {uri} {problem}")


def _schema_fields(uri: str, file_format: str, schema: str) -> tuple[str, ...]:
    """The fileSchema's field names, as CSV names (``VersionId``), whatever the format's spelling."""
    by_column = {column: name for name, column in _FIELDS.items()}
    if file_format == "CSV":
        names = [part.strip() for part in schema.split(",") if part.strip()]
    elif file_format == "Parquet":  # message s3.inventory { required binary key (UTF8); optional boolean … }
        names = re.findall(r"(?:required|optional)\s+\w+\s+(\w+)", schema)
    else:  # ORC: struct<bucket:string,key:string,…>
        names = re.findall(r"(\w+):", schema)
    if not names:
        raise _refused(uri, f"has a fileSchema that names no field ({schema[:200]!r})")
    return tuple(by_column.get(name, name) for name in names)


def parse_manifest(data: bytes, uri: str) -> Manifest:
    """A manifest.json's bytes, checked: a versioned inventory in a format this reader knows."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refused(uri, f"is not JSON ({exc}): give the manifest.json S3 Inventory wrote") from None
    if not isinstance(document, dict):
        raise _refused(uri, "is not a JSON object: give the manifest.json S3 Inventory wrote")
    missing = [name for name in ("sourceBucket", "destinationBucket", "creationTimestamp", "fileFormat",
                                 "fileSchema", "files") if name not in document]
    if missing:
        raise _refused(uri, f"has no {', '.join(missing)}: give the manifest.json S3 Inventory wrote")
    file_format = str(document["fileFormat"])
    known = {name.lower(): name for name in FORMATS}
    if file_format.lower() not in known:
        raise _refused(uri, f"has fileFormat {file_format!r}: airflow-fuse reads {', '.join(FORMATS)} inventories")
    file_format = known[file_format.lower()]
    try:
        created = datetime.fromtimestamp(int(str(document["creationTimestamp"])) / 1000, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise _refused(uri, f"has creationTimestamp {document['creationTimestamp']!r}, not milliseconds since "
                            "the epoch") from None
    fields = _schema_fields(uri, file_format, str(document["fileSchema"]))
    if not set(_VERSION_FIELDS) <= set(fields):
        raise _refused(uri, "is not a versioned inventory: its files have no VersionId, IsLatest and "
                            f"IsDeleteMarker fields (it lists only current versions). {_SETUP}, then use the "
                            "next report")
    absent = [name for name in ("Key", *_NEEDED_OPTIONAL) if name not in fields]
    if absent:
        raise _refused(uri, f"lists no {', '.join(absent)}: airflow-fuse needs them to choose versions. {_SETUP}")
    destination = str(document["destinationBucket"])
    destination = destination.rsplit(":", 1)[-1] if destination.startswith("arn:") else destination
    files = []
    for entry in document["files"] if isinstance(document["files"], list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise _refused(uri, f"has a files entry without a key ({entry!r})")
        size = entry.get("size")
        files.append(InventoryFile(entry["key"], int(size) if isinstance(size, (int, str)) and str(size).isdigit()
                                   else None, entry.get("MD5checksum") or None))
    if not isinstance(document["files"], list):
        raise _refused(uri, "has files that are not a list")
    return Manifest(uri=uri, source_bucket=str(document["sourceBucket"]), destination_bucket=destination,
                    created_at=created, file_format=file_format, fields=fields, files=tuple(files))


# reading the files ------------------------------------------------------------------------------------

def _columns(table: pa.Table, fields: tuple[str, ...], file_format: str) -> dict[str, pa.ChunkedArray]:
    """The needed columns by CSV name."""
    if file_format == "CSV":
        return {name: table.column(name) for name in _FIELDS if name in fields}
    present = set(table.column_names)
    return {name: table.column(column) for name, column in _FIELDS.items() if column in present}


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(column.cast(pa.string()), "")


def _flag(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_boolean(column.type):
        return pc.fill_null(column, False)
    return pc.equal(pc.utf8_lower(_text(column)), "true")


def _to_entries(columns: dict[str, pa.ChunkedArray], prefix: str, *, url_encoded: bool) -> pa.Table:
    """An inventory file's columns as entries (SCHEMA), only the keys under ``prefix``."""
    keys = _text(columns["Key"])
    if url_encoded:
        encoded = pc.match_substring_regex(keys, r"[%+]")
        if pc.any(encoded).as_py():
            keys = pa.chunked_array([pa.array([unquote_plus(k) if e else k for k, e in
                                               zip(keys.to_pylist(), encoded.to_pylist(), strict=True)],
                                              pa.string())])
    inside = pc.starts_with(keys, prefix) if prefix else None
    version = _text(columns["VersionId"])
    version = pc.if_else(pc.equal(version, ""), "null", version)  # written before versioning: the null version
    size = columns["Size"]
    if not pa.types.is_integer(size.type):
        text = _text(size)
        size = pc.if_else(pc.equal(text, ""), "0", text).cast(pa.int64())
    size = pc.fill_null(size.cast(pa.int64()), 0)
    modified = columns["LastModifiedDate"]
    if not pa.types.is_timestamp(modified.type):
        modified = _text(modified).cast(pa.timestamp("ms", tz="UTC"))
    elif modified.type.tz is None:  # ORC's timestamp: UTC
        modified = modified.cast(pa.timestamp(modified.type.unit, tz="UTC"))
    if modified.null_count:
        raise BadInputError("an S3 Inventory file has entries without LastModifiedDate: it cannot order a key's "
                            "versions; use another report")
    etag = pc.utf8_trim(_text(columns["ETag"]), '"')
    table = pa.table({
        "key": keys, "version_id": version, "is_delete_marker": _flag(columns["IsDeleteMarker"]),
        "is_latest": _flag(columns["IsLatest"]), "size": size,
        "last_modified": modified.cast(pa.timestamp("us", tz="UTC")), "etag": etag,
    }, schema=SCHEMA)
    return table.filter(inside) if inside is not None else table


def _read_table(data: bytes, manifest: Manifest) -> pa.Table:
    if manifest.file_format == "Parquet":
        import pyarrow.parquet as pq

        columns = [c for c in _FIELDS.values() if c in pq.read_schema(io.BytesIO(data)).names]
        return pq.read_table(io.BytesIO(data), columns=columns)
    if manifest.file_format == "ORC":
        import pyarrow.orc as orc

        file = orc.ORCFile(io.BytesIO(data))
        return file.read(columns=[c for c in _FIELDS.values() if c in file.schema.names])
    import pyarrow.csv as csv

    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return csv.read_csv(
        io.BytesIO(raw),
        read_options=csv.ReadOptions(column_names=list(manifest.fields)),
        convert_options=csv.ConvertOptions(column_types={name: pa.string() for name in manifest.fields},
                                           include_columns=[n for n in _FIELDS if n in manifest.fields],
                                           strings_can_be_null=False),
    )


def _read_file(client: Any, manifest: Manifest, file: InventoryFile, prefix: str) -> pa.Table:
    where = f"s3://{manifest.destination_bucket}/{file.key}"
    try:
        data = client.get_object(Bucket=manifest.destination_bucket, Key=file.key)["Body"].read()
    except Exception as exc:
        raise BadInputError(f"cannot read S3 Inventory file {where} (listed in {manifest.uri}): " + str(explain(
            exc, bucket=manifest.destination_bucket, client=client, action="read", key=file.key,
            versioned=False))) from None
    if file.md5 and hashlib.md5(data, usedforsecurity=False).hexdigest() != file.md5.lower():
        raise BadInputError(f"S3 Inventory file {where} does not match the MD5 checksum in {manifest.uri}: it was "
                            "changed or damaged; use another report")
    try:
        table = _read_table(data, manifest)
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise BadInputError(f"cannot read S3 Inventory file {where} as {manifest.file_format}: {exc}") from None
    del data
    columns = _columns(table, manifest.fields, manifest.file_format)
    missing = [name for name in ("Key", *_VERSION_FIELDS, *_NEEDED_OPTIONAL) if name not in columns]
    if missing:
        raise BadInputError(f"S3 Inventory file {where} has no {', '.join(missing)} column: it is not the "
                            f"versioned inventory {manifest.uri} describes")
    return _to_entries(columns, prefix, url_encoded=manifest.file_format == "CSV")


def read_manifest(client: Any, uri: str) -> Manifest:
    """The manifest at ``uri`` (``s3://…/manifest.json`` or a local path), checked."""
    if not isinstance(uri, str) or not uri.strip():
        raise BadInputError("inventory_manifest is empty: give the s3://…/manifest.json of an S3 Inventory report")
    uri = uri.strip()
    try:
        data = read_document(uri, client=client, what="S3 Inventory manifest")
    except BadInputError as exc:
        raise BadInputError(f"{exc}. S3 Inventory writes it to destination-prefix/source-bucket/config-ID/"
                            "YYYY-MM-DDTHH-MMZ/manifest.json in the destination bucket") from None
    manifest = parse_manifest(data, uri)
    check_bucket_name(manifest.destination_bucket)
    return manifest


def load_inventory(client: Any, location: TableLocation, manifest_uri: str, *,
                   now: datetime | None = None) -> tuple[Inventory, dict[str, Any]]:
    """The table's entries from an S3 Inventory report, and what the plan says about it (``info["inventory"]``).

    Only the keys under the table's prefix are kept; each file is read, checked against its MD5 and filtered
    in turn (``READ_CONCURRENCY`` at once), then the entries are put in listing order.
    """
    started = time.monotonic()
    manifest = read_manifest(client, manifest_uri)
    if manifest.source_bucket != location.bucket:
        raise BadInputError(f"S3 Inventory manifest {manifest.uri} is an inventory of bucket "
                            f"{manifest.source_bucket!r}, not of {location.bucket!r} where the table "
                            f"{location.uri} is: give the manifest of {location.bucket}'s inventory")
    tables: list[pa.Table] = []
    with futures.ThreadPoolExecutor(READ_CONCURRENCY, thread_name_prefix="fuse-inventory") as pool:
        for table in pool.map(lambda f: _read_file(client, manifest, f, location.prefix), manifest.files):
            tables.append(table)
    entries = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    del tables
    # Files in any order, rows in any order: keys ascending, each key's entries current first, then newest.
    # A version and a marker of the same millisecond: the marker is taken as newer (a marker too many is
    # removed rather than one left on top of the version brought back; the restore re-checks anyway).
    entries = sort_entries(entries, markers_first=True)
    age = manifest.age(now)
    inventory = Inventory(location.bucket, location.prefix, entries, seconds=time.monotonic() - started,
                          listed_at=manifest.created_at)
    info: dict[str, Any] = {
        "source": "s3-inventory",
        "manifest": manifest.uri,
        "format": manifest.file_format,
        "files": len(manifest.files),
        "created_at": isoformat(manifest.created_at),
        "age_hours": round(age.total_seconds() / 3600, 2),
    }
    if age > AGE_WARNING:
        info["warning"] = (f"the S3 Inventory is {human_age(age)} old (created {isoformat(manifest.created_at)}): "
                           "keys deleted or written since are not in it; the restore re-checks every key it "
                           "writes, but what was lost since is not planned. Use a newer report, or scan "
                           "with a listing")
        log.warning("%s", info["warning"])
    log.info("Read %d entries of %s from the %s inventory %s (%d files, created %s, %s ago)", len(inventory),
             location.uri, manifest.file_format, manifest.uri, len(manifest.files),
             isoformat(manifest.created_at), human_age(age))
    return inventory, info
