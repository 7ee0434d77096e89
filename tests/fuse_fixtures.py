"""The Databend fixtures (tests/fixtures/databend/): replay one into a bucket, or read its objects directly.

Each fixture is the complete object-version history of a bucket that the real Databend engine wrote:
``history.jsonl`` (puts and deletes, in order), ``blobs/<sha256>`` (the bodies) and ``expect.json``
(facts to assert). See that directory's README.
"""

from __future__ import annotations

import hashlib
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any

import msgpack
import zstandard

FIXTURES_DIR = Path(__file__).parent / "fixtures" / "databend"
FIXTURE_NAMES = ("fuse_basic", "fuse_column_oriented", "fuse_compacted", "fuse_indexes", "fuse_legacy",
                 "fuse_purged")


def fixture_dir(name: str | Path) -> Path:
    """A fixture by name, or any fixture directory given as a path (the demo's --fixture)."""
    if isinstance(name, Path):
        return name
    if name not in FIXTURE_NAMES:
        raise ValueError(f"unknown Databend fixture {name!r}; known: {', '.join(FIXTURE_NAMES)}")
    return FIXTURES_DIR / name


@cache
def load_expect(name: str | Path) -> dict[str, Any]:
    return json.loads((fixture_dir(name) / "expect.json").read_text())


@cache
def history(name: str | Path) -> tuple[dict[str, Any], ...]:
    """The fixture's operations in replay order."""
    lines = (fixture_dir(name) / "history.jsonl").read_text().splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


def blob(name: str | Path, sha256: str) -> bytes:
    return (fixture_dir(name) / "blobs" / sha256).read_bytes()


def sha256_of_blob(data: bytes) -> str:
    """The name a body has under ``blobs/``."""
    return hashlib.sha256(data).hexdigest()


def latest_puts(name: str) -> dict[str, bytes]:
    """Each key's newest body, as the engine last wrote it (delete markers ignored)."""
    return {op["key"]: blob(name, op["blob"]) for op in history(name) if op["op"] == "put"}


def replay(s3: Any, bucket: str, name: str | Path) -> None:
    """Make ``bucket`` (versioning Enabled) hold the fixture: same keys, bytes, versions and delete markers."""
    for op in history(name):
        if op["op"] == "put":
            s3.put_object(Bucket=bucket, Key=op["key"], Body=blob(name, op["blob"]))
        else:
            s3.delete_object(Bucket=bucket, Key=op["key"])


# Fuse v4 encoding, written independently of the decoder under test (to craft and damage metadata) ----

def _zstd(data: bytes) -> bytes:
    # Databend's frames carry no content size; neither do ours, so the decoder's streaming path is exercised.
    return zstandard.ZstdCompressor(write_content_size=False).compress(data)


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def encode_snapshot(body: dict[str, Any], *, version: int = 4, encoding: int = 2, compression: int = 1) -> bytes:
    """A ``_ss/*_v4.mpk`` object: u64 version | u8 encoding | u8 compression | u64 length | payload."""
    payload = msgpack.packb(body, use_bin_type=True) if encoding == 2 else json.dumps(body).encode()
    if compression == 1:
        payload = _zstd(payload)
    return struct.pack("<QBBQ", version, encoding, compression, len(payload)) + payload


def unpack_snapshot(data: bytes) -> dict[str, Any]:
    """The MessagePack map inside a v4 snapshot (zstd), to edit and re-encode."""
    _version, _encoding, _compression, length = struct.unpack_from("<QBBQ", data)
    return msgpack.unpackb(_unzstd(data[18:18 + length]), strict_map_key=False, raw=False)


def encode_segment(blocks: list[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """A ``_sg/*_v4.mpk`` object: header, then the zstd MessagePack block list and summary."""
    blocks_payload = _zstd(msgpack.packb(blocks, use_bin_type=True))
    summary_payload = _zstd(msgpack.packb(summary, use_bin_type=True))
    header = struct.pack("<QBBQQ", 4, 2, 1, len(blocks_payload), len(summary_payload))
    return header + blocks_payload + summary_payload


def unpack_segment(data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    _version, _encoding, _compression, blocks_len, summary_len = struct.unpack_from("<QBBQQ", data)
    blocks = msgpack.unpackb(_unzstd(data[26:26 + blocks_len]), strict_map_key=False, raw=False)
    summary = msgpack.unpackb(_unzstd(data[26 + blocks_len:]), strict_map_key=False, raw=False)
    return blocks, summary


# arrange and assert, as the restore tests use them ---------------------------------------------------

def broken_table(s3: Any, name: str) -> tuple[str, dict[str, Any]]:
    """The seed's step 3: the fixture in a new versioned bucket, then every object under its table root deleted."""
    from tests.conftest import new_bucket
    from tests.helpers import all_versions, delete_keys

    bucket = new_bucket(s3)
    replay(s3, bucket, name)
    expect = load_expect(name)
    delete_keys(s3, bucket, sorted({k for k, _, marker in all_versions(s3, bucket, expect["table_root"])
                                    if not marker}))
    return bucket, expect


def assert_restored(s3: Any, bucket: str, name: str, expect: dict[str, Any]) -> None:
    """Every referenced key holds the bytes Databend wrote; every key Databend garbage-collected stays deleted."""
    from tests.helpers import read

    written = {op["key"]: op["blob"] for op in history(name) if op["op"] == "put"}
    for key in expect["referenced_keys"]:
        data = read(s3, bucket, key)
        assert data is not None, f"{key} is still missing"
        assert sha256_of_blob(data) == written[key], f"{key} does not hold the bytes Databend wrote"
    for key in expect["deleted_by_databend"]:
        assert read(s3, bucket, key) is None, f"{key} was garbage-collected by Databend: it must stay deleted"
