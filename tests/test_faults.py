"""Restores through a network that fails: errors, dropped connections, lost responses, delays.

Arrange a deleted table, restore it through tests/servers/fault_proxy.py, and check what a user would:
every key holds its bytes again, no version holding data was lost, no key got more than the one new version
a fault-free restore writes (a lost CopyObject response retried blindly would write two), and no unfinished
multipart upload is left behind. A run may report keys failed; the user runs it again, and at most three
runs make the table whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_fuse.embedded import S3Server
from airflow_fuse.engine import AmendOptions, ScanOptions, amend
from airflow_fuse.errors import FuseError
from tests.conftest import new_bucket
from tests.helpers import all_versions, delete_keys, read, sha
from tests.servers.fault_proxy import fault_proxy

MiB = 1024 * 1024
THRESHOLD = 5 * MiB  # objects of LARGE bytes are copied in two parts (UploadPartCopy)
LARGE = 6 * MiB
MAX_RUNS = 3
ROOT = Path(__file__).resolve().parent.parent
# About 4.5% of requests faulted, every mode.
MIXED = {"error": 0.015, "reset_before": 0.01, "reset_after": 0.01, "delay": 0.01, "delay_seconds": 0.05}


@dataclass
class Table:
    """An arranged table: what must come back, and what the bucket held before the restore."""

    bucket: str
    prefix: str
    wanted: dict[str, bytes]  # key -> the bytes a restore brings back
    copied: set[str]  # keys a fault-free restore copies (one new data version each); the rest are undeleted
    healthy: dict[str, bytes]  # live keys the restore must not touch
    data_before: set[tuple[str, str]] = field(default_factory=set)
    versions_before: list[tuple[str, str, bool]] = field(default_factory=list)
    as_of: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _put_all(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))


def arrange(s3: Any, *, strategy: str, small: int, large: int = 0, healthy: int = 10,
            overwritten: int = 0, roll_back_large: bool = False, prefix: str = "t/") -> Table:
    """Write a table, break it, and record the bucket's state.

    Every small and large key is deleted (a delete marker on top). With ``overwritten``, that many small
    keys (and the large ones with ``roll_back_large``) were instead overwritten after a point in time ``as_of``:
    restoring to ``as_of`` with rollback copies them back, so a restore with strategy auto both removes markers
    and copies.
    """
    bucket = new_bucket(s3)
    wanted = {f"{prefix}part={i % 4}/f{i:04d}.parquet": os.urandom(64 + i % 200) for i in range(small)}
    wanted |= {f"{prefix}large/f{i}.parquet": os.urandom(LARGE) for i in range(large)}
    live = {f"{prefix}healthy/f{i}.parquet": os.urandom(80) for i in range(healthy)}
    _put_all(s3, bucket, {**wanted, **live})
    rolled_back: list[str] = []
    as_of = None
    if overwritten:
        time.sleep(1.2)  # listings give LastModified to the second: as_of must fall strictly between
        as_of = datetime.now(timezone.utc).isoformat()
        time.sleep(1.2)
        rolled_back = sorted(k for k in wanted if "/large/" not in k)[:overwritten]
        rolled_back += sorted(k for k in wanted if "/large/" in k) if roll_back_large else []
        _put_all(s3, bucket, {k: b"overwritten by a bad job " + k.encode() for k in rolled_back})
    delete_keys(s3, bucket, [k for k in wanted if k not in rolled_back])
    copied = set(wanted) if strategy == "copy" else set(rolled_back)
    versions = all_versions(s3, bucket, prefix)
    return Table(bucket, prefix, wanted, copied, live, {(k, v) for k, v, marker in versions if not marker},
                 versions, as_of)


def scan_options(table: Table) -> ScanOptions:
    if table.as_of:
        return ScanOptions(as_of=table.as_of, rollback_overwrites=True)
    return ScanOptions()


def cli_selection(table: Table) -> list[str]:
    return ["--as-of", table.as_of, "--rollback-overwrites"] if table.as_of else []


def read_all(s3: Any, bucket: str, keys: list[str]) -> dict[str, bytes | None]:
    """Each key's current bytes (None: deleted)."""
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(keys, pool.map(lambda k: read(s3, bucket, k), keys), strict=True))


def assert_whole(s3: Any, table: Table) -> None:
    """What a user checks after the restore (read directly from the server, not through the proxy)."""
    got = read_all(s3, table.bucket, list(table.wanted))
    missing = sorted(k for k, body in got.items() if body is None)
    wrong = sorted(k for k, body in got.items() if body is not None and sha(body) != sha(table.wanted[k]))
    assert not missing and not wrong, f"{len(missing)} keys still missing {missing[:5]}, {len(wrong)} with " \
                                      f"wrong bytes {wrong[:5]}"
    versions = all_versions(s3, table.bucket, table.prefix)
    data_after = {(k, v) for k, v, marker in versions if not marker}
    lost = sorted(table.data_before - data_after)
    assert not lost, f"{len(lost)} versions holding data were removed: {lost[:5]}"
    new = Counter(k for k, _ in data_after - table.data_before)
    extra = {k: new[k] for k in table.wanted if new[k] != (1 if k in table.copied else 0)}
    assert not extra, (f"{len(extra)} keys do not have the new data versions a fault-free restore writes (1 per "
                       f"copied key, 0 per undeleted key): {dict(list(extra.items())[:8])}")
    assert set(new) <= set(table.wanted), f"keys outside the plan were written: {sorted(set(new) - set(table.wanted))}"
    untouched = [v for v in table.versions_before if "/healthy/" in v[0]]
    assert [v for v in versions if "/healthy/" in v[0]] == untouched, "a healthy live key was changed"
    uploads = s3.list_multipart_uploads(Bucket=table.bucket).get("Uploads") or []
    assert not uploads, f"unfinished multipart uploads left: {[(u['Key'], u['UploadId']) for u in uploads]}"


def until_whole(run: Callable[[], int]) -> list[Any]:
    """Run a restore again while it reports keys not restored, as a user would; at most MAX_RUNS times.

    ``run`` returns how many keys the run left not restored (or raises: a run that gave up counts as one).
    """
    history: list[Any] = []
    for _ in range(MAX_RUNS):
        try:
            remaining = run()
        except FuseError as exc:
            history.append(f"gave up: {exc}")
            continue
        history.append(remaining)
        if remaining == 0:
            return history
    pytest.fail(f"the table is not whole after {MAX_RUNS} runs: {history}")


def amend_through(server: S3Server, table: Table, strategy: str, *, workers: int = 8) -> Callable[[], int]:
    client = server.client()

    def run() -> int:
        report = amend(client, table=table.uri, scan_options=scan_options(table),
                       options=AmendOptions(strategy=strategy, max_workers=workers, multipart_threshold=THRESHOLD))
        return report.remaining

    return run


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_restore_through_a_faulty_network_converges_with_one_version_per_copy(s3_server, s3, strategy):
    # auto: 240 keys come back by marker removal, 60 rolled back by copy; copy: 300 small and 3 multipart copies
    table = arrange(s3, strategy=strategy, small=300, large=3 if strategy == "copy" else 0,
                    overwritten=60 if strategy == "auto" else 0)
    with fault_proxy(s3_server, seed=8, **MIXED) as proxy:
        runs = until_whole(amend_through(proxy.in_front_of(s3_server), table, strategy))
    assert_whole(s3, table)
    assert proxy.injected > 0, f"no fault was injected ({dict(proxy.requests)}): the test proved nothing"
    print(f"{s3_server.name} {strategy}: runs {runs}, faults {dict(proxy.counts)}, requests {dict(proxy.requests)}")


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_a_second_run_writes_nothing(s3_server, s3, strategy):
    """Running the same restore again (as after a crash, or to be sure) finds the table whole: no new version."""
    table = arrange(s3, strategy=strategy, small=12, large=1, overwritten=4, roll_back_large=True)
    run = amend_through(s3_server, table, strategy)
    assert run() == 0
    assert_whole(s3, table)
    before = all_versions(s3, table.bucket, table.prefix)
    again = amend(s3, table=table.uri, scan_options=scan_options(table),
                  options=AmendOptions(strategy=strategy, multipart_threshold=THRESHOLD))
    wrote = {o.key: o.result for o in again.restore.outcomes if o.result in ("copied", "undeleted")}
    assert not wrote, f"the second run wrote again: {wrote}"
    assert all_versions(s3, table.bucket, table.prefix) == before


@pytest.mark.parametrize(("strategy", "operation", "rate", "limit"), [
    ("copy", "CopyObject", 0.15, None),  # ~20 of 150 copies land but their answers never arrive
    ("auto", "DeleteObjects", 1.0, 1),  # the one batch removes the markers; its answer is lost
    ("copy", "CreateMultipartUpload", 1.0, 1),  # an upload is begun; its id never arrives
    ("copy", "CompleteMultipartUpload", 1.0, 1),  # the new version is made; the answer never arrives
])
def test_lost_responses_are_not_retried_blindly(s3_server, s3, strategy, operation, rate, limit):
    multipart = "Multipart" in operation
    table = arrange(s3, strategy=strategy, small=2 if multipart else 150, large=2 if multipart else 0)
    with fault_proxy(s3_server, seed=3, reset_after=rate, operations={operation}, max_faults=limit) as proxy:
        runs = until_whole(amend_through(proxy.in_front_of(s3_server), table, strategy))
    print(f"{s3_server.name} {operation}: runs {runs}, faults {dict(proxy.faults)}")
    assert proxy.faults["reset_after", operation] > 0, dict(proxy.requests)
    assert_whole(s3, table)


def test_multipart_copy_through_faults_leaves_no_upload_behind(s3_server, s3):
    """Every step of a multipart copy fails or loses its answer now and then."""
    table = arrange(s3, strategy="copy", small=3, large=3)
    multipart = {"CreateMultipartUpload", "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload"}
    with fault_proxy(s3_server, seed=11, error=0.1, reset_before=0.05, reset_after=0.1,
                     operations=multipart) as proxy:
        runs = until_whole(amend_through(proxy.in_front_of(s3_server), table, "copy", workers=4))
    print(f"{s3_server.name} multipart: runs {runs}, faults {dict(proxy.faults)}")
    assert sum(n for (_, op), n in proxy.faults.items() if op in multipart) > 0, dict(proxy.requests)
    assert_whole(s3, table)


def cli_env(server: S3Server) -> dict[str, str]:
    """The environment of the command line run as a user would (credentials from the AWS chain)."""
    return dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
                AWS_DEFAULT_REGION=server.region)


def cli(server: S3Server, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow_fuse.cli", *args, "--endpoint-url", server.endpoint_url],
                          env=cli_env(server), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_through_a_faulty_network_converges(s3_server, s3):
    table = arrange(s3, strategy="copy", small=120)
    outputs: list[str] = []
    with fault_proxy(s3_server, seed=5, **MIXED) as proxy:
        def run() -> int:
            done = cli(proxy.in_front_of(s3_server), "amend", table.uri, "--strategy", "copy", "--workers", "8",
                       "--json", *cli_selection(table))
            outputs.append(done.stderr[-2000:])
            assert done.returncode in (0, 1), done.stderr  # 1: some keys failed, run again
            return json.loads(done.stdout)["remaining"] if done.stdout.strip() else -1

        runs = until_whole(run)
    assert proxy.injected > 0, dict(proxy.requests)
    assert_whole(s3, table)
    print(f"{s3_server.name} CLI: runs {runs}, faults {dict(proxy.counts)}")
