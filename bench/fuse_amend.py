"""Fuse table restore: airflow-fuse ``amend`` against an emulation of Databend's ``SYSTEM$FUSE_AMEND``.

    python -m bench.fuse_amend [--blocks 2000] [--blocks-per-segment 1000] [--stock-listing]

Writes the same synthetic Databend table (bench/fuse_writer.py: real v4 snapshot and segment encoding,
Parquet blocks, bloom index files, ``_hs`` statistics, a previous snapshot, the hint file) into two fresh
versioned buckets on the embedded moto server, deletes every key under the table root in both
(DeleteObjects without version ids: delete markers), then restores one with each contender:

  ours      ``amend(client, table="s3://<bucket>/<table root>", scan_options=ScanOptions(table_format="fuse"))``
  Databend  the algorithm of SYSTEM$FUSE_AMEND (docs/format-facts.md): sequentially, for the
            current snapshot, each of its segments and each of their blocks: HEAD; when missing, one
            ListObjectVersions with Prefix=key, GET of the newest data version, PUT of it back; the snapshot
            and each segment are then read (GET) to find what they reference. Index files, ``_hs`` files,
            older snapshots and the hint are not its business.

Requests are counted with botocore event hooks (ours: ``Report.summary()['requests']``). Both results are
verified: every referenced block (and snapshot and segment) reads back with the sha256 that was written;
for ours also every bloom index and ``_hs`` file; the previous snapshot and the hint stay deleted. The keys
the Fuse layout planned must be exactly the keys the writer referenced. Exit 1 on any mismatch.

The moto server runs with an O(page) ListObjectVersions (bench/moto_listing.py) unless --stock-listing:
moto's own deep-copies the whole bucket on every call, which would make Databend's per-key LISTs cost
seconds each (unfair to Databend, and hours at 10,000 blocks).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from airflow_fuse.embedded import S3Server
from airflow_fuse.engine import ScanOptions, amend
from airflow_fuse.layouts.fuse_format import decode_segment, decode_snapshot
from bench.common import HookCounter, finish, fmt_ops, sha, start_server, table
from bench.fuse_writer import HINT, FuseTable, build_table, check_layout, delete_table_root, write_table

GOAL_REQUESTS = 50
GOAL_TIME = 10
WORKERS = 32


@dataclass
class Run:
    label: str
    seconds: float
    requests: dict[str, int]
    restored: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cpu: float = 0.0  # CPU seconds of this process (the client; the server runs in its own process)

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def prepare(server: S3Server, bucket: str, fuse: FuseTable) -> float:
    started = time.monotonic()
    client = server.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    write_table(client, bucket, fuse, workers=WORKERS)
    delete_table_root(client, bucket, fuse)
    return time.monotonic() - started


def run_ours(client: Any, bucket: str, fuse: FuseTable) -> Run:
    hooks = HookCounter().attach(client)
    started = time.monotonic()
    report = amend(client, table=f"s3://{bucket}/{fuse.table_root}", scan_options=ScanOptions(table_format="fuse"))
    seconds = time.monotonic() - started
    hooks.detach(client)
    s = report.summary()
    needed = {item.key for item in report.plan.items if item.status != "skipped"}
    skipped = sorted(item.key for item in report.plan.items if item.status == "skipped")
    relist = report.restore.relist_pages if report.restore else 0
    pages = hooks.durations.get("ListObjectVersions", [])
    relist_seconds = sum(pages[len(pages) - relist:]) if relist else 0.0  # the listing calls are sequential
    return Run("airflow-fuse amend", seconds, dict(s["requests"]), s["restored"],
               f"results {s['results']}; listing pages {report.plan.listing_pages} (scan) + {relist} (re-check, "
               f"{relist_seconds:.1f} s of {sum(pages):.1f} s listing, overlapping the writes); metadata reads "
               f"{report.plan.info.get('metadata_reads')}; skipped {len(skipped)}",
               {"needed": needed, "skipped": skipped, "remaining": s["remaining"], "failed": s["failed"],
                "tables": report.plan.tables, "relist_seconds": relist_seconds})


def run_databend(client: Any, bucket: str, fuse: FuseTable) -> Run:
    """SYSTEM$FUSE_AMEND's algorithm, one object at a time."""
    hooks = HookCounter().attach(client)
    root = fuse.bucket_root  # locations in metadata are relative to the storage root
    restored = 0
    ignored: list[str] = []

    def recover(key: str) -> None:
        nonlocal restored
        try:
            client.head_object(Bucket=bucket, Key=key)
            return
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise
        listing = client.list_object_versions(Bucket=bucket, Prefix=key)
        versions = [v for v in listing.get("Versions", []) if v["Key"] == key]
        if not versions:
            ignored.append(key)  # Databend ignores it silently
            return
        newest = max(versions, key=lambda v: v["LastModified"])
        body = client.get_object(Bucket=bucket, Key=key, VersionId=newest["VersionId"])["Body"].read()
        client.put_object(Bucket=bucket, Key=key, Body=body)
        restored += 1

    def read(key: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()

    started = time.monotonic()
    snapshot_key = root + fuse.snapshot_location  # Databend knows it from its meta service
    recover(snapshot_key)
    snapshot = decode_snapshot(snapshot_key, read(snapshot_key))
    for location, _version in snapshot.segments:
        segment_key = root + location
        recover(segment_key)
        for block in decode_segment(segment_key, read(segment_key)).blocks:
            recover(root + block.location)
    seconds = time.monotonic() - started
    hooks.detach(client)
    return Run("Databend FUSE_AMEND", seconds, dict(hooks.calls), restored,
               f"{restored} objects GET + PUT back, sequential; {len(ignored)} ignored", {"ignored": ignored})


def verify(server: S3Server, bucket: str, fuse: FuseTable, *, kinds: tuple[str, ...]) -> tuple[list[str], dict]:
    """Problems (empty when every referenced object of ``kinds`` reads back with its sha256), and for the
    other referenced kinds how many are still missing."""
    client = server.client()
    wanted = [key for kind in kinds for key in fuse.referenced[kind]]

    def check(key: str) -> str | None:
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            return f"{key}: not readable ({exc.response.get('Error', {}).get('Code')})"
        return None if sha(body) == sha(fuse.objects[key]) else f"{key}: wrong sha256"

    with ThreadPoolExecutor(WORKERS) as pool:
        problems = [p for p in pool.map(check, wanted) if p]
    # One listing for the rest: which keys are current (data) and which still deleted.
    current: dict[str, bool] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=fuse.table_root):
        for entry in page.get("Versions", []):
            if entry["IsLatest"]:
                current[entry["Key"]] = True
        for entry in page.get("DeleteMarkers", []):
            if entry["IsLatest"]:
                current[entry["Key"]] = False
    missing = {kind: sum(1 for key in fuse.referenced[kind] if not current.get(key))
               for kind in fuse.referenced if kind not in kinds}
    for key in (fuse.previous_snapshot_key, fuse.table_root + HINT):
        if key and current.get(key):
            problems.append(f"{key}: brought back, but the table does not reference it")
    return problems, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuse_amend", description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=2000, help="data blocks in the table (default 2000)")
    parser.add_argument("--blocks-per-segment", type=int, default=1000, help="(default 1000)")
    parser.add_argument("--stock-listing", action="store_true",
                        help="keep moto's O(bucket) ListObjectVersions (slow; small tables only)")
    args = parser.parse_args(argv)
    script_started = time.monotonic()
    fuse = build_table(blocks=args.blocks, blocks_per_segment=args.blocks_per_segment)
    under_root = sum(1 for k in fuse.objects if k.startswith(fuse.table_root))
    print(f"table {fuse.table_root}: {args.blocks} blocks in {len(fuse.referenced['segment'])} segments, "
          f"{fuse.row_count} rows; {under_root} keys under the table root "
          f"({len(fuse.referenced_keys())} referenced by the current snapshot), built in "
          f"{time.monotonic() - script_started:.1f} s")
    server = start_server(fast_listing=not args.stock_listing)
    print(f"moto on {server.endpoint_url} ({'stock' if args.stock_listing else 'O(page)'} ListObjectVersions)")
    failures: list[str] = []
    runs: dict[str, Run] = {}
    try:
        buckets = {"ours": "fuse-bench-ours", "databend": "fuse-bench-databend"}
        for bucket in buckets.values():
            took = prepare(server, bucket, fuse)
            print(f"prepared {bucket}: written and every key under the table root deleted in {took:.1f} s",
                  flush=True)
        for side, contender in (("ours", run_ours), ("databend", run_databend)):
            # A fresh client, the same Config for both; ours parses timestamps as the CLI's and hook's do.
            client = server.client(fast_timestamps=side == "ours")
            gc.collect()
            cpu = time.process_time()
            run = contender(client, buckets[side], fuse)
            run.cpu = time.process_time() - cpu
            runs[side] = run
            kinds = ("snapshot", "segment", "segment_stats", "block", "bloom_index") if side == "ours" \
                else ("snapshot", "segment", "block")
            checked = time.monotonic()
            problems, missing = verify(server, buckets[side], fuse, kinds=kinds)
            if side == "ours":
                problems += check_layout(run.extra["needed"], fuse)
                if run.extra["remaining"] or run.extra["failed"]:
                    problems.append(f"report: remaining {run.extra['remaining']}, failed {run.extra['failed']}")
            run.extra["missing"] = missing
            status = "OK" if not problems else f"FAILED ({len(problems)} problems)"
            left = ", ".join(f"{n} {k}" for k, n in missing.items() if n) or "nothing"
            print(f"  {run.label:<20} {run.seconds:8.2f} s {run.total:7d} requests; verify {status} "
                  f"({time.monotonic() - checked:.0f} s); referenced objects still missing: {left}  [{run.note}]",
                  flush=True)
            failures += [f"{run.label}: {p}" for p in problems[:20]]
    finally:
        server.stop()

    ours, theirs = runs["ours"], runs["databend"]
    print()
    print(table(["contender", "seconds", "client CPU s", "requests", "objects restored", "by operation"],
                [[r.label, f"{r.seconds:.2f}", f"{r.cpu:.1f}", r.total, r.restored, fmt_ops(r.requests)]
                 for r in (ours, theirs)]))
    request_ratio = theirs.total / ours.total
    time_ratio = theirs.seconds / ours.seconds
    print(f"\nDatabend/ours: requests {request_ratio:.0f}x fewer with ours (goal >= {GOAL_REQUESTS}x: "
          f"{'met' if request_ratio >= GOAL_REQUESTS else 'MISSED'}), time {time_ratio:.1f}x less with ours "
          f"(goal >= {GOAL_TIME}x: {'met' if time_ratio >= GOAL_TIME else 'MISSED'})")
    tables = ours.extra["tables"]
    if tables:
        t = tables[0]
        print(f"layout: snapshot {t['snapshot_key']} from {t['snapshot_source']}, {t['row_count']} rows, "
              f"{t['block_count']} blocks; planned exactly the {len(ours.extra['needed'])} referenced keys; "
              f"left deleted: {', '.join(ours.extra['skipped']) or 'none'} and the previous snapshot")
    return finish(script_started, failures, "both verified: every referenced block, segment and snapshot back "
                  "with its sha256 (ours also every bloom index and _hs file)")


if __name__ == "__main__":
    sys.exit(main())
