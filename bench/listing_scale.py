"""Listing at scale: a synthetic versioned prefix of N entries, listed by the old and the new code, side by side.

    python -m bench.listing_scale [--entries 1000000] [--latency-ms 20] [--modes old,seq,par] [--concurrency 16]
                                  [--code ../other-checkout]

No real S3: a small HTTP server (its own process, so its CPU is not the client's) answers ListObjectVersions
with real XML pages, rendered on the fly from a key space of N/2 keys named like Fuse blocks
(``t/_b/<32 hex>_v2.parquet``), each one data version under one delete marker (the incident), with AWS's
``KeyMarker``/``VersionIdMarker`` semantics and an optional delay per request (the round trip to a real
endpoint). botocore signs and sends every request and the client's real parsing path runs.

Each mode runs in a fresh subprocess and reports wall time, client CPU (user + system, this process only),
entries per CPU second, and peak RSS growth per entry over the sweep plus one walk of every key's history
(what the prefix layout does):

- ``old``: ``iter_object_versions`` + ``Inventory.from_entries`` and ``histories()`` as of commit ``OLD_COMMIT``
  (botocore's dict parsing, VersionEntry per entry), loaded from git;
- ``seq``: ``Inventory.sweep`` with the raw XML parser, one range;
- ``par``: the same with ``--concurrency`` key ranges listed at once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "796111a"  # main before the raw-XML listing
BUCKET = "bench-bucket"
PREFIX = "t/"
OWNER = "<Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>" \
        "<DisplayName>bench</DisplayName></Owner>"


# the server -------------------------------------------------------------------------------------------------

class KeySpace:
    """N/2 keys, ascending with their index; entry 2i is key i's delete marker (current), 2i+1 its version.

    Every entry's XML is made up front as two Arrow string columns (markers, versions), so that a page is
    cut out of their data buffers without Python work per entry: the server must not be the bottleneck of
    a parallel listing on a 2-core machine.
    """

    def __init__(self, entries: int) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.keys = max(1, entries // 2)
        self.step = 16**32 // self.keys
        index = range(self.keys)
        key = pa.array([self.key(i) for i in index], pa.string())
        marker_id = pa.array([self.version_id(i, True) for i in index], pa.string())
        version_id = pa.array([self.version_id(i, False) for i in index], pa.string())
        size = pa.array([str(1000 + i % 5000) for i in index], pa.string())
        join = pc.binary_join_element_wise
        markers = join("<DeleteMarker><Key>", key, "</Key><VersionId>", marker_id, "</VersionId>"
                       "<IsLatest>true</IsLatest><LastModified>2026-11-25T22:00:01.000Z</LastModified>"
                       f"{OWNER}</DeleteMarker>", "")
        versions = join("<Version><Key>", key, "</Key><VersionId>", version_id, "</VersionId>"
                        "<IsLatest>false</IsLatest><LastModified>2026-11-20T10:00:00.000Z</LastModified>"
                        "<ETag>&quot;", version_id, "&quot;</ETag><Size>", size, "</Size>"
                        f"<StorageClass>STANDARD</StorageClass>{OWNER}</Version>", "")
        # entry j: markers[j // 2] or versions[j // 2], interleaved into one column
        both = pa.concat_arrays([markers, versions])
        order = pa.array([i + (self.keys if j else 0) for i in index for j in (0, 1)], pa.int64())
        self.xml = both.take(order)
        offsets = self.xml.buffers()[1]
        self.offsets = memoryview(offsets).cast("i")
        self.data = memoryview(self.xml.buffers()[2])

    def key(self, i: int) -> str:
        return f"{PREFIX}_b/{i * self.step:032x}_v2.parquet"

    def version_id(self, i: int, marker: bool) -> str:
        return f"{(i * (104729 if marker else 7919) + (12345 if marker else 54321)) % 16**32:032x}"

    def first_after(self, key: str) -> int:
        """The index of the first key greater than ``key``."""
        lo, hi = 0, self.keys
        while lo < hi:
            mid = (lo + hi) // 2
            if self.key(mid) <= key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def start(self, key_marker: str | None, version_marker: str | None) -> int:
        """The entry position a request starts at."""
        if not key_marker:
            return 0
        i = self.first_after(key_marker)
        if version_marker and i > 0 and self.key(i - 1) == key_marker:
            if version_marker == self.version_id(i - 1, True):
                return 2 * (i - 1) + 1
        return 2 * i

    def page(self, query: dict[str, str]) -> bytes:
        prefix = query.get("prefix", "")
        max_keys = min(int(query.get("max-keys", "1000")), 1000)
        start = self.start(query.get("key-marker"), query.get("version-id-marker"))
        total = 2 * self.keys if PREFIX.startswith(prefix) or prefix.startswith(PREFIX) else 0
        start = min(start, total)
        stop = min(start + max_keys, total)
        truncated = stop < total
        head = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListVersionsResult '
                f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>{BUCKET}</Name><Prefix>{prefix}</Prefix>'
                f"<KeyMarker>{query.get('key-marker', '')}</KeyMarker>"
                f"<VersionIdMarker>{query.get('version-id-marker', '')}</VersionIdMarker>"
                f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if query.get("encoding-type") == "url":
            head += "<EncodingType>url</EncodingType>"
        if truncated and stop > start:
            i, marker = divmod(stop - 1, 2)
            head += (f"<NextKeyMarker>{self.key(i)}</NextKeyMarker>"
                     f"<NextVersionIdMarker>{self.version_id(i, marker == 0)}</NextVersionIdMarker>")
        entries = bytes(self.data[self.offsets[start]:self.offsets[stop]]) if stop > start else b""
        return head.encode() + entries + b"</ListVersionsResult>"


def serve(entries: int, latency: float, port_file: str) -> None:
    space = KeySpace(entries)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:  # noqa: N802
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
            body = space.page(query)
            if latency:
                time.sleep(latency)
            # One write: headers and body apart meet Nagle's algorithm and delayed ACKs (40 ms stalls).
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                    "x-amz-request-id: bench\r\n\r\n").encode()
            self.wfile.write(head + body)

        def log_message(self, *_: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        # The listen backlog: with the default (5), a burst of new connections (the ranges' first requests)
        # overflows it and a client waits a second to retry its SYN.
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


# the client -------------------------------------------------------------------------------------------------

def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _old_modules() -> object:
    """Commit OLD_COMMIT's listing.py and inventory.py, importable as ``fuse_old``."""
    directory = Path(tempfile.mkdtemp(prefix="fuse-old-"))
    package = directory / "fuse_old"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("listing", "inventory"):
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:airflow_fuse/{name}.py"],
                                check=True, capture_output=True, text=True).stdout
        (package / f"{name}.py").write_text(source.replace("from airflow_fuse.listing", "from fuse_old.listing"))
    sys.path.insert(0, str(directory))
    import fuse_old.inventory

    return fuse_old.inventory


def client_run(mode: str, endpoint: str, concurrency: int, code: str | None = None) -> dict:
    sys.path.insert(0, code or str(ROOT))
    from botocore.config import Config

    from airflow_fuse.s3 import make_session

    client = make_session(region_name="us-east-1").client(
        "s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=64,
                      s3={"addressing_style": "path"}))
    if mode == "old":
        inventory_module = _old_modules()
    else:
        import airflow_fuse.inventory as inventory_module
    client.head_bucket  # noqa: B018 - the client's models are loaded lazily: load before measuring
    baseline = _rss()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    if mode == "old":
        inventory = inventory_module.Inventory.sweep(client, BUCKET, PREFIX)
    else:
        inventory = inventory_module.Inventory.sweep(client, BUCKET, PREFIX,
                                                     concurrency=concurrency if mode == "par" else 1)
    list_wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    deleted = sum(1 for h in inventory.histories() if h.is_deleted)
    walk_wall = time.monotonic() - wall0 - list_wall
    cpu2 = resource.getrusage(resource.RUSAGE_SELF)
    peak = cpu2.ru_maxrss * 1024
    entries = len(inventory)

    def cpu(a: resource.struct_rusage, b: resource.struct_rusage) -> float:
        return (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)

    return {"mode": mode, "entries": entries, "keys": inventory.key_count, "deleted": deleted,
            "pages": inventory.pages, "list_wall": list_wall, "list_cpu": cpu(cpu0, cpu1),
            "walk_wall": walk_wall, "walk_cpu": cpu(cpu1, cpu2),
            "rss_per_entry": (peak - baseline) / max(entries, 1)}


# the comparison ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--modes", default="old,seq,par")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--code", action="append", default=[],
                        help="also list with the airflow_fuse package of this checkout (e.g. main's), against the "
                             "same server; repeatable")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.entries, args.latency_ms / 1000, args.port_file)
        return
    if args.client:
        print(json.dumps(client_run(args.client, args.endpoint, args.concurrency, args.code[0] if args.code else None)))
        return

    port_file = tempfile.mktemp(prefix="listing-bench-port-")
    server = subprocess.Popen([sys.executable, "-m", "bench.listing_scale", "--serve", "--entries", str(args.entries),
                               "--latency-ms", str(args.latency_ms), "--port-file", port_file], cwd=ROOT)
    try:
        for _ in range(1200):  # the server renders every entry first
            if os.path.exists(port_file) and Path(port_file).read_text():
                break
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{Path(port_file).read_text()}"
        print(f"{args.entries:,} entries ({args.entries // 2:,} keys, each one version under one delete marker), "
              f"{args.latency_ms:g} ms added per request, concurrency {args.concurrency}, {os.cpu_count()} cores")
        results = []
        for code in [None, *args.code]:
            for mode in args.modes.split(","):
                server_cpu0 = _process_cpu(server.pid)
                out = subprocess.run([sys.executable, "-m", "bench.listing_scale", "--client", mode, "--endpoint",
                                      endpoint, "--concurrency", str(args.concurrency),
                                      *(["--code", str(Path(code).resolve())] if code else [])],
                                     cwd=ROOT, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{mode}: failed\n{out.stderr[-3000:]}")
                    continue
                results.append(json.loads(out.stdout.strip().splitlines()[-1]) | {
                    "server_cpu": _process_cpu(server.pid) - server_cpu0, "code": code or "."})
                _print(results)
    finally:
        server.terminate()
        server.wait()
        threading.Thread(target=lambda: os.path.exists(port_file) and os.unlink(port_file)).start()


def _process_cpu(pid: int) -> float:
    """A process's CPU seconds so far (user + system, all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _print(results: list[dict]) -> None:
    header = (f"{'mode':<5} {'entries':>9} {'pages':>6} {'list s':>7} {'list cpu':>8} {'entries/cpu-s':>13} "
              f"{'server cpu':>10} {'walk cpu':>8} {'RSS B/entry':>11} {'vs old':>7} {'vs seq':>7}  code")
    print(header)
    base = next((r["list_wall"] for r in results if r["mode"] == "old"), None)
    seqs = {r["code"]: r["list_wall"] for r in results if r["mode"] == "seq"}
    for r in results:
        speed = r["entries"] / r["list_cpu"] if r["list_cpu"] else float("inf")
        ratio = f"{base / r['list_wall']:.1f}x" if base else "-"
        seq = seqs.get(r["code"])
        vs_seq = f"{seq / r['list_wall']:.1f}x" if seq else "-"
        print(f"{r['mode']:<5} {r['entries']:>9,} {r['pages']:>6} {r['list_wall']:>7.2f} {r['list_cpu']:>8.2f} "
              f"{speed:>13,.0f} {r['server_cpu']:>10.2f} {r['walk_cpu']:>8.2f} {r['rss_per_entry']:>11.0f} {ratio:>7} "
              f"{vs_seq:>7}  {r['code']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
