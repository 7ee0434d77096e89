"""Prefix-table restore: airflow-fuse ``amend`` against the bare boto3 loops a user would write instead.

    python -m bench.prefix_restore [--small 2000] [--large 20] [--large-mib 2] [--repeat 1] [--plot DIR]
                                   [--peers s3-pit-restore,rclone | --peers none]

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

and the peers, when installed (a missing one is skipped with a note), each restoring the table as it was at a
point in time between the writes and the delete, by copying that version on top of the marker:

  (e) s3-pit-restore (PyPI), its CLI: ``-b B -B B -p t/ -t <time> --max-workers 32``, endpoint by
      ``AWS_ENDPOINT_URL``; requests counted by botocore hooks registered on its default session
  (f) rclone (Debian package), ``rclone copy SRC:B/t DST:B/t`` where SRC has ``version_at=<time>``,
      ``--server-side-across-configs --transfers 32 --checkers 32``; requests counted from ``--dump headers``

A peer is verified like the others (bytes back, a new version); one that fails is reported and not counted.

Each run uses a fresh client with the same botocore Config. Requests are counted with botocore event
hooks for the baselines and taken from ``Report.summary()['requests']`` for ours. After each run every
``t/`` key must read back with the right sha256 (and the right version: the original one after marker
removal, a new one after a copy) and ``t2/`` must be untouched; otherwise the script exits 1.
``--plot DIR`` draws the medians (bench/plots.py) into ``DIR/bench-prefix-restore-<server>.png``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
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
    point_in_time: datetime.datetime | None = None  # after the writes, before the delete (for the peers)


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


def prepare(server: S3Server, bucket: str, data: Dataset, *, point_in_time: bool = False) -> Prepared:
    """A fresh versioned bucket with the data, then t/ and part of t2/ deleted. ``point_in_time``: also note a
    time between the writes and the delete, a second clear of both (servers keep LastModified to the second)."""
    started = time.monotonic()
    client = server.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    items = list({**data.objects, **data.sibling}.items())
    with ThreadPoolExecutor(PREP_WORKERS) as pool:
        ids = list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1])["VersionId"], items))
    versions = {k: v for (k, _), v in zip(items, ids, strict=True) if k in data.objects}
    moment = None
    if point_in_time:
        time.sleep(1.1)
        moment = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(1.1)
    doomed = sorted(data.objects) + data.sibling_deleted
    for i in range(0, len(doomed), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in doomed[i:i + 1000]],
                                                     "Quiet": True})
    sibling_before = all_versions(client, bucket, SIBLING)
    return Prepared(bucket, versions, sibling_before, time.monotonic() - started, moment)


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


# the peers: other tools' CLIs, run as a user would ---------------------------------------------------

class PeerFailed(Exception):
    """The peer did not restore the table (a non-zero exit, errors it printed); not counted as a result."""


# s3-pit-restore's own script, run unchanged; this only registers botocore hooks on boto3's default session (the
# one its ``boto3.client('s3')`` comes from) and prints the counts at exit.
_PIT_RESTORE = """
import atexit, json, runpy, sys, threading
import boto3

boto3.setup_default_session()
counts, sends, lock = {}, [0], threading.Lock()

def call(event_name="", **_):
    with lock:
        op = event_name.rsplit(".", 1)[-1]
        counts[op] = counts.get(op, 0) + 1

def send(**_):
    with lock:
        sends[0] += 1

boto3.DEFAULT_SESSION.events.register("before-call.s3", call)
boto3.DEFAULT_SESSION.events.register("before-send.s3", send)
atexit.register(lambda: print("BENCH-REQUESTS " + json.dumps({"calls": counts, "sends": sends[0]}),
                              file=sys.stderr, flush=True))
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def _pit_restore_script() -> str | None:
    found = shutil.which("s3-pit-restore", path=os.path.dirname(sys.executable)) or shutil.which("s3-pit-restore")
    return found


def _clean_env() -> dict[str, str]:
    """This process's environment without AWS settings that would point a peer elsewhere (profile, CA bundle:
    rclone's SDK refuses a CA bundle on its own transport)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}


def _startup_seconds(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of starting the peer and exiting at once (``--help``/``version``): its process start and imports."""
    started = time.monotonic()
    subprocess.run(argv, env=env, capture_output=True, check=False, timeout=120)
    return time.monotonic() - started


def pit_restore(workers: int) -> Callable[[S3Server, Prepared], Run]:
    def run(server: S3Server, prepared: Prepared) -> Run:
        script = _pit_restore_script()
        assert script is not None and prepared.point_in_time is not None
        env = _clean_env() | {"AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": server.access_key,
                              "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_DEFAULT_REGION": server.region}
        wrapper = [sys.executable, "-c", _PIT_RESTORE, script]
        argv = wrapper + ["-b", prepared.bucket, "-B", prepared.bucket, "-p", PREFIX,
                          "-t", prepared.point_in_time.isoformat(), "--max-workers", str(workers)]
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=3600)
        seconds = time.monotonic() - started
        counted = [line for line in done.stderr.splitlines() if line.startswith("BENCH-REQUESTS ")]
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        if done.returncode != 0 or errors or not counted:
            raise PeerFailed(f"exit {done.returncode}, {len(errors)} errors; stderr: {done.stderr[-600:]!r}")
        requests = json.loads(counted[-1].split(" ", 1)[1])
        startup = _startup_seconds(wrapper + ["--help"], env)
        restored = len(done.stdout.splitlines())
        return Run("s3-pit-restore", seconds, dict(requests["calls"]), requests["sends"],
                   0.0, f"{restored} keys printed as restored; its process start + imports ~{startup:.2f} s",
                   {"startup": startup, "kind": "peer"})
    return run


# One request as rclone's --dump headers logs it: the request line and its headers, up to the next log line.
_DUMPED = re.compile(r"DEBUG : (GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.1\n(.*?)(?=^\d{4}/\d\d/\d\d |\Z)",
                     re.DOTALL | re.MULTILINE)


def rclone_requests(log: str) -> dict[str, int]:
    """S3 operations in an rclone ``--dump headers`` log, by name."""
    ops: dict[str, int] = {}
    for method, target, headers in _DUMPED.findall(log):
        path, _, query = target.partition("?")
        key = path.lstrip("/").partition("/")[2]
        if method == "GET" and not key:
            op = "ListObjectVersions" if re.search(r"(^|&)versions(=|&|$)", query) else \
                "ListObjectsV2" if "list-type=2" in query else "ListObjects"
        elif method == "PUT" and key:
            op = "CopyObject" if re.search(r"^x-amz-copy-source:", headers, re.I | re.M) else "PutObject"
        else:
            op = {"GET": "GetObject", "HEAD": "HeadObject" if key else "HeadBucket", "PUT": "CreateBucket",
                  "DELETE": "DeleteObject", "POST": "DeleteObjects"}[method]
        ops[op] = ops.get(op, 0) + 1
    return ops


def rclone(workers: int, fast_list: bool = True) -> Callable[[S3Server, Prepared], Run]:
    """``fast_list``: one recursive listing of each side (rclone's advice for buckets) instead of one listing per
    directory."""
    def run(server: S3Server, prepared: Prepared) -> Run:
        assert prepared.point_in_time is not None
        env = _clean_env()
        for name in ("SRC", "DST"):  # the same server twice: SRC reads the past, DST is the live table
            env.update({f"RCLONE_CONFIG_{name}_{k}": v for k, v in {
                "TYPE": "s3", "PROVIDER": "Other", "ENDPOINT": server.endpoint_url, "REGION": server.region,
                "ACCESS_KEY_ID": server.access_key, "SECRET_ACCESS_KEY": server.secret_key,
                "FORCE_PATH_STYLE": "true", "NO_CHECK_BUCKET": "true"}.items()})
        env["RCLONE_CONFIG_SRC_VERSION_AT"] = prepared.point_in_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        root = PREFIX.rstrip("/")
        argv = ["rclone", "copy", f"SRC:{prepared.bucket}/{root}", f"DST:{prepared.bucket}/{root}",
                "--server-side-across-configs", "--transfers", str(workers), "--checkers", str(workers),
                "--dump", "headers"] + (["--fast-list"] if fast_list else [])
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=3600)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise PeerFailed(f"exit {done.returncode}; log: {done.stderr[-600:]!r}")
        requests = rclone_requests(done.stderr)
        copied = done.stderr.count("Copied (server-side copy)")
        startup = _startup_seconds(["rclone", "version"], env)
        return Run("rclone", seconds, requests, sum(requests.values()), 0.0,
                   f"{copied} keys copied server-side; its process start ~{startup:.2f} s; requests from its "
                   f"--dump headers log (which costs it a little time)", {"startup": startup, "kind": "peer"})
    return run


PEERS: dict[str, tuple[Callable[[], bool], Callable[[S3Server, Prepared], Run]]] = {
    "s3-pit-restore": (lambda: _pit_restore_script() is not None, pit_restore(32)),
    "rclone": (lambda: shutil.which("rclone") is not None, rclone(32)),
}


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


def _peers_available(wanted: list[str]) -> list[str]:
    available = []
    for name in wanted:
        if PEERS[name][0]():
            available.append(name)
        else:
            how = "pip install s3-pit-restore==0.9 (the bench extra)" if name == "s3-pit-restore" else \
                "apt-get install rclone"
            print(f"note: peer {name} is not installed; skipped ({how})")
    return available


def _run_peer(server: S3Server, name: str, prepared: Prepared, data: Dataset) -> tuple[Run | None, str]:
    """The peer's run if it restored the table (verified like the others), else None and why."""
    try:
        result = PEERS[name][1](server, prepared)
    except PeerFailed as exc:
        return None, str(exc)
    problems = verify(server, prepared, data, mode="copy")
    if problems:
        return None, f"exit 0 but the table is not whole: {len(problems)} problems, e.g. {problems[:3]}"
    return result, ""


def _label(server: str, fast_listing: bool) -> tuple[str, str]:
    """(file name part, title part) for the server measured."""
    if server == "ceph":
        return "ceph", "Ceph RADOS Gateway"
    return ("moto-fast-listing", "moto, O(page) listing") if fast_listing else ("moto", "moto, stock listing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prefix_restore", description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="objects of ~1 KiB (default 2000)")
    parser.add_argument("--large", type=int, default=20, help="large objects (default 20)")
    parser.add_argument("--large-mib", type=float, default=2, help="size of a large object in MiB (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows the median (default 1)")
    parser.add_argument("--only", choices=[name for name, *_ in PAIRS], help="run one pair only")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated peers to run when installed, or 'none' (default {','.join(PEERS)})")
    parser.add_argument("--plot", metavar="DIR", help="draw the medians into DIR/bench-prefix-restore-<server>.png")
    parser.add_argument("--in-process", action="store_true",
                        help="run moto in a thread of this process (shares the GIL with the client) instead of "
                             "a child process")
    parser.add_argument("--fast-listing", action="store_true",
                        help="replace moto's O(bucket) ListObjectVersions by an O(page) one (bench/moto_listing.py)")
    parser.add_argument("--server", choices=["moto", "ceph"], default="moto",
                        help="moto (default) or a throw-away Ceph RADOS Gateway (tests/servers/ceph.py; needs the "
                             "Ceph packages that .ci/setup installs with WITH_CEPH=1)")
    args = parser.parse_args(argv)
    wanted = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")

    script_started = time.monotonic()
    pairs = [p for p in PAIRS if args.only in (None, p[0])]
    peers = _peers_available(wanted)
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
    peer_failures: list[str] = []
    try:
        # Warm-up, not measured: imports and first-call set-up of every contender on a 10-key table.
        tiny = Dataset.make(10, 0, 0)
        for i, (_name, _mode, mine, theirs) in enumerate(pairs):
            for j, contender in enumerate((mine, theirs)):
                measure(server, prepare(server, f"warm-up-{i}-{j}", tiny).bucket, contender, ours=j == 0)
        for name in list(peers):
            result, why = _run_peer(server, name, prepare(server, f"warm-up-{name}", tiny, point_in_time=True), tiny)
            if result is None:
                print(f"note: peer {name} failed its warm-up on a 10-key table; skipped: {why}")
                peer_failures.append(f"{name} warm-up: {why}")
                peers.remove(name)
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
            if peers:
                prepared = {p: prepare(server, f"bench-{rnd}-{p}", data, point_in_time=True) for p in peers}
                print(f"round {rnd + 1} peers: prepared {len(peers)} buckets in "
                      f"{sum(p.seconds for p in prepared.values()):.1f} s", flush=True)
                for name in (peers if rnd % 2 == 0 else peers[::-1]):
                    result, why = _run_peer(server, name, prepared[name], data)
                    if result is None:
                        print(f"  {name:<15} FAILED, not counted: {why}", flush=True)
                        peer_failures.append(f"{name} round {rnd + 1}: {why}")
                        continue
                    print(f"  {result.label:<15} {result.seconds:7.2f} s  {result.total:5d} requests  "
                          f"verify OK  [{result.note}]", flush=True)
                    runs.setdefault(f"peer/{name}", []).append(result)
            if args.server == "moto":
                reset_moto(server.endpoint_url)
    finally:
        server.stop()

    print()
    rows, bars = [], []
    letters = iter("abcdefgh")
    keys = [(f"{name}/{side}", side) for name, *_ in pairs for side in ("ours", "base")]
    keys += [(f"peer/{p}", "peer") for p in peers if f"peer/{p}" in runs]
    for key, side in keys:
        if key not in runs:
            continue
        rs = runs[key]
        med = statistics.median(r.seconds for r in rs)
        last = rs[-1]
        in_listing = f"{statistics.median(r.list_seconds for r in rs):.2f}" if side != "peer" else "-"
        label = f"({next(letters)}) {last.label}"
        rows.append([label, f"{med:.2f}", in_listing, last.total, last.http_sends, fmt_ops(last.requests)])
        kind = {"ours": "ours", "base": "floor", "peer": "peer"}[side]
        bars.append(plots_bar(label + (" (floor)" if kind == "floor" else ""), kind, rs))
    print(table(["contender", "seconds", "in listing", "requests", "http sends", "by operation"], rows))
    print()
    median = {key: statistics.median(r.seconds for r in rs) for key, rs in runs.items()}
    for name, _mode, _, _ in pairs:
        mine, theirs = runs[f"{name}/ours"], runs[f"{name}/base"]
        t_ratio = median[f"{name}/ours"] / median[f"{name}/base"]
        r_ratio = mine[-1].total / theirs[-1].total
        b = theirs[-1].extra
        minimal = b["pages"] + (b.get("batches", 0)) + (b["keys"] if name == "copy" else 0)
        met = t_ratio <= TARGET_TIME_RATIO
        print(f"{name:>4}: ours/baseline time {t_ratio:.2f}x (target <= {TARGET_TIME_RATIO}x: "
              f"{'met' if met else 'MISSED'}), requests {mine[-1].total}/{theirs[-1].total} = {r_ratio:.2f}x; "
              f"minimal (listing pages + {'copies' if name == 'copy' else 'batches'}) = {minimal}, "
              f"ours makes {mine[-1].total - minimal:+d}")
        for peer in peers:
            if f"peer/{peer}" in median:
                ratio = median[f"{name}/ours"] / median[f"peer/{peer}"]
                print(f"      ours {name} / {peer} time {ratio:.2f}x ({'ahead' if ratio < 1 else 'BEHIND'}), "
                      f"requests {mine[-1].total}/{runs[f'peer/{peer}'][-1].total}")
    for failure in peer_failures:
        print(f"peer not counted: {failure}")
    if args.plot and bars:
        from bench import plots

        part, where = _label(args.server, args.fast_listing)
        title = (f"Prefix table restore: {len(data.objects):,} objects ({data.bytes / 1024**2:.0f} MiB), all deleted; "
                 f"{where}; median of {args.repeat} round{'s' if args.repeat > 1 else ''}")
        print(f"plot: {plots.prefix_restore(bars, os.path.join(args.plot, f'bench-prefix-restore-{part}.png'), title)}")
    return finish(script_started, failures,
                  "every run verified: all keys back with the right sha256 and version; t2/ untouched")


def plots_bar(label: str, kind: str, rs: list[Run]) -> Any:
    from bench.plots import Bar

    seconds = [r.seconds for r in rs]
    return Bar(label, kind, statistics.median(seconds), min(seconds), max(seconds), rs[-1].total)


if __name__ == "__main__":
    sys.exit(main())
