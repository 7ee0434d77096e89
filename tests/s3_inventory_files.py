"""S3 Inventory reports made from a real listing of a test server, written where and how AWS writes them.

The servers have no S3 Inventory: this lists the bucket with boto3's own paginator (not airflow-fuse's
listing) and writes what S3 would — data files in the destination bucket (Parquet, ORC, or CSV gzip'ed
without a header, keys URL-encoded) and ``destination-prefix/source-bucket/config-ID/YYYY-MM-DDTHH-MMZ/
manifest.json`` — with the rows shuffled and split over several files, as nothing promises their order.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa

CSV_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"
PARQUET_SCHEMA = ("message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary "
                  "version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; optional int64 "
                  "size; optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); "
                  "optional binary storage_class (UTF8);}")
ORC_SCHEMA = ("struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,"
              "size:bigint,last_modified_date:timestamp,e_tag:string,storage_class:string>")
CURRENT_ONLY = {
    "CSV": "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass",
    "Parquet": "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional int64 "
               "size; optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8);}",
    "ORC": "struct<bucket:string,key:string,size:bigint,last_modified_date:timestamp,e_tag:string>",
}


def inventory_rows(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Every version and delete marker of the bucket, as S3 Inventory's columns."""
    rows = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            rows.append({"bucket": bucket, "key": v["Key"], "version_id": v["VersionId"], "is_latest": v["IsLatest"],
                         "is_delete_marker": False, "size": v["Size"], "last_modified_date": v["LastModified"],
                         "e_tag": v["ETag"].strip('"'), "storage_class": v.get("StorageClass", "STANDARD")})
        for m in page.get("DeleteMarkers", []):
            rows.append({"bucket": bucket, "key": m["Key"], "version_id": m["VersionId"], "is_latest": m["IsLatest"],
                         "is_delete_marker": True, "size": None, "last_modified_date": m["LastModified"],
                         "e_tag": None, "storage_class": None})
    for row in rows:  # S3 Inventory keeps milliseconds
        t = row["last_modified_date"].astimezone(timezone.utc)
        row["last_modified_date"] = t.replace(microsecond=t.microsecond // 1000 * 1000)
    return rows


_ARROW = pa.schema([("bucket", pa.string()), ("key", pa.string()), ("version_id", pa.string()),
                    ("is_latest", pa.bool_()), ("is_delete_marker", pa.bool_()), ("size", pa.int64()),
                    ("last_modified_date", pa.timestamp("ms", tz="UTC")), ("e_tag", pa.string()),
                    ("storage_class", pa.string())])


def _encode(rows: list[dict[str, Any]], fmt: str, *, versions: bool) -> bytes:
    names = _ARROW.names if versions else ["bucket", "key", "size", "last_modified_date", "e_tag"]
    if fmt == "CSV":
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in rows:
            values = []
            for name in names + (["storage_class"] if not versions else []):
                value = row.get(name)
                if name == "key":
                    value = quote_plus(value, safe="/")
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                elif isinstance(value, datetime):
                    value = value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
                values.append("" if value is None else value)
            writer.writerow(values)
        return gzip.compress(out.getvalue().encode())
    schema = pa.schema([_ARROW.field(n) for n in names])
    table = pa.Table.from_pylist([{n: r[n] for n in names} for r in rows], schema=schema)
    sink = io.BytesIO()
    if fmt == "Parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, sink)
    else:
        import pyarrow.orc as orc

        # ORC's timestamp has no zone: S3 Inventory's is UTC.
        table = table.set_column(table.schema.get_field_index("last_modified_date"), "last_modified_date",
                                 table.column("last_modified_date").cast(pa.timestamp("ms")))
        orc.write_table(table, sink)
    return sink.getvalue()


def write_inventory(s3: Any, bucket: str, *, fmt: str = "Parquet", destination: str | None = None,
                    destination_prefix: str = "inventory", config_id: str = "fuse-versions", files: int = 3,
                    created: datetime | None = None, versions: bool = True, seed: int = 7,
                    rows: list[dict[str, Any]] | None = None) -> str:
    """Write an inventory of ``bucket`` (as listed now) and return its manifest's ``s3://`` URI."""
    destination = destination or bucket
    rows = list(inventory_rows(s3, bucket) if rows is None else rows)
    random.Random(seed).shuffle(rows)
    created = created or datetime.now(timezone.utc)
    stamp = created.strftime("%Y-%m-%dT%H-%MZ")
    base = f"{destination_prefix}/{bucket}/{config_id}"
    suffix = {"CSV": "csv.gz", "Parquet": "parquet", "ORC": "orc"}[fmt]
    listed = []
    parts = max(1, files)
    for i in range(parts):
        data = _encode(rows[i::parts], fmt, versions=versions)
        key = f"{base}/data/{uuid.uuid4()}.{suffix}"
        s3.put_object(Bucket=destination, Key=key, Body=data)
        listed.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    schema = {"CSV": CSV_SCHEMA, "Parquet": PARQUET_SCHEMA, "ORC": ORC_SCHEMA}[fmt] if versions else CURRENT_ONLY[fmt]
    manifest = {"sourceBucket": bucket, "destinationBucket": f"arn:aws:s3:::{destination}", "version": "2016-11-30",
                "creationTimestamp": str(int(created.timestamp() * 1000)), "fileFormat": fmt,
                "fileSchema": schema, "files": listed}
    key = f"{base}/{stamp}/manifest.json"
    body = json.dumps(manifest, indent=4).encode()
    s3.put_object(Bucket=destination, Key=key, Body=body)
    s3.put_object(Bucket=destination, Key=f"{base}/{stamp}/manifest.checksum", Body=hashlib.md5(body).hexdigest())
    return f"s3://{destination}/{key}"
