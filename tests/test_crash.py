"""A restore killed half way, and a restore racing a writer.

Killed: the ``airflow-fuse amend`` command runs as a subprocess and gets SIGKILL once about half of its
copies have gone out (counted by a proxy that slows copies down so "half way" lasts long enough to hit); the
same command run again must finish the job with nothing lost, no key copied twice, no upload left behind.

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

from airflow_fuse.engine import AmendOptions, amend
from tests.helpers import all_versions, read, sha
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
def test_a_killed_restore_finishes_on_the_next_run(s3_server, s3, strategy):
    # auto: 200 keys deleted (marker removal) and 200 overwritten after as_of (copied back); copy: 400 copies.
    # The command line has no --multipart-threshold: multipart copies are killed in the test below.
    table = arrange(s3, strategy=strategy, small=400, overwritten=200 if strategy == "auto" else 0)
    command = ["amend", table.uri, "--strategy", strategy, "--workers", "4", "--json", *cli_selection(table)]
    # Each copy waits 20 ms in the proxy (4 workers: 200 copies take > 1 s): the kill lands with copies in flight.
    with fault_proxy(s3_server, delay=1.0, delay_seconds=0.02, operations={"CopyObject"}) as proxy:
        process = subprocess.Popen([sys.executable, "-m", "airflow_fuse.cli", *command, "--endpoint-url", proxy.url],
                                   env=cli_env(s3_server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _kill_when(process, lambda: proxy.requests["CopyObject"] >= len(table.copied) // 2, "half of its copies")
    done_at_kill = _restored(s3, table)
    assert 0 < done_at_kill < len(table.wanted), f"not killed half way: {done_at_kill} of {len(table.wanted)}"

    again = cli(s3_server, *command)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["remaining"] == 0
    assert_whole(s3, table)
    print(f"{s3_server.name} {strategy}: killed with {done_at_kill}/{len(table.wanted)} restored")


# The command line cannot lower the multipart threshold: the killed run is the engine in a process of its own.
AMEND = """
import sys
from airflow_fuse.engine import AmendOptions, amend
from airflow_fuse.s3 import make_client
amend(make_client(endpoint_url=sys.argv[2]), table=sys.argv[1],
      options=AmendOptions(strategy="copy", max_workers=4, multipart_threshold=int(sys.argv[3])))
"""


def test_a_killed_multipart_copy_leaves_no_upload_after_the_next_run(s3_server, s3):
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
    """Another job writing to the table: new data on deleted keys, overwrites of live keys."""

    def __init__(self, s3: Any, bucket: str, keys: list[str]) -> None:
        self.s3, self.bucket, self.keys = s3, bucket, set(keys)
        self.written: dict[str, bytes] = {}  # key -> the last bytes written
        self.versions: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def write(self, key: str) -> None:
        body = f"written by the other job at {time.time_ns()} to {key}".encode()
        version = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["VersionId"]
        with self.lock:
            self.written[key] = body
            self.versions.append((key, version))

    def before_forward(self, request: ProxiedRequest, live: set[str]) -> None:
        """Write each deleted key just before the restore's own write of it reaches the server (the worst
        moment); overwrite the ``live`` keys as the restore's first listing goes out."""
        if request.operation == "ListObjectVersions":
            for key in sorted(live - set(self.written)):
                self.write(key)
        elif request.operation in ("CopyObject", "CreateMultipartUpload") and request.key in self.keys:
            self.write(request.key)
        elif request.operation == "DeleteObjects":
            for key in sorted(self.keys - set(self.written)):
                if f"<Key>{key}</Key>".encode() in request.body:
                    self.write(key)

    def race(self, started: threading.Event, seconds: float) -> None:
        """Write every key at random moments while the restore runs."""
        started.wait(30)
        rng = random.Random(7)
        keys = sorted(self.keys)
        rng.shuffle(keys)
        for key in keys:
            time.sleep(rng.uniform(0, 2 * seconds / len(keys)))
            self.write(key)


@pytest.mark.parametrize("when", ["racing", "just before the restore writes"])
@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_data_written_during_a_restore_stays_current(s3_server, s3, strategy, when):
    table = arrange(s3, strategy=strategy, small=100, healthy=10)
    deleted = sorted(table.wanted)
    live = set(sorted(table.healthy)[:5])
    writer = Writer(s3, table.bucket, deleted[::5] + sorted(live))  # 20 deleted keys, 5 live ones
    started = threading.Event()

    def before_forward(request: ProxiedRequest) -> None:
        if request.operation == "ListObjectVersions":
            started.set()
        if when != "racing":
            writer.before_forward(request, live)

    # Copies and marker removals wait 10 ms in the proxy: the restore takes long enough for the writer to race it.
    with fault_proxy(s3_server, delay=1.0, delay_seconds=0.01, operations={"CopyObject", "DeleteObjects"},
                     before_forward=before_forward) as proxy:
        thread = threading.Thread(target=writer.race, args=(started, 1.0)) if when == "racing" else None
        if thread:
            thread.start()
        report = amend(proxy.in_front_of(s3_server).client(), table=table.uri, scan_options=scan_options(table),
                       options=AmendOptions(strategy=strategy, max_workers=4, multipart_threshold=THRESHOLD))
        if thread:
            thread.join()
    if when == "racing":
        for key in sorted(writer.keys - set(writer.written)):  # keys the racing writer did not reach in time
            writer.write(key)
    assert set(writer.written) == writer.keys
    current = {key: read(s3, table.bucket, key) for key in writer.written}
    buried = sorted(key for key, body in writer.written.items() if current[key] != body)
    assert not buried, f"{len(buried)} keys written during the restore do not hold the writer's bytes: {buried[:5]}"
    listed = {(k, v) for k, v, marker in all_versions(s3, table.bucket, table.prefix) if not marker}
    assert not set(writer.versions) - listed, "a version the writer wrote was deleted"
    assert not table.data_before - listed, "a version holding data was deleted"
    others = {key: body for key, body in table.wanted.items() if key not in writer.written}
    assert all(read(s3, table.bucket, key) == body for key, body in others.items()), "a deleted key was not restored"
    assert not s3.list_multipart_uploads(Bucket=table.bucket).get("Uploads")
    print(f"{s3_server.name} {strategy} {when}: {report.summary()['results']}")
