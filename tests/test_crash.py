"""A restore killed half way, and a restore racing a writer.

Killed (on Ceph): the ``airflow-fuse amend`` command runs as a subprocess and gets SIGKILL once about half
of its copies have gone out (counted by a proxy that slows copies down so "half way" lasts long enough to
hit); the same command run again must finish the job with nothing lost, no key copied twice, no upload left
behind. A multipart copy is killed between its parts and its completion the same way.

Writer: another job writes to keys of the table while the restore runs. Whatever the writer wrote is data
the restore must never bury or delete: afterwards the writer's bytes are current.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_fuse import restore
from airflow_fuse.engine import AmendOptions, amend
from tests.helpers import all_versions, sha
from tests.servers.fault_proxy import ProxiedRequest, fault_proxy
from tests.test_faults import (
    ROOT,
    THRESHOLD,
    Table,
    arrange,
    assert_whole,
    cli,
    cli_env,
    cli_selection,
    read_all,
    scan_options,
)


def _restored(s3: Any, table: Table) -> int:
    got = read_all(s3, table.bucket, list(table.wanted))
    return sum(1 for key, body in got.items() if body is not None and sha(body) == sha(table.wanted[key]))


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` (it must still be running then)."""
    deadline = time.monotonic() + 120
    while not ready():
        assert process.poll() is None, f"the restore ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"the restore never got to {what}"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_a_killed_restore_finishes_on_the_next_run(ceph_server, strategy):
    s3_server, s3 = ceph_server, ceph_server.client()
    # auto: 200 keys deleted (marker removal) and 200 overwritten after as_of (copied back); copy: 400 copies.
    # The command line has no --multipart-threshold: multipart copies are killed in the test below.
    table = arrange(s3, strategy=strategy, small=400, overwritten=200 if strategy == "auto" else 0)
    command = ["amend", table.uri, "--strategy", strategy, "--json", *cli_selection(table)]
    # Each copy waits 10 ms in the proxy (4 workers: 200 copies take > 0.5 s): the kill lands with copies in flight.
    with fault_proxy(s3_server, delay=1.0, delay_seconds=0.01, operations={"CopyObject"}) as proxy:
        process = subprocess.Popen([sys.executable, "-m", "airflow_fuse.cli", *command, "--workers", "4",
                                    "--endpoint-url", proxy.url],
                                   env=cli_env(s3_server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _kill_when(process, lambda: proxy.requests["CopyObject"] >= len(table.copied) // 2, "half of its copies")
    done_at_kill = _restored(s3, table)
    assert 0 < done_at_kill < len(table.wanted), f"not killed half way: {done_at_kill} of {len(table.wanted)}"

    again = cli(s3_server, *command)  # the same command (default parallelism)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["remaining"] == 0
    assert_whole(s3, table)
    print(f"{s3_server.name} {strategy}: killed with {done_at_kill}/{len(table.wanted)} restored")


# The command line cannot lower the multipart threshold: the killed run is the engine in a process of its own.
AMEND = """
import sys
from airflow_fuse import restore
from airflow_fuse.engine import AmendOptions, amend
from airflow_fuse.s3 import make_client
amend(make_client(endpoint_url=sys.argv[2]), table=sys.argv[1],
      options=AmendOptions(strategy="copy", max_workers=4, multipart_threshold=int(sys.argv[3])))
"""


def test_a_killed_multipart_copy_leaves_no_upload_after_the_next_run(ceph_server):
    s3_server, s3 = ceph_server, ceph_server.client()
    table = arrange(s3, strategy="copy", small=10, large=2)
    large = [key for key in table.wanted if "/large/" in key]
    # Each multipart copy's completion is held until the process is killed, then dropped: its parts stay.
    with fault_proxy(s3_server, delay=1.0, delay_seconds=60, operations={"CompleteMultipartUpload"}) as proxy:
        process = subprocess.Popen([sys.executable, "-c", AMEND, table.uri, proxy.url, str(THRESHOLD)],
                                   env=cli_env(s3_server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _kill_when(process, lambda: proxy.requests["CompleteMultipartUpload"] == len(large), "both completions")
        deadline = time.monotonic() + 10
        while proxy.counts["dropped"] < len(large) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.counts["dropped"] == len(large)
    left = s3.list_multipart_uploads(Bucket=table.bucket).get("Uploads") or []
    assert sorted(u["Key"] for u in left) == sorted(large), "the killed run should have left its uploads"

    report = amend(s3, table=table.uri,
                   options=AmendOptions(strategy="copy", max_workers=4, multipart_threshold=THRESHOLD))
    assert report.remaining == 0, report.summary()
    assert_whole(s3, table)


class Writer:
    """Another job writing to the table while it is restored.

    ``worst`` keys (deleted) are written just before the restore's own write of them reaches the server, the
    moment a re-check cannot see; ``racing`` keys (deleted) at random moments during the restore; ``live``
    keys (not deleted) are overwritten as the restore's first listing goes out.
    """

    def __init__(self, s3: Any, bucket: str, *, worst: set[str], racing: set[str], live: set[str]) -> None:
        self.s3, self.bucket = s3, bucket
        self.worst, self.racing, self.live = worst, racing, live
        self.written: dict[str, bytes] = {}  # key -> the last bytes written
        self.versions: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()

    def write(self, key: str) -> None:
        body = f"written by the other job at {time.time_ns()} to {key}".encode()
        version = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["VersionId"]
        with self.lock:
            self.written[key] = body
            self.versions.append((key, version))

    def before_forward(self, request: ProxiedRequest) -> None:
        """Called by the proxy before each request of the restore goes on to the server."""
        if request.operation == "ListObjectVersions" and not self.started.is_set():
            for key in sorted(self.live):
                self.write(key)
            self.started.set()
        elif request.operation in ("CopyObject", "CreateMultipartUpload") and request.key in self.worst:
            self.write(request.key)
        elif request.operation == "DeleteObjects":
            for key in sorted(self.worst - set(self.written)):
                if f"<Key>{key}</Key>".encode() in request.body:
                    self.write(key)

    def race(self, seconds: float) -> None:
        """Write the racing keys at random moments over about ``seconds`` from the restore's first listing."""
        self.started.wait(30)
        rng = random.Random(7)
        keys = sorted(self.racing)
        rng.shuffle(keys)
        for key in keys:
            time.sleep(rng.uniform(0, 2 * seconds / len(keys)))
            self.write(key)


@pytest.mark.parametrize(("strategy", "by_range"), [("auto", False), ("copy", False), ("copy", True)],
                         ids=["auto", "copy", "copy-checked-by-range"])
def test_data_written_during_a_restore_stays_current(s3_server, s3, strategy, by_range, monkeypatch):
    if by_range:
        # Copies many enough to be checked after they land by listings of their key ranges (16 keys a range here),
        # each listed while the later copies still run.
        monkeypatch.setattr(restore, "COPIES_PER_LISTING_PAGE", 10)
        monkeypatch.setattr(restore, "SETTLE_SEGMENT", 16)
    table = arrange(s3, strategy=strategy, small=80, healthy=10)
    deleted = sorted(table.wanted)
    writer = Writer(s3, table.bucket, worst=set(deleted[::8]), racing=set(deleted[4::8]),
                    live=set(sorted(table.healthy)[:5]))  # 10 + 10 deleted keys, 5 live ones
    # Copies and marker removals wait 10 ms in the proxy: the restore lasts long enough for the writer to race it.
    with fault_proxy(s3_server, delay=1.0, delay_seconds=0.01, operations={"CopyObject", "DeleteObjects"},
                     before_forward=writer.before_forward) as proxy:
        racer = threading.Thread(target=writer.race, args=(1.0,))
        racer.start()
        report = amend(proxy.in_front_of(s3_server).client(), table=table.uri, scan_options=scan_options(table),
                       options=AmendOptions(strategy=strategy, max_workers=4, multipart_threshold=THRESHOLD))
        racer.join()
    for key in sorted(writer.worst - set(writer.written)):  # not reached: the restore left the key alone
        writer.write(key)
    current = read_all(s3, table.bucket, sorted(writer.written))
    buried = {group: sorted(k for k in keys if current[k] != writer.written[k])
              for group, keys in (("worst", writer.worst), ("racing", writer.racing), ("live", writer.live))}
    assert buried == {"worst": [], "racing": [], "live": []}, "keys written during the restore lost their data"
    listed = {(k, v) for k, v, marker in all_versions(s3, table.bucket, table.prefix) if not marker}
    assert not set(writer.versions) - listed, "a version the writer wrote was deleted"
    assert not table.data_before - listed, "a version holding data was deleted"
    others = [key for key in table.wanted if key not in writer.written]
    assert read_all(s3, table.bucket, others) == {key: table.wanted[key] for key in others}, \
        "a deleted key the writer did not touch was not restored"
    assert not s3.list_multipart_uploads(Bucket=table.bucket).get("Uploads")
    print(f"{s3_server.name} {strategy}: {report.summary()['results']}")
    if by_range:
        # the scan's page, then one listing of each range of 16 copied keys (not one listing a key)
        assert report.requests["ListObjectVersions"] <= 1 + 2 * -(-len(table.copied) // 16) < len(table.copied)
        assert report.summary()["results"].get("changed since scan", 0) >= len(writer.worst & set(writer.written))
