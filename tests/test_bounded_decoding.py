"""A crafted Fuse metadata object must never blow up memory: every decoder works within a cap.

Unit tests give each decoder a payload that declares or inflates to more than its limit; the end-to-end
test puts a zstd bomb (a valid v4 header, a 28 KB frame inflating to 900 MiB) as a new version of a real
Databend table's current snapshot and runs ``airflow-fuse amend`` in a fresh process, measuring its peak
memory.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from airflow_fuse.errors import BadInputError, MetadataError
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.fuse import FuseLayout
from airflow_fuse.layouts.fuse_format import decode_segment, decode_snapshot
from airflow_fuse.limits import MAX_METADATA_BYTES, METADATA_CAP_ENV, metadata_cap
from airflow_fuse.listing import VersionEntry
from airflow_fuse.plan import build_plan
from airflow_fuse.reader import S3VersionReader
from tests.conftest import new_bucket
from tests.fuse_fixtures import blob, history, latest_puts, load_expect, replay
from tests.helpers import all_versions, read

MIB = 1 << 20
KEY = "tbl/1/6/_ss/h01a20ae93d8c73b689d0d5e3d2c2bb90_v4.mpk"


@pytest.fixture(autouse=True)
def _default_cap(monkeypatch):
    monkeypatch.delenv(METADATA_CAP_ENV, raising=False)


def zstd_bomb(size: int) -> bytes:
    """A zstd frame of ``size`` zero bytes, compressed a MiB at a time (never held whole), streamed as
    Databend streams its frames: no content size in the header."""
    compressor = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    chunk = bytes(MIB)
    parts = [compressor.compress(chunk[:min(MIB, size - start)]) for start in range(0, size, MIB)]
    return b"".join([*parts, compressor.flush()])


def snapshot_bomb(size: int) -> bytes:
    """A ``_ss/*_v4.mpk`` object: a valid v4 header (MessagePack, zstd) and a bomb as its payload."""
    frame = zstd_bomb(size)
    return struct.pack("<QBBQ", 4, 2, 1, len(frame)) + frame


def with_declared_size(frame: bytes, size: int) -> bytes:
    """The same zstd frame, its header now declaring ``size`` bytes of content (true or not): an 8-byte
    Frame_Content_Size field and a window descriptor, the blocks unchanged."""
    descriptor = frame[4]
    assert descriptor & 0b11100011 == 0, "expects a frame with no content size, no dictionary id"
    window = frame[5:6]
    return frame[:4] + bytes([0b11 << 6 | descriptor & 0b100]) + window + struct.pack("<Q", size) + frame[6:]


def snappy_stream(length: int, body: bytes) -> bytes:
    """A raw Snappy stream declaring ``length`` bytes, then ``body`` (its tags)."""
    out = bytearray()
    while True:
        out.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return bytes(out) + body


def snappy_literals(data: bytes) -> bytes:
    """Snappy literal tags holding ``data``, at most 256 bytes each (the length in one extra byte)."""
    return b"".join(bytes([60 << 2, len(data[i:i + 256]) - 1]) + data[i:i + 256] for i in range(0, len(data), 256))


def header(payload: bytes, *, compression: int) -> bytes:
    """A v4 snapshot object around ``payload`` (MessagePack)."""
    return struct.pack("<QBBQ", 4, 2, compression, len(payload)) + payload


def peak_python_memory(call: Callable[[], Any]) -> int:
    """Bytes Python allocated at the peak of ``call`` (zstd's own window buffer is not included)."""
    tracemalloc.start()
    try:
        call()
    except MetadataError:
        pass
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# zstd -----------------------------------------------------------------------------------------------------

def test_a_zstd_bomb_without_a_declared_size_is_refused_having_held_one_chunk():
    bomb = snapshot_bomb(900 * MIB)
    with pytest.raises(MetadataError) as raised:
        decode_snapshot(KEY, bomb)
    message = str(raised.value)
    assert KEY in message and "inflates to more than 268,435,456 bytes" in message
    assert "over the cap" in message and f"{METADATA_CAP_ENV}=512MiB" in message
    assert peak_python_memory(lambda: decode_snapshot(KEY, bomb)) < 4 * MIB


def test_a_zstd_frame_declaring_more_than_the_cap_is_refused_before_inflating():
    frame = with_declared_size(zstd_bomb(900 * MIB), 900 * MIB)
    bomb = header(frame, compression=1)
    assert zstandard.get_frame_parameters(frame).content_size == 900 * MIB
    with pytest.raises(MetadataError, match=f"{KEY}.*its zstd frame declares 943,718,400 bytes of content, over "
                                            "the cap"):
        decode_snapshot(KEY, bomb)
    assert peak_python_memory(lambda: decode_snapshot(KEY, bomb)) < MIB


@pytest.mark.parametrize("declared_minus_actual", [-1, 1, 1000])
def test_a_zstd_frame_that_inflates_to_other_than_it_declares_is_damage(declared_minus_actual):
    body = msgpack.packb({"segments": [], "summary": {"row_count": 1}})
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(body)
    assert decode_snapshot(KEY, header(with_declared_size(frame, len(body)), compression=1)).row_count == 1
    lying = header(with_declared_size(frame, len(body) + declared_minus_actual), compression=1)
    with pytest.raises(MetadataError, match=f"{KEY}.*does not inflate to the {len(body) + declared_minus_actual:,} "
                                            "bytes its frame declares"):
        decode_snapshot(KEY, lying)


def test_a_zstd_frame_asking_for_a_huge_window_is_refused():
    body = msgpack.packb({"segments": [], "summary": {}})
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(body)
    assert frame[4] == 0  # no single-segment flag: byte 5 is the window descriptor (log2 - 10, times 8)

    def asking_for(window_log: int) -> bytes:
        data = header(frame[:5] + bytes([(window_log - 10) << 3]) + frame[6:], compression=1)
        assert zstandard.get_frame_parameters(data[18:]).window_size == 1 << window_log
        return data

    # more than zstd's default limit: no Databend build could read it back either, whatever the cap
    with pytest.raises(MetadataError, match=f"{KEY}.*268,435,456-byte window, more than zstd "
                                            "decoders accept by default"):
        decode_snapshot(KEY, asking_for(28), max_bytes=1 << 30)
    # 64 MiB: over a 16 MiB cap, within a 128 MiB one
    with pytest.raises(MetadataError, match=f"{KEY}.*asks for a 67,108,864-byte window, over the cap"):
        decode_snapshot(KEY, asking_for(26), max_bytes=16 * MIB)
    assert decode_snapshot(KEY, asking_for(26), max_bytes=128 * MIB).segments == []


# snappy ---------------------------------------------------------------------------------------------------

def test_snappy_decodes_up_to_the_cap_and_not_one_byte_further():
    padding = bytes(64 * 1001)
    body = msgpack.packb({"segments": [], "summary": {}, "padding": padding})
    # the body up to the first 64 padding bytes as literals, then 1000 copies of those 64 bytes (3 bytes each)
    stream = snappy_stream(len(body), snappy_literals(body[:len(body) - len(padding) + 64])
                           + bytes([(63 << 2) | 2, 64, 0]) * 1000)
    data = header(stream, compression=2)
    assert len(stream) * 20 < len(body)  # a 20-fold ratio, as a crafted stream may have
    assert decode_snapshot(KEY, data, max_bytes=len(body)).segments == []
    with pytest.raises(MetadataError, match=f"{KEY}.*its snappy data declares {len(body):,} bytes, over the cap"):
        decode_snapshot(KEY, data, max_bytes=len(body) - 1)


def test_snappy_declaring_more_than_its_bytes_can_hold_is_damage():
    # 1 GiB declared, over the default cap: refused as over the cap, before any output
    with pytest.raises(MetadataError, match="its snappy data declares 1,073,741,824 bytes, over the cap"):
        decode_snapshot(KEY, header(snappy_stream(1 << 30, b"\x00a"), compression=2))
    # 1 MiB declared by a 10-byte stream: no Snappy stream inflates 100,000-fold
    with pytest.raises(MetadataError, match="snappy data is corrupt .claims 1048576 bytes, more than"):
        decode_snapshot(KEY, header(snappy_stream(MIB, b"\x00a"), compression=2))


# MessagePack ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, head", [("array", b"\xdd"), ("map", b"\xdf"), ("str", b"\xdb"), ("bin", b"\xc6"),
                                        ("ext", b"\xc9")])
def test_a_few_bytes_of_messagepack_cannot_declare_a_huge_container(kind, head):
    """A 4 GiB container in 15 bytes: refused before anything is allocated for it. A container's length is
    limited by the bytes it came in (a string's bytes must all be there; an array or map would be allocated
    from its header, so its limit is the payload size)."""
    payload = head + struct.pack(">I", 0xFFFF_FFF0) + b"\x01" * 10
    refusal = f"exceeds max_{kind}_len.{len(payload) // 2 if kind == 'map' else len(payload)}" \
        if kind in ("array", "map") else "incomplete input"
    for data in (header(payload, compression=0),
                 header(zstandard.ZstdCompressor(write_content_size=False).compress(payload), compression=1)):
        with pytest.raises(MetadataError, match=f"{KEY}.*invalid MessagePack.*{refusal}"):
            decode_snapshot(KEY, data)
        assert peak_python_memory(lambda data=data: decode_snapshot(KEY, data)) < 2 * MIB  # a chunk, at most


# column-oriented segments (Parquet) -----------------------------------------------------------------------

def column_segment(table: pa.Table) -> bytes:
    """A ``.col`` segment: the block metas as Parquet, an empty summary, the 18-byte trailer."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="none", use_dictionary=True)
    parquet, summary = sink.getvalue(), msgpack.packb({"row_count": 0})
    return parquet + summary + struct.pack("<BBQQ", 2, 0, len(parquet), len(summary))


def test_column_oriented_block_metas_cannot_expand_past_the_cap():
    # one 8 KB location, dictionary-encoded, 4096 rows: a file of a few KB that decodes to 32 MiB
    location = "1/6/_b/" + "x" * 8192
    table = pa.table({"location": pa.array([location] * 4096), "row_count": pa.array([1] * 4096, pa.uint64())})
    data = column_segment(table)
    assert len(data) < 16 * 1024
    assert len(decode_segment("tbl/1/6/_sg/s.col", data, max_bytes=64 * MIB).blocks) == 4096
    with pytest.raises(MetadataError, match=r"tbl/1/6/_sg/s.col.*block metas decode to more than .* over the cap"):
        decode_segment("tbl/1/6/_sg/s.col", data, max_bytes=4 * MIB)
    assert peak_python_memory(lambda: decode_segment("tbl/1/6/_sg/s.col", data, max_bytes=4 * MIB)) < 16 * MIB


# the cap's setting ----------------------------------------------------------------------------------------

def test_the_cap_defaults_to_256_mib_and_is_set_by_an_environment_variable(monkeypatch):
    monkeypatch.delenv(METADATA_CAP_ENV, raising=False)
    assert metadata_cap() == MAX_METADATA_BYTES == 256 * MIB
    for raw, cap in [("1048576", MIB), ("512MiB", 512 * MIB), ("2 GiB", 2 << 30), ("64k", 64 << 10)]:
        monkeypatch.setenv(METADATA_CAP_ENV, raw)
        assert metadata_cap() == cap
    for raw in ("lots", "0", "-5", "1.5GiB"):
        monkeypatch.setenv(METADATA_CAP_ENV, raw)
        with pytest.raises(BadInputError, match=f"{METADATA_CAP_ENV}={raw!r} is not a size"):
            metadata_cap()


# the listed size, before any GET --------------------------------------------------------------------------

class FixtureReader:
    """Serves listed versions' bytes; records every version asked for."""

    def __init__(self, bodies: dict[tuple[str, str], bytes]) -> None:
        self.bodies = bodies
        self.asked: list[tuple[str, str]] = []

    def read(self, key: str, version_id: str) -> bytes:
        self.asked.append((key, version_id))
        return self.bodies[(key, version_id)]


def offline_table(name: str, extra: list[tuple[str, int]]) -> tuple[Inventory, FixtureReader]:
    """The fixture's history as a listing, then ``extra`` (key, listed size) versions on top, with no body."""
    when = datetime(2026, 11, 24, tzinfo=timezone.utc)
    entries, bodies = [], {}
    operations = [(op["key"], op["op"] == "delete", op["size"], op.get("blob")) for op in history(name)]
    for i, (key, is_marker, size, digest) in enumerate([*operations, *((k, False, s, None) for k, s in extra)]):
        version_id = f"v{i:04d}"
        entries.append(VersionEntry(key, version_id, is_marker, False, size, when, ""))
        if digest is not None:
            bodies[(key, version_id)] = blob(name, digest)
    entries.sort(key=lambda e: (e.key, -int(e.version_id[1:])))
    entries = [replace(e, is_latest=i == 0 or entries[i - 1].key != e.key) for i, e in enumerate(entries)]
    return Inventory.from_entries("offline", "", entries), FixtureReader(bodies)


def test_a_version_listed_over_the_cap_is_damage_and_never_read(monkeypatch):
    monkeypatch.setenv(METADATA_CAP_ENV, "1MiB")
    expect = load_expect("fuse_basic")
    key = expect["snapshot_key"]
    inventory, reader = offline_table("fuse_basic", [(key, MIB + 1)])
    oversize = inventory.history(key).current.version_id
    result = FuseLayout().needed(inventory, reader)
    assert (key, oversize) not in reader.asked
    (snapshot,) = [obj for obj in result.needed if obj.key == key]
    assert snapshot.bad_versions == frozenset({oversize})
    assert f"version {oversize} is listed at 1,048,577 bytes, over the cap" in snapshot.damaged_reason
    assert {obj.key for obj in result.needed} == set(expect["referenced_keys"])  # the older version was read
    (item,) = [i for i in build_plan(inventory, result, table_format="fuse").items if i.key == key]
    assert item.status == "damaged" and item.action == "copy" and item.version_id != oversize
    assert f"{METADATA_CAP_ENV}=2MiB" in item.reason


def test_when_every_version_is_over_the_cap_the_plan_says_which_and_how_to_raise_it(monkeypatch):
    monkeypatch.setenv(METADATA_CAP_ENV, "1MiB")
    expect = load_expect("fuse_basic")
    segment = sorted(expect["referenced_by_kind"]["segment"])[0]
    others = [k for k in latest_puts("fuse_basic") if k != segment]
    inventory, reader = offline_table("fuse_basic", [])
    entries = [replace(e, size=5 * MIB) if e.key == segment else e
               for k in inventory.keys() for e in inventory.history(k).entries]
    inventory = Inventory.from_entries("offline", "", entries)
    result = FuseLayout().needed(inventory, reader)
    assert all(key != segment for key, _ in reader.asked) and others
    assert any(segment in w and "5,242,880 bytes, over the cap" in w and METADATA_CAP_ENV in w
               for w in result.info["warnings"])
    (item,) = [i for i in build_plan(inventory, result, table_format="fuse").items if i.key == segment]
    assert item.status == "unrecoverable"
    assert "5,242,880 bytes, over the cap" in item.reason and f"{METADATA_CAP_ENV}=2MiB" in item.reason


# the reader -----------------------------------------------------------------------------------------------

class _Client:
    def __init__(self, body: bytes, content_length: int | None) -> None:
        self.body, self.content_length, self.bodies = body, content_length, []

    def get_object(self, **_: Any) -> dict[str, Any]:
        body = io.BytesIO(self.body)
        self.bodies.append(body)
        response: dict[str, Any] = {"Body": body}
        if self.content_length is not None:
            response["ContentLength"] = self.content_length
        return response


def test_the_reader_refuses_a_body_over_the_cap_whatever_the_listing_said():
    client = _Client(b"x" * 100, content_length=100)
    with pytest.raises(MetadataError, match="'k': version v1 is 100 bytes, over the cap"):
        S3VersionReader(client, "b", max_bytes=99).read("k", "v1")
    assert client.bodies[0].closed  # refused on the declared length, unread
    client = _Client(b"x" * 100, content_length=None)
    with pytest.raises(MetadataError, match="'k': version v1 is more than 99 bytes, over the cap"):
        S3VersionReader(client, "b", max_bytes=99).read("k", "v1")
    assert client.bodies[0].tell() == 100  # read no further than the cap and one byte
    assert S3VersionReader(_Client(b"x" * 99, 99), "b", max_bytes=99).read("k", "v1") == b"x" * 99


# end to end -----------------------------------------------------------------------------------------------

# The measuring parent: a small process that starts the command and reports the command's own peak RSS. A
# child started straight from pytest would be charged pytest's RSS at the fork (Linux carries the forked
# address space's high-water mark across exec), so the figure would depend on the tests run before.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_pid, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss * 1024))  # KiB on Linux
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _amend_in_a_fresh_process(server, table: str, workdir: Path) -> tuple[int, int, str, str]:
    """(exit status, peak RSS in bytes, stdout, stderr) of one ``airflow-fuse amend`` process."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_DEFAULT_REGION="us-east-1")
    env.pop(METADATA_CAP_ENV, None)  # the default cap
    command = [sys.executable, "-m", "airflow_fuse.cli", "amend", table, "--json", "--endpoint-url",
               server.endpoint_url]
    peak = workdir / "peak_rss"
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(peak), *command], env=env, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, int(peak.read_text()), done.stdout, done.stderr


def test_a_zstd_bomb_as_the_current_snapshot_is_damage_and_memory_stays_bounded(s3_server, tmp_path):
    s3 = s3_server.client()
    bucket = new_bucket(s3)
    replay(s3, bucket, "fuse_basic")
    expect = load_expect("fuse_basic")
    key = expect["snapshot_key"]
    good = read(s3, bucket, key)
    bomb = snapshot_bomb(900 * MIB)
    assert len(bomb) < 32 * 1024
    s3.put_object(Bucket=bucket, Key=key, Body=bomb)
    before = all_versions(s3, bucket)

    status, peak, stdout, stderr = _amend_in_a_fresh_process(s3_server, f"s3://{bucket}/{expect['storage_root']}",
                                                             tmp_path)
    print(f"peak RSS of airflow-fuse amend with a 900 MiB zstd bomb ({s3_server.name}): {peak / MIB:.0f} MiB")

    assert status == 0, stderr
    summary = json.loads(stdout)
    assert summary["damaged"] == 1 and summary["remaining"] == 0, summary
    assert read(s3, bucket, key) == good  # the good snapshot is current again
    assert set(before) <= set(all_versions(s3, bucket))  # every older version, the bomb included, is kept
    assert peak < 300 * 1000 * 1000, f"peak RSS {peak / MIB:.0f} MiB"
