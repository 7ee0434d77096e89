"""Decoding Databend Fuse metadata: snapshots, segments and the last-snapshot hint file.

Pure functions over bytes (no S3): the layout reads a version and hands its bytes here. Every failure
raises MetadataError naming the key and what is wrong, so a damaged version can be told from a good one.

Encodings (see the format reference): v4+ objects are a little-endian header, then a payload that is
MessagePack (or JSON) and usually zstd-compressed; v0-v2 are JSON; v3 is positional bincode, which we
do not decode. MessagePack structs are maps keyed by field name, so fields are read by name and
unknown ones ignored: newer Databend builds add fields without breaking this reader.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from airflow_fuse.errors import MetadataError
from airflow_fuse.limits import metadata_cap, over_cap_advice

# Bounded decoding: every decoder below works within one budget per object (the cap, see limits.py):
# decompressed bytes are counted against it before they are kept, and MessagePack and Parquet get limits
# derived from the bytes they are given, so a small object cannot declare a huge string or container.
_CHUNK = 1 << 20
# A zstd stream is decoded through a window buffer as large as its frame asks for. Databend's frames ask
# for 2 MiB; allow what the cap allows, never less than the 8 MiB of zstd's slowest levels, and never more
# than zstd's own default limit (128 MiB), which Databend's decoder applies too.
_ZSTD_MAX_WINDOW, _ZSTD_MIN_WINDOW = 1 << 27, 1 << 23
# Raw Snappy writes at most 64 bytes per 3-byte copy: no stream inflates more than 22-fold.
_SNAPPY_MAX_RATIO = 22

ENCODING_BINCODE, ENCODING_MSGPACK, ENCODING_JSON = 1, 2, 3
COMPRESSION_NONE, COMPRESSION_ZSTD, COMPRESSION_SNAPPY = 0, 1, 2
_ENCODING_NAMES = {ENCODING_BINCODE: "bincode", ENCODING_MSGPACK: "MessagePack", ENCODING_JSON: "JSON"}

# u64 format_version | u8 encoding | u8 compression | u64 payload_len
_SNAPSHOT_HEADER = struct.Struct("<QBBQ")
# u64 format_version | u8 encoding | u8 compression | u64 blocks_len | u64 summary_len
_SEGMENT_HEADER = struct.Struct("<QBBQQ")
# trailer of a column-oriented segment: u8 encoding | u8 compression | u64 blocks_len | u64 summary_len
_COLUMN_SEGMENT_TRAILER = struct.Struct("<BBQQ")
# Header format versions we accept: 3 (bincode, refused with advice) up to a margin above today's 5.
_HEADER_VERSIONS = range(3, 16)

PREFIX_ADVICE = ("restore this table with table_format='prefix' instead (every key under the table root, "
                 "optionally only those deleted inside a time window)")

_UUID_HEX_RE = re.compile(r"^[0-9a-f]{32}$")
# snapshot file names: h<uuid7>_v4.mpk, <uuid4>_v4.mpk, <uuid>_v3.bincode, <uuid>_v2.json, <uuid>_v1.json,
# <uuid> (v0); older builds may have written the dashed form of the UUID.
_SNAPSHOT_NAME_RE = re.compile(
    r"^(?P<h>h?)(?P<id>[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})"
    r"(?P<suffix>_v\d+\.[a-z]+)?$"
)
SNAPSHOT_SUFFIXES = {0: "", 1: "_v1.json", 2: "_v2.json", 3: "_v3.bincode", 4: "_v4.mpk", 5: "_v5.mpk"}

Location = tuple[str, int]  # (path relative to the storage root, format version of the object)


class UnsupportedFormatError(MetadataError):
    """Metadata in a format airflow-fuse does not decode (v3 bincode): not damage, so never a bad version."""


# models ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BlockMeta:
    """One data block as its segment describes it, with the index files that belong to it."""

    location: str
    file_size: int | None = None
    row_count: int | None = None
    block_size: int | None = None  # uncompressed bytes
    bloom_index_location: str | None = None
    bloom_index_size: int | None = None
    inverted_index_size: int | None = None  # all inverted indexes of the block together; None: not recorded
    ngram_index_size: int | None = None  # lives inside the bloom index file
    vector_index_location: str | None = None
    vector_index_size: int | None = None
    spatial_index_location: str | None = None
    spatial_index_size: int | None = None
    virtual_location: str | None = None
    virtual_size: int | None = None
    granule_index_files: tuple[tuple[str, int | None], ...] = ()  # (location, size) of granule marks files

    @property
    def block_id(self) -> str:
        return block_id_from_location(self.location)


@dataclass(slots=True)
class Segment:
    format_version: int
    blocks: list[BlockMeta]
    row_count: int | None = None
    block_count: int | None = None
    stats_location: str | None = None  # summary.additional_stats_meta.location: the segment's _hs file
    stats_size: int | None = None
    column_oriented: bool = False


@dataclass(slots=True)
class Snapshot:
    format_version: int
    snapshot_id: str | None  # 32 lowercase hex digits
    segments: list[Location]
    prev_snapshot_id: tuple[str, int] | None = None  # (id as hex, format version of that snapshot)
    table_statistics_location: str | None = None
    row_count: int | None = None
    block_count: int | None = None
    compressed_byte_size: int | None = None
    uncompressed_byte_size: int | None = None
    index_size: int | None = None
    timestamp: str | None = None
    stats_location: str | None = None  # summary.additional_stats_meta.location, when not inline


@dataclass(frozen=True, slots=True)
class IndexInfo:
    name: str
    version: str
    index_type: str | None = None  # "Inverted", "Ngram", ...; None when the hint does not say

    @property
    def is_inverted(self) -> bool:
        # Older hints carry no type: treat the index as possibly inverted (the layout keeps only files
        # that the listing shows were written).
        return self.index_type is None or self.index_type.lower() == "inverted"


@dataclass(slots=True)
class Hint:
    """A ``last_snapshot_location_hint[_v2]`` file: where the current snapshot is, and the table's indexes."""

    snapshot_full_path: str  # the operator root plus the snapshot location, e.g. "/tbl/1/6/_ss/h01..._v4.mpk"
    indexes: dict[str, IndexInfo] = field(default_factory=dict)
    legacy: bool = False  # the plain-text hint of older builds (no index information)

    @property
    def inverted_indexes(self) -> list[IndexInfo]:
        return [index for index in self.indexes.values() if index.is_inverted]


# names ----------------------------------------------------------------------------------------------

def _trim_object_prefix(name: str) -> str:
    # Newer builds put an "h" before the UUID of objects that vacuum may delete; the id is after it.
    return name[1:] if name.startswith("h") and _UUID_HEX_RE.match(name[1:33]) else name


def block_id_from_location(location: str) -> str:
    """The UUID (32 hex digits) naming a block, as Databend derives index file names from it."""
    return _trim_object_prefix(location.rsplit("/", 1)[-1])[:32]


def inverted_index_location(block_location: str, index_name: str, index_version: str) -> str:
    """``<table prefix>/_i_i/<index name>/<version[:7]>/<block uuid>_v0.index``, as Databend derives it."""
    parts = block_location.split("/")
    table_prefix = "/".join(parts[:-2])
    return f"{table_prefix}/_i_i/{index_name}/{index_version[:7]}/{block_id_from_location(block_location)}_v0.index"


def snapshot_id_from_name(name: str) -> str | None:
    """The snapshot id (32 lowercase hex digits) in a ``_ss/`` file name, or None if it is not one."""
    match = _SNAPSHOT_NAME_RE.match(name)
    return match.group("id").replace("-", "").lower() if match else None


def uuid_version(hex_id: str) -> int | None:
    """The UUID version digit (7 for time-ordered ids, 4 for random ones)."""
    return int(hex_id[12], 16) if _UUID_HEX_RE.match(hex_id) else None


def snapshot_file_names(snapshot_id: str, format_version: int) -> list[str]:
    """Candidate ``_ss/`` file names of a snapshot, most likely first (Databend's own naming rule first)."""
    suffix = SNAPSHOT_SUFFIXES.get(format_version, f"_v{format_version}.mpk")
    dashed = f"{snapshot_id[:8]}-{snapshot_id[8:12]}-{snapshot_id[12:16]}-{snapshot_id[16:20]}-{snapshot_id[20:]}"
    plain, prefixed = f"{snapshot_id}{suffix}", f"h{snapshot_id}{suffix}"
    ordered = [prefixed, plain] if uuid_version(snapshot_id) == 7 else [plain, prefixed]
    return [*ordered, f"{dashed}{suffix}"]


# low-level decoding ---------------------------------------------------------------------------------

def _error(key: str, what: str) -> MetadataError:
    return MetadataError(f"cannot decode Fuse metadata {key!r}: {what}")


@dataclass(slots=True)
class _Budget:
    """The bytes one object may still decompress to: the cap holds for the object, not for each payload."""

    key: str
    cap: int
    used: int = 0

    @property
    def left(self) -> int:
        return self.cap - self.used

    def over(self, what: str) -> MetadataError:
        return _error(self.key, f"{what}, over the cap; {over_cap_advice(self.cap)}")


def _budget(key: str, data: bytes, max_bytes: int | None) -> _Budget:
    budget = _Budget(key, metadata_cap() if max_bytes is None else max_bytes)
    if len(data) > budget.cap:
        raise budget.over(f"the object is {len(data):,} bytes")
    return budget


def _decompress_zstd(budget: _Budget, payload: bytes) -> bytes:
    """One zstd frame, never inflated past the budget: a frame that declares its content size is decoded into
    a buffer of exactly that size (and is damage if it inflates to anything else); one that does not (as
    Databend writes them) is first streamed a chunk at a time, keeping nothing, to learn its size."""
    key, limit, declared = budget.key, budget.left, None
    try:
        frame = zstandard.get_frame_parameters(payload)
        if frame.window_size > _ZSTD_MAX_WINDOW:
            raise _error(key, f"its zstd frame asks for a {frame.window_size:,}-byte window, more than zstd decoders "
                              f"accept by default ({_ZSTD_MAX_WINDOW:,} bytes; Databend's too)")
        declared = frame.content_size
        if declared == zstandard.CONTENTSIZE_UNKNOWN:
            declared = None
            if frame.window_size > max(limit, _ZSTD_MIN_WINDOW):
                raise budget.over(f"its zstd frame asks for a {frame.window_size:,}-byte window")
            size = _zstd_inflated_size(payload, limit)
            if size > limit:
                raise budget.over(f"its zstd payload inflates to more than {limit:,} bytes")
        elif declared > limit:
            raise budget.over(f"its zstd frame declares {declared:,} bytes of content")
        else:
            size = declared
        out = zstandard.ZstdDecompressor().decompress(payload, max_output_size=max(size, 1),
                                                       read_across_frames=False, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        if declared is not None:
            raise _error(key, f"zstd data is corrupt or does not inflate to the {declared:,} bytes its frame "
                              f"declares ({exc})") from None
        raise _error(key, f"zstd data is corrupt ({exc})") from None
    if len(out) != size:  # zstd checks a declared size itself; this is the same rule, said once more
        raise _error(key, f"zstd data inflates to {len(out):,} bytes, expected {size:,}")
    budget.used += len(out)
    return out


def _zstd_inflated_size(payload: bytes, limit: int) -> int:
    """The bytes a frame without a declared size inflates to, or the first count past ``limit``; memory: the
    frame's window and one chunk."""
    window = min(_ZSTD_MAX_WINDOW, max(limit, _ZSTD_MIN_WINDOW))  # checked from the header; zstd checks again
    total = 0
    with zstandard.ZstdDecompressor(max_window_size=window).stream_reader(payload, read_across_frames=False) as r:
        while chunk := r.read(_CHUNK):
            total += len(chunk)
            if total > limit:
                break
    return total


def _decompress_snappy(budget: _Budget, data: bytes) -> bytearray:
    """Raw (unframed) Snappy, as Databend's dev builds write it. Small and rare, so pure Python."""
    key = budget.key
    try:
        pos, length, shift = 0, 0, 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 35:
                raise ValueError("bad length")
        if length > budget.left:
            raise OverflowError(length)
        if length > _SNAPPY_MAX_RATIO * len(data):
            raise ValueError(f"claims {length} bytes, more than {len(data)} compressed bytes can hold")
        out = bytearray()
        while pos < len(data):
            tag = data[pos]
            pos += 1
            kind = tag & 3
            if kind == 0:  # literal
                size = tag >> 2
                if size >= 60:
                    extra = size - 59
                    size = int.from_bytes(data[pos:pos + extra], "little")
                    pos += extra
                size += 1
                if pos + size > len(data):
                    raise ValueError("literal runs past the end")
                out += data[pos:pos + size]
                pos += size
            else:
                if kind == 1:
                    size = ((tag >> 2) & 7) + 4
                    offset = ((tag >> 5) << 8) | data[pos]
                    pos += 1
                else:
                    width = 2 if kind == 2 else 4
                    size = (tag >> 2) + 1
                    offset = int.from_bytes(data[pos:pos + width], "little")
                    pos += width
                if offset == 0 or offset > len(out):
                    raise ValueError("copy reaches before the start")
                # A copy may overlap its own output: it then repeats the last ``offset`` bytes.
                start = len(out) - offset
                out += out[start:start + size] if size <= offset else (out[start:] * (size // offset + 1))[:size]
            if len(out) > length:
                raise ValueError("output longer than declared")
        if len(out) != length:
            raise ValueError(f"{len(out)} bytes decoded, {length} declared")
    except OverflowError:
        raise budget.over(f"its snappy data declares {length:,} bytes") from None
    except (IndexError, ValueError) as exc:
        raise _error(key, f"snappy data is corrupt ({exc})") from None
    budget.used += length
    return out  # a bytearray: MessagePack and JSON read it as it is, without a second copy


def _decompress(budget: _Budget, compression: int, payload: bytes) -> bytes | bytearray:
    if compression == COMPRESSION_NONE:
        return payload
    if compression == COMPRESSION_ZSTD:
        return _decompress_zstd(budget, payload)
    if compression == COMPRESSION_SNAPPY:
        return _decompress_snappy(budget, payload)
    raise _error(budget.key, f"unknown compression {compression} (known: 0 none, 1 zstd, 2 snappy)")


def _decode(key: str, encoding: int, data: bytes | bytearray) -> Any:
    if encoding == ENCODING_MSGPACK:
        return _unpack_msgpack(key, data)
    if encoding == ENCODING_JSON:
        return _json(key, data)
    if encoding == ENCODING_BINCODE:
        raise UnsupportedFormatError(f"cannot decode Fuse metadata {key!r}: it is bincode-encoded (Databend v3 "
                                     f"metadata), which airflow-fuse does not read; {PREFIX_ADVICE}")
    raise _error(key, f"unknown encoding {encoding} (known: 1 bincode, 2 MessagePack, 3 JSON)")


def _unpack_msgpack(key: str, data: bytes | bytearray) -> Any:
    # Every string, binary and element takes at least one byte of the input (a map entry two), so no
    # container may declare more than that: a few bytes cannot make the unpacker allocate gigabytes.
    # (msgpack's own guidance; unpackb derives the same limits, stated here so they cannot go away.)
    size = len(data)
    try:
        # Maps keyed by column id have integer keys; UUIDs are 16-byte binaries.
        return msgpack.unpackb(data, strict_map_key=False, raw=False, max_str_len=size, max_bin_len=size,
                               max_array_len=size, max_map_len=size // 2, max_ext_len=size)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _error(key, f"invalid MessagePack ({type(exc).__name__}: {exc})") from None


def _json(key: str, data: bytes | bytearray) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _error(key, f"invalid JSON ({exc})") from None


def _payload(budget: _Budget, data: bytes, encoding: int, compression: int) -> Any:
    return _decode(budget.key, encoding, _decompress(budget, compression, data))


def _check_header(key: str, version: int, encoding: int) -> None:
    if version not in _HEADER_VERSIONS:
        raise _error(key, f"unsupported format version {version} in the header (not a Fuse v4 object, or damaged)")
    if encoding not in _ENCODING_NAMES:
        raise _error(key, f"unknown encoding {encoding} in the header (known: 1 bincode, 2 MessagePack, 3 JSON)")


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


# field access ---------------------------------------------------------------------------------------

def _map(key: str, value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise _error(key, f"{what} is a {type(value).__name__}, expected a map")
    return value


def _int(key: str, obj: dict, name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(key, f"field {name!r} is {value!r}, expected a non-negative integer")
    return value


def _location(key: str, value: Any, what: str) -> Location | None:
    """A location in any of its encodings: ``[path, version]``, ``{path, format_version}`` (column-oriented),
    ``{path, meta_size}`` (v0 blocks), or a bare path (v0 snapshots). Empty paths mean "none"."""
    if value is None:
        return None
    version: Any = 0
    if isinstance(value, (list, tuple)) and len(value) == 2:
        path, version = value
    elif isinstance(value, dict) and "path" in value:
        path, version = value["path"], value.get("format_version", 0)
    elif isinstance(value, str):
        path = value
    else:
        raise _error(key, f"{what} is {value!r}, expected a location [path, version]")
    if not isinstance(path, str) or isinstance(version, bool) or not isinstance(version, int):
        raise _error(key, f"{what} is {value!r}, expected a location [path, version]")
    return (path, version) if path else None


def _path(key: str, value: Any, what: str) -> str | None:
    location = _location(key, value, what)
    return None if location is None else location[0]


def _uuid_hex(key: str, value: Any, what: str) -> str:
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return bytes(value).hex()
    if isinstance(value, str):
        text = value.replace("-", "").lower()
        if _UUID_HEX_RE.match(text):
            return text
    if isinstance(value, (list, tuple)) and len(value) == 16 and all(isinstance(b, int) for b in value):
        return bytes(value).hex()  # a UUID serialised as a sequence of 16 integers
    raise _error(key, f"{what} is {value!r}, expected a UUID")


# snapshots ------------------------------------------------------------------------------------------

def decode_snapshot(key: str, data: bytes, *, max_bytes: int | None = None) -> Snapshot:
    """Decode a ``_ss/`` snapshot object: v4+ (header + MessagePack/JSON) or v0-v2 JSON. v3 is refused.

    ``max_bytes``: the cap on the object and what it decompresses to (default: ``limits.metadata_cap()``)."""
    name = key.rsplit("/", 1)[-1]
    budget = _budget(key, data, max_bytes)
    if name.endswith(".bincode"):
        raise UnsupportedFormatError(f"cannot decode Fuse metadata {key!r}: it is a Databend v3 (bincode) snapshot, "
                                     f"which airflow-fuse does not read; {PREFIX_ADVICE}")
    if name.endswith(".json") or _looks_like_json(data):
        body = _json(key, data)
        header_version = None
    else:
        if len(data) < _SNAPSHOT_HEADER.size:
            raise _error(key, f"{len(data)} bytes is shorter than the {_SNAPSHOT_HEADER.size}-byte header")
        header_version, encoding, compression, length = _SNAPSHOT_HEADER.unpack_from(data)
        _check_header(key, header_version, encoding)
        end = _SNAPSHOT_HEADER.size + length
        if end != len(data):
            raise _error(key, f"the header declares a {length}-byte payload, the object holds "
                              f"{len(data) - _SNAPSHOT_HEADER.size}")
        body = _payload(budget, data[_SNAPSHOT_HEADER.size:end], encoding, compression)
    return _snapshot_from_map(key, _map(key, body, "the snapshot"), header_version)


def _snapshot_from_map(key: str, body: dict, header_version: int | None) -> Snapshot:
    format_version = _int(key, body, "format_version")
    if format_version is None:
        format_version = header_version if header_version is not None else 0
    raw_segments = body.get("segments")
    if not isinstance(raw_segments, list):
        raise _error(key, f"'segments' is {type(raw_segments).__name__}, expected a list")
    segments: list[Location] = []
    for i, raw in enumerate(raw_segments):
        location = _location(key, raw, f"segments[{i}]")
        if location is None:
            raise _error(key, f"segments[{i}] has an empty path")
        segments.append(location)
    snapshot_id = body.get("snapshot_id")
    summary = _map(key, body.get("summary") or {}, "the snapshot summary")
    stats = summary.get("additional_stats_meta")
    stats_location = _path(key, stats.get("location"), "summary.additional_stats_meta.location") \
        if isinstance(stats, dict) else None
    table_statistics = body.get("table_statistics_location")
    if table_statistics is not None and not isinstance(table_statistics, str):
        table_statistics = _path(key, table_statistics, "table_statistics_location")
    timestamp = body.get("timestamp")
    return Snapshot(
        format_version=format_version,
        snapshot_id=None if snapshot_id is None else _uuid_hex(key, snapshot_id, "snapshot_id"),
        segments=segments,
        prev_snapshot_id=_prev_snapshot_id(key, body.get("prev_snapshot_id")),
        table_statistics_location=table_statistics or None,
        row_count=_int(key, summary, "row_count"),
        block_count=_int(key, summary, "block_count"),
        compressed_byte_size=_int(key, summary, "compressed_byte_size"),
        uncompressed_byte_size=_int(key, summary, "uncompressed_byte_size"),
        index_size=_int(key, summary, "index_size"),
        timestamp=timestamp if isinstance(timestamp, str) else None,
        stats_location=stats_location,
    )


def _prev_snapshot_id(key: str, value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    # v1+: [uuid, format version]; v0: a bare uuid (its snapshot is v0 too)
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], int):
        return _uuid_hex(key, value[0], "prev_snapshot_id"), value[1]
    return _uuid_hex(key, value, "prev_snapshot_id"), 0


# segments -------------------------------------------------------------------------------------------

def decode_segment(key: str, data: bytes, *, max_bytes: int | None = None) -> Segment:
    """Decode a ``_sg/`` segment: ``.col`` (column-oriented), v4 header + payloads, or v0-v2 JSON.

    ``max_bytes``: the cap on the object and what it decompresses to (default: ``limits.metadata_cap()``)."""
    budget = _budget(key, data, max_bytes)
    if key.endswith(".bincode"):
        raise UnsupportedFormatError(f"cannot decode Fuse metadata {key!r}: it is a Databend v3 (bincode) segment, "
                                     f"which airflow-fuse does not read; {PREFIX_ADVICE}")
    if key.endswith(".col"):
        return _decode_column_segment(budget, data)
    if _looks_like_json(data):
        body = _map(key, _json(key, data), "the segment")
        blocks = body.get("blocks")
        summary = body.get("summary") or {}
        version = _int(key, body, "format_version") or 0
    else:
        if len(data) < _SEGMENT_HEADER.size:
            raise _error(key, f"{len(data)} bytes is shorter than the {_SEGMENT_HEADER.size}-byte header")
        version, encoding, compression, blocks_len, summary_len = _SEGMENT_HEADER.unpack_from(data)
        _check_header(key, version, encoding)
        start = _SEGMENT_HEADER.size
        if start + blocks_len + summary_len != len(data):
            raise _error(key, f"the header declares {blocks_len} + {summary_len} payload bytes, the object holds "
                              f"{len(data) - start}")
        blocks = _payload(budget, data[start:start + blocks_len], encoding, compression)
        summary = _payload(budget, data[start + blocks_len:], encoding, compression)
    if not isinstance(blocks, list):
        raise _error(key, f"the block list is a {type(blocks).__name__}, expected a list")
    metas = [_block_from_map(key, _map(key, block, f"blocks[{i}]"), i) for i, block in enumerate(blocks)]
    return _segment(key, version, metas, _map(key, summary, "the segment summary"), column_oriented=False)


def _segment(key: str, version: int, blocks: list[BlockMeta], summary: dict, *, column_oriented: bool) -> Segment:
    stats = summary.get("additional_stats_meta")
    stats_location = stats_size = None
    if isinstance(stats, dict):
        stats_location = _path(key, stats.get("location"), "summary.additional_stats_meta.location")
        stats_size = _int(key, stats, "size") or None  # 0 means "not recorded"
    return Segment(format_version=version, blocks=blocks, row_count=_int(key, summary, "row_count"),
                   block_count=_int(key, summary, "block_count"), stats_location=stats_location,
                   stats_size=stats_size, column_oriented=column_oriented)


def _block_from_map(key: str, block: dict, i: int) -> BlockMeta:
    location = _path(key, block.get("location"), f"blocks[{i}].location")
    if location is None:
        raise _error(key, f"blocks[{i}] has no location")
    virtual = block.get("virtual_block_meta")
    virtual_location = virtual_size = None
    if isinstance(virtual, dict):
        virtual_location = _path(key, virtual.get("virtual_location"), f"blocks[{i}].virtual_block_meta")
        virtual_size = _int(key, virtual, "virtual_column_size") or None
    return BlockMeta(
        location=location,
        file_size=_int(key, block, "file_size"),
        row_count=_int(key, block, "row_count"),
        block_size=_int(key, block, "block_size"),
        bloom_index_location=_path(key, block.get("bloom_filter_index_location"),
                                   f"blocks[{i}].bloom_filter_index_location"),
        bloom_index_size=_int(key, block, "bloom_filter_index_size") or None,  # v1 default 0 means unknown
        inverted_index_size=_int(key, block, "inverted_index_size"),
        ngram_index_size=_int(key, block, "ngram_filter_index_size"),
        vector_index_location=_path(key, block.get("vector_index_location"), f"blocks[{i}].vector_index_location"),
        vector_index_size=_int(key, block, "vector_index_size"),
        spatial_index_location=_path(key, block.get("spatial_index_location"),
                                     f"blocks[{i}].spatial_index_location"),
        spatial_index_size=_int(key, block, "spatial_index_size"),
        virtual_location=virtual_location,
        virtual_size=virtual_size,
        granule_index_files=_granule_files(key, block.get("granule_index"), i),
    )


def _granule_files(key: str, value: Any, i: int) -> tuple[tuple[str, int | None], ...]:
    # Newer builds: granule_index {mins: {location, size, ...} | None, offsets: {location, size, ...}}
    if not isinstance(value, dict):
        return ()
    files: list[tuple[str, int | None]] = []
    for part in ("mins", "offsets"):
        layout = value.get(part)
        if isinstance(layout, dict):
            path = _path(key, layout.get("location"), f"blocks[{i}].granule_index.{part}.location")
            if path:
                files.append((path, _int(key, layout, "size") or None))
    return tuple(files)


_COLUMN_BLOCK_FIELDS = ("location", "file_size", "row_count", "block_size", "bloom_filter_index_location",
                        "bloom_filter_index_size", "inverted_index_size", "ngram_filter_index_size",
                        "vector_index_location", "vector_index_size", "spatial_index_location",
                        "spatial_index_size", "virtual_block_meta")


def _decode_column_segment(budget: _Budget, data: bytes) -> Segment:
    """Parquet of block metas (one row per block), then the summary payload, then an 18-byte trailer."""
    key, size = budget.key, _COLUMN_SEGMENT_TRAILER.size
    if len(data) < size + 4:
        raise _error(key, f"{len(data)} bytes is too short for a column-oriented segment")
    encoding, compression, blocks_len, summary_len = _COLUMN_SEGMENT_TRAILER.unpack_from(data, len(data) - size)
    if encoding not in _ENCODING_NAMES or blocks_len + summary_len + size != len(data):
        raise _error(key, f"the trailer (encoding {encoding}, {blocks_len} + {summary_len} bytes) does not match "
                          f"a {len(data)}-byte column-oriented segment")
    try:
        rows = _block_rows(budget, data[:blocks_len])
    except MetadataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _error(key, f"the block metas are not readable Parquet ({exc})") from None
    blocks = [_block_from_map(key, row, i) for i, row in enumerate(rows)]
    summary = _payload(budget, data[blocks_len:blocks_len + summary_len], encoding, compression)
    return _segment(key, 4, blocks, _map(key, summary, "the segment summary"), column_oriented=True)


def _block_rows(budget: _Budget, parquet_bytes: bytes) -> list[dict[str, Any]]:
    """The block-level columns of the block metas, read a batch at a time within the budget."""
    size = len(parquet_bytes)
    # The footer's strings and lists can be no longer than the file itself.
    parquet = pq.ParquetFile(pa.BufferReader(parquet_bytes), thrift_string_size_limit=max(size, 1),
                             thrift_container_size_limit=max(size, 1))
    # Only the block-level columns: the per-column stat_/meta_ columns are not needed to restore.
    wanted = [name for name in _COLUMN_BLOCK_FIELDS if name in parquet.schema_arrow.names]
    metadata = parquet.metadata
    declared = sum(column.total_uncompressed_size
                   for group in (metadata.row_group(i) for i in range(metadata.num_row_groups))
                   for column in (group.column(j) for j in range(group.num_columns))
                   if column.path_in_schema.split(".", 1)[0] in wanted)
    if declared > budget.left:
        raise budget.over(f"its block metas declare {declared:,} uncompressed bytes")
    # A value is read from a page of the file (Databend writes them uncompressed), so no row holds more
    # than the file's bytes: batches of budget / file size rows stay within the budget each.
    batch_rows = max(1, min(1 << 16, budget.left // (size + 16 * len(wanted))))
    rows: list[dict[str, Any]] = []
    held = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted, use_threads=False):
        held += batch.nbytes
        if held > budget.left:
            raise budget.over(f"its block metas decode to more than {budget.left:,} bytes")
        rows += batch.to_pylist()
    budget.used += held
    return rows


# hint -----------------------------------------------------------------------------------------------

def decode_hint(key: str, data: bytes, *, max_bytes: int | None = None) -> Hint:
    """``last_snapshot_location_hint_v2`` (JSON) or the legacy ``last_snapshot_location_hint`` (plain text)."""
    _budget(key, data, max_bytes)
    if _looks_like_json(data):
        body = _map(key, _json(key, data), "the hint")
        path = body.get("snapshot_full_path")
        if not isinstance(path, str) or not path.strip():
            raise _error(key, f"'snapshot_full_path' is {path!r}, expected a path")
        return Hint(snapshot_full_path=path.strip(), indexes=_indexes(key, body.get("indexes")))
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _error(key, "the legacy hint is not UTF-8 text") from None
    if not text or "\n" in text or "\x00" in text or len(text) > 4096:
        raise _error(key, f"the legacy hint {text[:80]!r} is not a single snapshot path")
    return Hint(snapshot_full_path=text, legacy=True)


def _indexes(key: str, value: Any) -> dict[str, IndexInfo]:
    if value is None:
        return {}
    indexes: dict[str, IndexInfo] = {}
    for name, meta in _map(key, value, "'indexes'").items():
        meta = _map(key, meta, f"indexes[{name!r}]")
        version = meta.get("version")
        index_type = meta.get("index_type", meta.get("type"))
        if not isinstance(name, str) or not isinstance(version, str) or not version:
            raise _error(key, f"indexes[{name!r}] has version {version!r}, expected a string")
        indexes[name] = IndexInfo(name=name, version=version,
                                  index_type=index_type if isinstance(index_type, str) else None)
    return indexes

