"""Start and stop a throw-away Ceph RADOS Gateway (real S3, signatures and bucket policies enforced)."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from airflow_fuse.embedded import S3Server

HERE = Path(__file__).parent
ACCESS_KEY = "cephtestaccesskey"
SECRET_KEY = "cephtestsecretkey"
_CONF_OF: dict[str, Path] = {}  # endpoint URL -> the cluster's ceph.conf, for radosgw-admin


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
        _CONF_OF.pop(f"http://127.0.0.1:{port}", None)
        subprocess.run(["bash", str(HERE / "ceph_s3_down.sh"), directory], timeout=120)

    _CONF_OF[f"http://127.0.0.1:{port}"] = Path(directory) / "ceph.conf"

    return S3Server(
        name="ceph",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        _stop=stop,
    )


def create_user(server: S3Server, uid: str) -> S3Server:
    """Another RGW user on this gateway, as an S3Server to make clients from (stopping it stops nothing).

    The user owns no bucket and may do nothing in the first user's buckets until a bucket policy grants it
    something; in a policy it is the principal :func:`user_arn` names. Asking again for the same ``uid``
    returns its keys.
    """
    env = dict(os.environ, CEPH_CONF=str(_CONF_OF[server.endpoint_url]))
    access_key, secret_key = f"{uid}-{secrets.token_hex(6)}", secrets.token_hex(16)
    created = subprocess.run(
        ["radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}",
         f"--access-key={access_key}", f"--secret={secret_key}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    if created.returncode != 0:
        info = subprocess.run(["radosgw-admin", "user", "info", f"--uid={uid}"], env=env, capture_output=True,
                              text=True, timeout=60)
        if info.returncode != 0:
            raise RuntimeError(f"radosgw-admin could not create user {uid!r}: {created.stderr.strip()}")
        keys = json.loads(info.stdout)["keys"][0]
        access_key, secret_key = keys["access_key"], keys["secret_key"]
    return dataclasses.replace(server, access_key=access_key, secret_key=secret_key, _stop=None)


def user_arn(uid: str) -> str:
    """How a bucket policy names an RGW user of the default (empty) tenant."""
    return f"arn:aws:iam:::user/{uid}"
