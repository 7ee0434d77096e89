"""``amend`` at production scale, on the virtual S3 server (bench/virtual_s3.py).

Each measurement starts a fresh server process serving a virtual table of ``--entries`` entries (keys of
history ``--history``, oldest first: ``vm`` is one data version under one delete marker) with
``--latency-ms`` per request, and runs ``airflow_fuse.engine.amend`` (strategy auto, defaults) in a fresh
client process, which reports its wall time, CPU (``resource.getrusage``) and peak RSS. The server then
says which requests it served and whether the restore was exact. Results side by side::

    python -m bench.scale --entries 100000 --entries 1000000 [--latency-ms 20] [--history vm] [--plot DIR]

``--plot DIR`` draws memory per entry and wall time against the table's size into ``DIR/bench-scale.png``.

Exit status 1 if any restore was not exact.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def child(endpoint: str, table: str, strategy: str) -> None:
    """One measured amend, in this (fresh) process; prints one JSON line."""
    from botocore.config import Config

    from airflow_fuse.engine import AmendOptions, amend
    from airflow_fuse.s3 import CLIENT_CONFIG, make_session

    client = make_session(region_name="us-east-1").client(
        "s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
        config=CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"})))
    client.head_bucket(Bucket=table.split("/")[2])  # warms the client: endpoint, credentials, one connection
    baseline = _rss_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    listing = {"seconds": 0.0, "rss": 0, "cpu": 0.0}

    def on_page(_: int) -> None:  # the scan's pages; the last one ends the listing
        listing["seconds"] = time.monotonic() - started
        listing["rss"] = _rss_bytes()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        listing["cpu"] = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime

    samples: list[tuple[int, int]] = []  # (keys done, RSS) during the restore: flat when it streams
    restore = {"cpu": 0.0}  # the process's CPU seconds at the restore's first report

    def progress(done: int, total: int, _: int) -> None:
        # Keys are reported a batch at a time (up to 1,000): a sample at the first report, each time a sixteenth of
        # the keys is passed, and at the last.
        step = max(1, total // 16)
        if not samples:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            restore["cpu"] = usage.ru_utime + usage.ru_stime
        if not samples or done == total or done // step > samples[-1][0] // step:
            samples.append((done, _rss_bytes()))

    report = amend(client, table=table, options=AmendOptions(strategy=strategy), on_page=on_page, progress=progress)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    summary = report.summary()
    print(json.dumps({
        "wall": wall,
        "listing_seconds": listing["seconds"], "listing_rss": listing["rss"], "listing_cpu": listing["cpu"],
        "restore_seconds": report.restore.seconds if report.restore is not None else 0.0,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "restore_cpu": after.ru_utime + after.ru_stime - restore["cpu"] if samples else 0.0,
        "baseline_rss": baseline,
        "peak_rss": after.ru_maxrss * 1024,  # KiB on Linux
        "listed": summary["versions_listed"], "keys": summary["keys_listed"], "restored": summary["restored"],
        "failed": summary["failed"], "client_requests": summary["requests"],
        "restore_rss": samples,
    }), flush=True)


def _get(endpoint: str, what: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/{what}", timeout=600) as response:
        return json.loads(response.read())


def measure(entries: int, latency_ms: float, history: str, strategy: str) -> dict[str, Any]:
    keys = max(1, entries // len(history))
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.virtual_s3", "--keys", str(keys), "--history", history,
         "--latency-ms", str(latency_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the virtual S3 server did not start: {line!r}")
        endpoint = f"http://127.0.0.1:{int(line.split()[1])}"
        table = _get(endpoint, "__table")
        server_cpu = _cpu_seconds(server.pid)
        run = subprocess.run([sys.executable, "-m", "bench.scale", "--child", endpoint,
                              f"s3://{table['bucket']}/{table['root']}", "--strategy", strategy],
                             cwd=ROOT, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"the measured amend failed:\n{run.stderr[-3000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        result["server_cpu"] = _cpu_seconds(server.pid) - server_cpu
        result["served"] = _get(endpoint, "__stats")
        result["check"] = _get(endpoint, "__check")
        result["table"] = table
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def table_rows(results: list[dict[str, Any]], latency_ms: float) -> list[tuple[str, list[str]]]:
    ops = sorted({op for r in results for op in r["served"]})
    rows: list[tuple[str, list[str]]] = [
        ("entries (keys)", [f"{r['table']['entries']:,} ({r['table']['keys']:,})" for r in results]),
        ("latency per request", [f"{latency_ms:g} ms"] * len(results)),
        ("wall time", [f"{r['wall']:,.1f} s" for r in results]),
        ("  scan listing", [f"{r['listing_seconds']:,.1f} s" for r in results]),
        ("  inventory + plan", [f"{r['wall'] - r['listing_seconds'] - r['restore_seconds']:,.1f} s"
                                for r in results]),
        ("  restore", [f"{r['restore_seconds']:,.1f} s" for r in results]),
        ("client CPU", [f"{r['cpu']:,.1f} s" for r in results]),
        ("  in the scan listing", [f"{r['listing_cpu']:,.1f} s" for r in results]),
        ("  in the restore (from its first report)", [f"{r.get('restore_cpu', 0.0):,.1f} s" for r in results]),
        ("server CPU", [f"{r['server_cpu']:,.1f} s" for r in results]),
        ("peak RSS (baseline)", [f"{_mib(r['peak_rss'])} ({_mib(r['baseline_rss'])})" for r in results]),
        ("RSS at the end of the listing", [_mib(r["listing_rss"]) for r in results]),
        ("RSS at the restore's first key", [_mib(r["restore_rss"][0][1]) if r.get("restore_rss") else "-"
                                            for r in results]),
        ("  growth to its last key", [_mib(r["restore_rss"][-1][1] - r["restore_rss"][0][1])
                                      if r.get("restore_rss") else "-" for r in results]),
        ("RSS per listed entry", [f"{(r['peak_rss'] - r['baseline_rss']) / max(1, r['listed']):,.0f} B"
                                  for r in results]),
        ("entries/s (wall)", [f"{r['listed'] / r['wall']:,.0f}" for r in results]),
        ("entries/s/core (client CPU)", [f"{r['listed'] / max(r['cpu'], 1e-9):,.0f}" for r in results]),
    ]
    rows += [(f"requests: {op}", [f"{r['served'].get(op, 0):,}" for r in results]) for op in ops]
    rows += [
        ("keys restored / lost", [f"{r['check']['restored_keys']:,} / {r['check']['lost_keys']:,}" for r in results]),
        ("restore exact", ["yes" if r["check"]["exact"] else "NO" for r in results]),
    ]
    return rows


def render(rows: list[tuple[str, list[str]]]) -> str:
    width = [max(len(name) for name, _ in rows)] + [max(len(values[i]) for _, values in rows)
                                                     for i in range(len(rows[0][1]))]
    lines = []
    for name, values in rows:
        cells = [name.ljust(width[0])] + [v.rjust(w) for v, w in zip(values, width[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, action="append", default=None,
                        help="entries in the virtual table (repeat for columns side by side; default 1,000,000)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--history", default="vm", help="each key's history, oldest first (v data, m marker)")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--plot", metavar="DIR", help="draw RSS per entry and wall time into DIR/bench-scale.png")
    parser.add_argument("--child", nargs=2, metavar=("ENDPOINT", "TABLE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.strategy)
        return 0
    results = []
    for entries in args.entries or [1_000_000]:
        print(f"measuring {entries:,} entries at {args.latency_ms:g} ms per request ...", file=sys.stderr, flush=True)
        result = measure(entries, args.latency_ms, args.history, args.strategy)
        results.append(result)
        if not result["check"]["exact"]:
            print(json.dumps(result["check"], indent=1), file=sys.stderr)
    print(render(table_rows(results, args.latency_ms)))
    if args.plot:
        from bench import plots

        title = (f"amend (strategy {args.strategy}) on the virtual S3 server, {args.latency_ms:g} ms per request, "
                 f"history {args.history!r}")
        print(f"plot: {plots.scale(results, os.path.join(args.plot, 'bench-scale.png'), title)}")
    return 0 if all(r["check"]["exact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
