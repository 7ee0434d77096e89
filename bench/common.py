"""Shared pieces of the benchmarks: request counting with botocore event hooks, timing, tables, moto reset."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HookCounter:
    """Counts the API calls (``before-call``) and HTTP sends (``before-send``, retries included) of a client,
    and the wall time spent inside each operation, from botocore's event hooks."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.sends = 0
        self.op_seconds: dict[str, float] = {}
        self.durations: dict[str, list[float]] = {}  # per call, in completion order
        self._lock = threading.Lock()
        self._local = threading.local()
        self._uid = f"bench-counter-{id(self)}"

    def attach(self, client: Any) -> HookCounter:
        events = client.meta.events
        events.register("before-call.s3", self._before_call, unique_id=self._uid + "-call")
        events.register("after-call.s3", self._after_call, unique_id=self._uid + "-after")
        events.register("before-send.s3", self._before_send, unique_id=self._uid + "-send")
        return self

    def detach(self, client: Any) -> None:
        events = client.meta.events
        events.unregister("before-call.s3", unique_id=self._uid + "-call")
        events.unregister("after-call.s3", unique_id=self._uid + "-after")
        events.unregister("before-send.s3", unique_id=self._uid + "-send")

    def _before_call(self, event_name: str = "", **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.calls[op] = self.calls.get(op, 0) + 1
        self._local.started = time.monotonic()

    def _after_call(self, event_name: str = "", **_: Any) -> None:
        started = getattr(self._local, "started", None)
        if started is None:
            return
        op = event_name.rsplit(".", 1)[-1]
        took = time.monotonic() - started
        with self._lock:
            self.op_seconds[op] = self.op_seconds.get(op, 0.0) + took
            self.durations.setdefault(op, []).append(took)

    def _before_send(self, **_: Any) -> None:
        with self._lock:
            self.sends += 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def reset_moto(endpoint_url: str) -> None:
    """Drop every bucket of the embedded moto server (keeps its memory flat between rounds)."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def fmt_ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


_SERVE = """
import sys

import moto.backends

# moto's server scans its package directory (~200 stat calls) on every request to route it; the list
# never changes, so keep it. A third of the server's time per small request otherwise.
_modules = tuple(moto.backends.list_of_moto_modules())
moto.backends.list_of_moto_modules = lambda: _modules
if "--fast-listing" in sys.argv:
    from bench.moto_listing import install

    install()

from airflow_fuse.embedded import start_moto
server = start_moto()
print(server.endpoint_url, flush=True)
sys.stdin.read()  # EOF (the parent closed the pipe or went away) stops the server
server.stop()
"""


def start_server(*, in_process: bool = False, fast_listing: bool = False) -> Any:
    """The embedded moto server (``airflow_fuse.embedded.start_moto``) on 127.0.0.1.

    By default it runs in a child process so that the server and the client under test do not share one
    GIL: on a 2-core machine the client's own CPU work then does not slow the server down, as with a real
    remote S3. ``in_process=True`` runs it in a thread of this process, as the tests do.
    ``fast_listing=True`` replaces moto's O(bucket) ListObjectVersions by an O(page) one (bench/moto_listing.py).
    """
    import subprocess
    import sys

    from airflow_fuse.embedded import ACCESS_KEY, SECRET_KEY, S3Server, start_moto

    if in_process:
        if fast_listing:
            from bench.moto_listing import install

            install()
        return start_moto()
    argv = [sys.executable, "-c", _SERVE] + (["--fast-listing"] if fast_listing else [])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # so the child imports bench
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
    assert process.stdout is not None and process.stdin is not None
    endpoint = process.stdout.readline().strip()
    if not endpoint.startswith("http://"):
        process.kill()
        raise RuntimeError(f"the embedded moto server did not start (said {endpoint!r})")

    def stop() -> None:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return S3Server(name="moto", endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, _stop=stop)


def finish(script_started: float, failures: list[str], verified: str) -> int:
    """The last lines of a benchmark: wall time, then its correctness failures (exit 1) or what was verified."""
    print(f"\nwall time of the whole script: {time.monotonic() - script_started:.0f} s")
    if failures:
        print("\nCORRECTNESS FAILURES:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(verified)
    return 0
