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
from typing import Any

import pytest

from airflow_fuse.cli import build_parser
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
    scan_options,
)


def _cli_has_multipart_threshold() -> bool:
    amend_parser = build_parser()._subparsers._group_actions[0].choices["amend"]  # noqa: SLF001
    return any("--multipart-threshold" in action.option_strings for action in amend_parser._actions)  # noqa: SLF001


MULTIPART_CLI = _cli_has_multipart_threshold()


def _restored(s3: Any, table: Table) -> int:
    return sum(1 for key, body in table.wanted.items() if (got := read(s3, table.bucket, key)) is not None
               and sha(got) == sha(body))


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_a_killed_restore_finishes_on_the_next_run(s3_server, s3, strategy):
    # auto: 200 keys deleted (marker removal) and 200 overwritten after as_of (copied back); copy: 400 copies.
    table = arrange(s3, strategy=strategy, small=400, overwritten=200 if strategy == "auto" else 0,
                    large=2 if MULTIPART_CLI and strategy == "copy" else 0)
    multipart = ["--multipart-threshold", str(THRESHOLD)] if MULTIPART_CLI else []
    command = ["amend", table.uri, "--strategy", strategy, "--workers", "4", "--json", *cli_selection(table),
               *multipart]
    half = len(table.copied) // 2
    # Each copy waits 20 ms in the proxy (4 workers: 400 copies take > 2 s), and a multipart copy's last step
    # waits 10 s: the kill lands while copies are in flight and (with multipart) an upload is unfinished.
    with fault_proxy(s3_server, delay=1.0, operations={"CopyObject", "CompleteMultipartUpload"},
                     delay_seconds={"CopyObject": 0.02, "CompleteMultipartUpload": 10.0}) as proxy:
        process = subprocess.Popen([sys.executable, "-m", "airflow_fuse.cli", *command, "--endpoint-url", proxy.url],
                                   env=cli_env(s3_server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proxy.requests["CopyObject"] < half or (
                table.copied & {k for k in table.wanted if "/large/" in k}
                and not proxy.requests["CompleteMultipartUpload"]):
            assert process.poll() is None, f"the restore ended before it could be killed: {process.communicate()}"
            assert time.monotonic() < deadline, f"the restore did not get half way: {dict(proxy.requests)}"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
    done_at_kill = _restored(s3, table)
    assert 0 < done_at_kill < len(table.wanted), f"not killed half way: {done_at_kill} of {len(table.wanted)}"
    if table.copied & {k for k in table.wanted if "/large/" in k}:
        assert s3.list_multipart_uploads(Bucket=table.bucket).get("Uploads"), "no multipart copy was interrupted"

    again = cli(s3_server, *command)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["remaining"] == 0
    assert_whole(s3, table)
    print(f"{s3_server.name} {strategy}: killed with {done_at_kill}/{len(table.wanted)} restored, "
          f"multipart in the CLI: {MULTIPART_CLI}")


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

    def before_forward(self, request: ProxiedRequest) -> None:
        """Write each key just before the restore's own write of it reaches the server (the worst moment)."""
        if request.operation in ("CopyObject", "CreateMultipartUpload") and request.key in self.keys:
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
    writer = Writer(s3, table.bucket, deleted[::5] + sorted(table.healthy)[:5])  # 20 deleted, 5 live keys
    started = threading.Event()

    def before_forward(request: ProxiedRequest) -> None:
        if request.operation == "ListObjectVersions":
            started.set()
        if when != "racing":
            writer.before_forward(request)

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
