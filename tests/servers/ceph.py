"""Start and stop a throw-away Ceph RADOS Gateway (real S3, signatures and bucket policies enforced)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from airflow_fuse.embedded import S3Server

HERE = Path(__file__).parent
ACCESS_KEY = "cephtestaccesskey"
SECRET_KEY = "cephtestsecretkey"


def ceph_available() -> bool:
    return all(shutil.which(b) for b in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ceph(attempts: int = 2) -> S3Server:
    """Start a gateway; a start that fails (rarely: the OSD races the monitor) is retried once."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_ceph()
        except RuntimeError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _start_ceph() -> S3Server:
    if not ceph_available():
        raise RuntimeError(
            "Ceph RADOS Gateway is not installed: apt-get install -y --no-install-recommends "
            "ceph-mon ceph-osd radosgw ceph-common curl (the README test command does this)"
        )
    # Admin socket paths are limited to 107 characters: keep the directory short.
    directory = tempfile.mkdtemp(prefix="cs3", dir="/tmp")
    port = _free_port()
    env = dict(os.environ, S3_ACCESS_KEY=ACCESS_KEY, S3_SECRET_KEY=SECRET_KEY,
               CEPH_MON_PORT=str(_free_port()), CEPH_MEMSTORE_BYTES=str(2 * 1024**3))
    result = subprocess.run(
        ["bash", str(HERE / "ceph_s3_up.sh"), directory, str(port)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        subprocess.run(["bash", str(HERE / "ceph_s3_down.sh"), directory], timeout=60)
        raise RuntimeError(f"Ceph did not start:\n{result.stdout}\n{result.stderr}")

    def stop() -> None:
        subprocess.run(["bash", str(HERE / "ceph_s3_down.sh"), directory], timeout=120)

    return S3Server(
        name="ceph",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        _stop=stop,
    )
