"""Prefix-table restore: airflow-fuse ``amend`` against the bare boto3 loops a user would write instead.

    python -m bench.prefix_restore [--small 2000] [--large 20] [--large-mib 2] [--repeat 1]

Starts the embedded moto server on 127.0.0.1 (or, with ``--server ceph``, a throw-away Ceph RADOS
Gateway). For every measured run a fresh bucket (versioning Enabled) gets the same objects: ``--small``
objects of ~1 KiB and ``--large`` objects of ``--large-mib`` MiB under ``t/``, plus a sibling table
``t2/`` (some of it deleted too). Every ``t/`` key is then deleted by DeleteObjects without version ids
(delete markers). Compared side by side:

  (a) ``amend(client, table="s3://<bucket>/t/")``, strategy auto (marker removal)
  (b) boto3: list the versions once with the paginator, DeleteObjects of the latest delete markers in
      batches of 1000 (16 threads, like (a)'s default pool)
  (c) ``amend`` with strategy copy, max_workers=32
  (d) boto3: list once, then ThreadPoolExecutor(32) of copy_object(CopySource with VersionId) per key

Each run uses a fresh client with the same botocore Config. Requests are counted with botocore event
hooks for the baselines and taken from ``Report.summary()['requests']`` for ours. After each run every
``t/`` key must read back with the right sha256 (and the right version: the original one after marker
removal, a new one after a copy) and ``t2/`` must be untouched; otherwise the script exits 1.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from airflow_fuse.embedded import S3Server
from airflow_fuse.engine import AmendOptions, amend
from bench.common import HookCounter, finish, fmt_ops, reset_moto, sha, start_server, table

PREFIX = "t/"
SIBLING = "t2/"
TARGET_TIME_RATIO = 1.25
PREP_WORKERS = 32


@dataclass
class Dataset:
    objects: dict[str, bytes]  # the t/ table
    sibling: dict[str, bytes]  # t2/, shares the leading character of t/
    sibling_deleted: list[str]

    @classmethod
    def make(cls, small: int, large: int, large_mib: float) -> Dataset:
        objects = {f"{PREFIX}part={i % 16:02d}/s{i:06d}.parquet": os.urandom(1024 + i % 97) for i in range(small)}
        size = int(large_mib * 1024 * 1024)
        objects.update({f"{PREFIX}big/l{i:04d}.parquet": os.urandom(size) for i in range(large)})
        sibling = {f"{SIBLING}part=0/k{i:03d}.parquet": os.urandom(512) for i in range(10)}
        return cls(objects, sibling, sorted(sibling)[:4])

    @property
    def bytes(self) -> int:
        return sum(len(b) for b in self.objects.values())


@dataclass
class Prepared:
    bucket: str
    versions: dict[str, str]  # t/ key -> version id written
    sibling_before: list[tuple]
    seconds: float


@dataclass
class Run:
    label: str
    seconds: float
    requests: dict[str, int]
    http_sends: int
    list_seconds: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def all_versions(client: Any, bucket: str, prefix: str) -> list[tuple]:
    out = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out += [(v["Key"], v["VersionId"], False, v["ETag"], v["Size"]) for v in page.get("Versions", [])]
        out += [(m["Key"], m["VersionId"], True, "", 0) for m in page.get("DeleteMarkers", [])]
    return sorted(out)


def prepare(server: S3Server, bucket: str, data: Dataset) -> Prepared:
    started = time.monotonic()
    client = server.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    items = list({**data.objects, **data.sibling}.items())
    with ThreadPoolExecutor(PREP_WORKERS) as pool:
        ids = list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1])["VersionId"], items))
    versions = {k: v for (k, _), v in zip(items, ids, strict=True) if k in data.objects}
    doomed = sorted(data.objects) + data.sibling_deleted
    for i in range(0, len(doomed), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in doomed[i:i + 1000]],
                                                     "Quiet": True})
    sibling_before = all_versions(client, bucket, SIBLING)
    return Prepared(bucket, versions, sibling_before, time.monotonic() - started)


def verify(server: S3Server, prepared: Prepared, data: Dataset, *, mode: str) -> list[str]:
    """Problems found (empty when the table is whole and t2/ untouched)."""
    client = server.client()
    bucket = prepared.bucket

    def check(key: str) -> str | None:
        try:
            response = client.get_object(Bucket=bucket, Key=key)
            body = response["Body"].read()
        except Exception as exc:  # a missing key is a 404 here
            return f"{key}: not readable ({exc})"
        if sha(body) != sha(data.objects[key]):
            return f"{key}: wrong sha256"
        version = response.get("VersionId")
        if mode == "undelete" and version != prepared.versions[key]:
            return f"{key}: current version {version} is not the original {prepared.versions[key]}"
        if mode == "copy" and version == prepared.versions[key]:
            return f"{key}: current version is the original one; a copy was expected"
        return None

    with ThreadPoolExecutor(PREP_WORKERS) as pool:
        problems = [p for p in pool.map(check, sorted(data.objects)) if p]
    after = all_versions(client, bucket, SIBLING)
    if after != prepared.sibling_before:
        problems.append(f"{SIBLING} changed: {len(prepared.sibling_before)} entries before, {len(after)} after")
    return problems


# the four contenders ------------------------------------------------------------------------------

def ours(strategy: str, workers: int) -> Callable[[Any, str], Run]:
    def run(client: Any, bucket: str) -> Run:
        hooks = HookCounter().attach(client)
        started = time.monotonic()
        report = amend(client, table=f"s3://{bucket}/{PREFIX}",
                       options=AmendOptions(strategy=strategy, max_workers=workers))
        seconds = time.monotonic() - started
        hooks.detach(client)
        s = report.summary()
        # The report counts with airflow_fuse's RequestCounter; the hooks here count independently.
        lost = {op: n - s["requests"].get(op, 0) for op, n in hooks.calls.items() if n != s["requests"].get(op, 0)}
        relist = report.restore.relist_pages if report.restore else 0
        pages = hooks.durations.get("ListObjectVersions", [])
        relist_seconds = sum(pages[len(pages) - relist:]) if relist else 0.0  # the listing calls are sequential
        note = (f"results {s['results']}; listing pages {report.plan.listing_pages} (scan) + {relist} (re-check, "
                f"{relist_seconds:.1f} s, overlapping the writes)")
        if lost:
            note += f"; the report's request counts differ from the hooks' by {lost}"
        return Run(f"ours {strategy}", seconds, dict(s["requests"]), hooks.sends,
                   hooks.op_seconds.get("ListObjectVersions", 0.0), note,
                   {"remaining": s["remaining"], "failed": s["failed"], "relist_seconds": relist_seconds})
    return run


def _list_deleted(client: Any, bucket: str) -> tuple[dict[str, str], dict[str, str], int]:
    """One paginated listing: key -> latest delete marker id, key -> newest data version id; pages."""
    markers: dict[str, str] = {}
    newest: dict[str, tuple[Any, str]] = {}
    pages = 0
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=PREFIX):
        pages += 1
        for m in page.get("DeleteMarkers", []):
            if m["IsLatest"]:
                markers[m["Key"]] = m["VersionId"]
        for v in page.get("Versions", []):
            if v["Key"] not in newest or v["LastModified"] > newest[v["Key"]][0]:
                newest[v["Key"]] = (v["LastModified"], v["VersionId"])
    return markers, {k: v for k, (_, v) in newest.items()}, pages


def baseline_undelete(workers: int) -> Callable[[Any, str], Run]:
    def run(client: Any, bucket: str) -> Run:
        hooks = HookCounter().attach(client)
        started = time.monotonic()
        markers, _, pages = _list_deleted(client, bucket)
        entries = [{"Key": k, "VersionId": v} for k, v in sorted(markers.items())]
        batches = [entries[i:i + 1000] for i in range(0, len(entries), 1000)]

        def delete(batch: list[dict]) -> int:
            response = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            return len(response.get("Errors") or [])

        with ThreadPoolExecutor(workers) as pool:
            errors = sum(pool.map(delete, batches))
        seconds = time.monotonic() - started
        hooks.detach(client)
        return Run("boto3 undelete", seconds, dict(hooks.calls), hooks.sends,
                   hooks.op_seconds.get("ListObjectVersions", 0.0),
                   f"{len(markers)} markers in {len(batches)} batches; listing pages {pages}; errors {errors}",
                   {"pages": pages, "batches": len(batches), "keys": len(markers)})
    return run


def baseline_copy(workers: int) -> Callable[[Any, str], Run]:
    def run(client: Any, bucket: str) -> Run:
        hooks = HookCounter().attach(client)
        started = time.monotonic()
        markers, newest, pages = _list_deleted(client, bucket)
        todo = [(k, newest[k]) for k in sorted(markers) if k in newest]

        def copy(kv: tuple[str, str]) -> None:
            key, version = kv
            client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key, "VersionId": version})

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(copy, todo))
        seconds = time.monotonic() - started
        hooks.detach(client)
        return Run("boto3 copy x32", seconds, dict(hooks.calls), hooks.sends,
                   hooks.op_seconds.get("ListObjectVersions", 0.0),
                   f"{len(todo)} copies; listing pages {pages}", {"pages": pages, "keys": len(todo)})
    return run


# driver -------------------------------------------------------------------------------------------

PAIRS = [
    ("auto", "undelete", ours("auto", 16), baseline_undelete(16)),
    ("copy", "copy", ours("copy", 32), baseline_copy(32)),
]


def measure(server: S3Server, bucket: str, contender: Callable[[Any, str], Run], *, ours: bool = False) -> Run:
    # A fresh client, the same Config for every contender; ours parses timestamps as the CLI's and hook's do.
    client = server.client(fast_timestamps=ours)
    gc.collect()
    return contender(client, bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prefix_restore", description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="objects of ~1 KiB (default 2000)")
    parser.add_argument("--large", type=int, default=20, help="large objects (default 20)")
    parser.add_argument("--large-mib", type=float, default=2, help="size of a large object in MiB (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows the median (default 1)")
    parser.add_argument("--only", choices=[name for name, *_ in PAIRS], help="run one pair only")
    parser.add_argument("--in-process", action="store_true",
                        help="run moto in a thread of this process (shares the GIL with the client) instead of "
                             "a child process")
    parser.add_argument("--fast-listing", action="store_true",
                        help="replace moto's O(bucket) ListObjectVersions by an O(page) one (bench/moto_listing.py)")
    parser.add_argument("--server", choices=["moto", "ceph"], default="moto",
                        help="moto (default) or a throw-away Ceph RADOS Gateway (tests/servers/ceph.py; needs the "
                             "Ceph packages that .ci/setup installs with WITH_CEPH=1)")
    args = parser.parse_args(argv)

    script_started = time.monotonic()
    pairs = [p for p in PAIRS if args.only in (None, p[0])]
    data = Dataset.make(args.small, args.large, args.large_mib)
    print(f"dataset: {len(data.objects)} objects under {PREFIX} ({args.small} x ~1 KiB + {args.large} x "
          f"{args.large_mib:g} MiB = {data.bytes / 1024**2:.1f} MiB), all deleted; sibling {SIBLING} "
          f"{len(data.sibling)} objects ({len(data.sibling_deleted)} deleted)")
    if args.server == "ceph":
        from tests.servers.ceph import start_ceph

        server = start_ceph()
        print(f"Ceph RADOS Gateway on {server.endpoint_url}")
    else:
        server = start_server(in_process=args.in_process, fast_listing=args.fast_listing)
        print(f"moto on {server.endpoint_url} ({'in this process' if args.in_process else 'child process'}, "
              f"{'O(page) listing' if args.fast_listing else 'stock listing'})")
    runs: dict[str, list[Run]] = {}
    failures: list[str] = []
    try:
        # Warm-up, not measured: imports and first-call set-up of every contender on a 10-key table.
        tiny = Dataset.make(10, 0, 0)
        for i, (_name, _mode, mine, theirs) in enumerate(pairs):
            for j, contender in enumerate((mine, theirs)):
                measure(server, prepare(server, f"warm-up-{i}-{j}", tiny).bucket, contender, ours=j == 0)
        for rnd in range(args.repeat):
            for name, mode, mine, theirs in pairs:
                prepared = {side: prepare(server, f"bench-{rnd}-{name}-{side}", data) for side in ("ours", "base")}
                print(f"round {rnd + 1} {name}: prepared 2 buckets in "
                      f"{sum(p.seconds for p in prepared.values()):.1f} s", flush=True)
                order = [("ours", mine), ("base", theirs)]
                if rnd % 2:
                    order.reverse()
                for side, contender in order:
                    result = measure(server, prepared[side].bucket, contender, ours=side == "ours")
                    checked = time.monotonic()
                    problems = verify(server, prepared[side], data, mode=mode)
                    checked = time.monotonic() - checked
                    if result.extra.get("remaining") or result.extra.get("failed"):
                        problems.append(f"report says remaining {result.extra['remaining']}, "
                                        f"failed {result.extra['failed']}")
                    status = "OK" if not problems else f"FAILED ({len(problems)} problems)"
                    print(f"  {result.label:<15} {result.seconds:7.2f} s  {result.total:5d} requests  "
                          f"verify {status} ({checked:.0f} s)  [{result.note}]", flush=True)
                    failures += [f"{result.label} round {rnd + 1}: {p}" for p in problems[:10]]
                    runs.setdefault(f"{name}/{side}", []).append(result)
                if args.server == "moto":
                    reset_moto(server.endpoint_url)
    finally:
        server.stop()

    print()
    rows = []
    letters = iter("abcd" if len(pairs) == 2 else ("ab" if pairs[0][0] == "auto" else "cd"))
    for name, _mode, _, _ in pairs:
        for side in ("ours", "base"):
            rs = runs[f"{name}/{side}"]
            med = statistics.median(r.seconds for r in rs)
            last = rs[-1]
            in_listing = statistics.median(r.list_seconds for r in rs)
            rows.append([f"({next(letters)}) {last.label}", f"{med:.2f}", f"{in_listing:.2f}",
                         last.total, last.http_sends, fmt_ops(last.requests)])
    print(table(["contender", "seconds", "in listing", "requests", "http sends", "by operation"], rows))
    print()
    ok_targets = True
    for name, _mode, _, _ in pairs:
        mine, theirs = runs[f"{name}/ours"], runs[f"{name}/base"]
        t_ratio = statistics.median(r.seconds for r in mine) / statistics.median(r.seconds for r in theirs)
        r_ratio = mine[-1].total / theirs[-1].total
        b = theirs[-1].extra
        minimal = b["pages"] + (b.get("batches", 0)) + (b["keys"] if name == "copy" else 0)
        met = t_ratio <= TARGET_TIME_RATIO
        ok_targets &= met
        print(f"{name:>4}: ours/baseline time {t_ratio:.2f}x (target <= {TARGET_TIME_RATIO}x: "
              f"{'met' if met else 'MISSED'}), requests {mine[-1].total}/{theirs[-1].total} = {r_ratio:.2f}x; "
              f"minimal (listing pages + {'copies' if name == 'copy' else 'batches'}) = {minimal}, "
              f"ours makes {mine[-1].total - minimal:+d}")
    return finish(script_started, failures,
                  "every run verified: all keys back with the right sha256 and version; t2/ untouched")


if __name__ == "__main__":
    sys.exit(main())
