"""How fast an S3 Inventory report becomes the scan's inventory: N entries in a synthetic report, read back.

    python -m bench.s3_inventory_read --entries 1000000 --format Parquet

Writes a versioned report (every key one data version under one delete marker, plus as many keys outside the
table) in ``--files`` files to an embedded moto server, then times ``load_inventory`` (GETs, MD5 checks,
decoding, the prefix filter, the sort into listing order) and the RSS it adds.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import resource
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_fuse.embedded import start_moto
from airflow_fuse.location import parse_table_uri
from airflow_fuse.s3_inventory import load_inventory


def _rows(entries: int) -> pa.Table:
    keys = entries // 2
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    key = [f"{'t' if i % 2 else 'u'}/d{i % 97:02d}/part-{i:09d}.parquet" for i in range(keys)]
    return pa.table({
        "bucket": pa.array(["bench-inventory"] * (2 * keys)),
        "key": pa.array(key + key),
        "version_id": pa.array([f"v{i}" for i in range(keys)] + [f"m{i}" for i in range(keys)]),
        "is_latest": pa.array([False] * keys + [True] * keys),
        "is_delete_marker": pa.array([False] * keys + [True] * keys),
        "size": pa.array([4096] * keys + [None] * keys, pa.int64()),
        "last_modified_date": pa.array([base] * keys + [base + timedelta(days=1)] * keys,
                                       pa.timestamp("ms", tz="UTC")),
        "e_tag": pa.array(["0" * 32] * keys + [None] * keys),
    })


def _encode(table: pa.Table, fmt: str) -> bytes:
    sink = io.BytesIO()
    if fmt == "Parquet":
        pq.write_table(table, sink)
        return sink.getvalue()
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for row in table.to_pylist():
        writer.writerow(["" if v is None else ("true" if v is True else "false" if v is False else v)
                         for v in row.values()])
    return gzip.compress(text.getvalue().encode(), compresslevel=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--format", choices=("Parquet", "CSV"), default="Parquet")
    args = parser.parse_args()
    server = start_moto()
    s3 = server.client()
    s3.create_bucket(Bucket="bench-inventory")
    table = _rows(args.entries)
    files = []
    for i in range(args.files):
        data = _encode(table.slice(i * len(table) // args.files, len(table) // args.files), args.format)
        key = f"inventory/b/cfg/data/{i}.{'parquet' if args.format == 'Parquet' else 'csv.gz'}"
        s3.put_object(Bucket="bench-inventory", Key=key, Body=data)
        files.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    schema = ("Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"
              if args.format == "CSV" else "message s3.inventory { required binary bucket (UTF8); required binary "
              "key (UTF8); optional binary version_id (UTF8); optional boolean is_latest; optional boolean "
              "is_delete_marker; optional int64 size; optional int64 last_modified_date (TIMESTAMP_MILLIS); "
              "optional binary e_tag (UTF8);}")
    s3.put_object(Bucket="bench-inventory", Key="inventory/b/cfg/m/manifest.json", Body=json.dumps({
        "sourceBucket": "bench-inventory", "destinationBucket": "arn:aws:s3:::bench-inventory", "version": "2016-11-30",
        "creationTimestamp": str(int(time.time() * 1000)), "fileFormat": args.format, "fileSchema": schema,
        "files": files}).encode())
    del table
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu = time.monotonic(), time.process_time()
    inventory, _ = load_inventory(s3, parse_table_uri("s3://bench-inventory/t/"),
                                  "s3://bench-inventory/inventory/b/cfg/m/manifest.json")
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{args.format}: {args.entries:,} entries in the report ({args.files} files), {len(inventory):,} in the "
          f"table: {seconds:.1f} s wall, {cpu:.1f} s CPU, {args.entries / seconds:,.0f} report entries/s, "
          f"peak RSS +{(peak - rss) / 1024:.0f} MB")
    server.stop()


if __name__ == "__main__":
    main()
