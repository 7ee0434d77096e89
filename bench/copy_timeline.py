"""Where a copy restore's time goes: ``amend --strategy copy`` and the 32-thread CopyObject floor, phase by phase.

    python -m bench.copy_timeline [--fast-listing] [--rounds 2]

Same data, server and clients as ``bench.prefix_restore`` (2,000 x ~1 KiB + 20 x 2 MiB, all deleted), one fresh
bucket per run, the order alternating each round. botocore ``before-call``/``after-call`` hooks stamp every request;
each run is split into the listing before the first CopyObject, the copies (first sent to last answered) and what
comes after the last copy (the post-copy check's tail). Medians per side. Nothing is verified here: the restores
are those ``bench.prefix_restore`` verifies.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from airflow_fuse.engine import AmendOptions, amend
from bench.common import start_server
from bench.prefix_restore import PREFIX, Dataset, baseline_copy, prepare


def _timeline(client: Any, run: Any) -> tuple[float, float, float, float, int]:
    events: list[tuple[float, str, str]] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def stamp(kind: str) -> Any:
        def hook(event_name: str = "", **_: Any) -> None:
            with lock:
                events.append((time.monotonic() - t0, kind, event_name.rsplit(".", 1)[-1]))
        return hook

    client.meta.events.register("before-call.s3.*", stamp("sent"))
    client.meta.events.register("after-call.s3.*", stamp("answered"))
    t0 = time.monotonic()
    run()
    total = time.monotonic() - t0
    first = min(t for t, kind, op in events if op == "CopyObject" and kind == "sent")
    last = max(t for t, kind, op in events if op == "CopyObject" and kind == "answered")
    lists = sum(1 for _, kind, op in events if op == "ListObjectVersions" and kind == "sent")
    return total, first, last - first, total - last, lists


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_timeline", description=__doc__.split("\n")[0])
    parser.add_argument("--fast-listing", action="store_true", help="moto's listing in O(page) (bench/moto_listing)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    server = start_server(in_process=False, fast_listing=args.fast_listing)
    data = Dataset.make(2000, 20, 2)
    rows: dict[str, list[tuple[float, float, float, float, int]]] = {"ours": [], "base": []}
    try:
        for rnd in range(args.rounds):
            for side in ("ours", "base") if rnd % 2 == 0 else ("base", "ours"):
                bucket = prepare(server, f"timeline-{rnd}-{side}", data).bucket
                client = server.client(fast_timestamps=side == "ours")
                if side == "ours":
                    def run(client: Any = client, bucket: str = bucket) -> None:
                        amend(client, table=f"s3://{bucket}/{PREFIX}",
                              options=AmendOptions(strategy="copy", max_workers=32))
                else:
                    def run(client: Any = client, bucket: str = bucket) -> None:
                        baseline_copy(32)(client, bucket)
                row = _timeline(client, run)
                rows[side].append(row)
                print(f"{side} round {rnd + 1}: {row[0]:.2f} s = listing before the first copy {row[1]:.2f} s + "
                      f"copies {row[2]:.2f} s + after the last copy {row[3]:.2f} s; {row[4]} listing calls", flush=True)
    finally:
        server.stop()
    for side, runs in rows.items():
        total, first, copies, tail = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"median {side}: {total:.2f} s = {first:.2f} + copies {copies:.2f} + after {tail:.2f}")
    ours, base = (statistics.median(r[0] for r in rows[s]) for s in ("ours", "base"))
    print(f"ours/floor {ours / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
