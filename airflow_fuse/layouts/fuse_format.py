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

# A Fuse metadata object is kilobytes to a few megabytes; the cap stops a crafted or corrupted
# object (a zstd bomb, a bogus length) from exhausting memory.
MAX_METADATA_BYTES = 1 << 30

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


def _decompress_zstd(key: str, payload: bytes) -> bytes:
    # Databend's zstd frames carry no content size, so a one-shot decompress() cannot size its output:
    # stream it, a chunk at a time, and stop at the cap.
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    out = bytearray()
    try:
        for start in range(0, len(payload), 4096):
            out += decompressor.decompress(payload[start:start + 4096])
            if len(out) > MAX_METADATA_BYTES:
                raise _error(key, f"decompresses to more than {MAX_METADATA_BYTES} bytes")
    except zstandard.ZstdError as exc:
        raise _error(key, f"zstd data is corrupt ({exc})") from None
    if not decompressor.eof:
        raise _error(key, "zstd data is truncated")
    if decompressor.unused_data:
        raise _error(key, f"{len(decompressor.unused_data)} unexpected bytes after the zstd frame")
    return bytes(out)


def _decompress_snappy(key: str, data: bytes) -> bytes:
    """Raw (unframed) Snappy, as Databend's dev builds write it. Small and rare, so pure Python."""
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
        if length > MAX_METADATA_BYTES:
            raise ValueError(f"claims {length} bytes")
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
                continue
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
            for _ in range(size):  # byte by byte: a copy may overlap its own output
                out.append(out[-offset])
            if len(out) > length:
                raise ValueError("output longer than declared")
        if len(out) != length:
            raise ValueError(f"{len(out)} bytes decoded, {length} declared")
        return bytes(out)
    except (IndexError, ValueError) as exc:
        raise _error(key, f"snappy data is corrupt ({exc})") from None


def _decompress(key: str, compression: int, payload: bytes) -> bytes:
    if compression == COMPRESSION_NONE:
        return payload
    if compression == COMPRESSION_ZSTD:
        return _decompress_zstd(key, payload)
    if compression == COMPRESSION_SNAPPY:
        return _decompress_snappy(key, payload)
    raise _error(key, f"unknown compression {compression} (known: 0 none, 1 zstd, 2 snappy)")


def _decode(key: str, encoding: int, data: bytes) -> Any:
    if encoding == ENCODING_MSGPACK:
        try:
            # Maps keyed by column id have integer keys; UUIDs are 16-byte binaries.
            return msgpack.unpackb(data, strict_map_key=False, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise _error(key, f"invalid MessagePack ({type(exc).__name__}: {exc})") from None
    if encoding == ENCODING_JSON:
        return _json(key, data)
    if encoding == ENCODING_BINCODE:
        raise UnsupportedFormatError(f"cannot decode Fuse metadata {key!r}: it is bincode-encoded (Databend v3 "
                                     f"metadata), which airflow-fuse does not read; {PREFIX_ADVICE}")
    raise _error(key, f"unknown encoding {encoding} (known: 1 bincode, 2 MessagePack, 3 JSON)")


def _json(key: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _error(key, f"invalid JSON ({exc})") from None


def _payload(key: str, data: bytes, encoding: int, compression: int) -> Any:
    return _decode(key, encoding, _decompress(key, compression, data))


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

def decode_snapshot(key: str, data: bytes) -> Snapshot:
    """Decode a ``_ss/`` snapshot object: v4+ (header + MessagePack/JSON) or v0-v2 JSON. v3 is refused."""
    name = key.rsplit("/", 1)[-1]
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
        body = _payload(key, data[_SNAPSHOT_HEADER.size:end], encoding, compression)
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

def decode_segment(key: str, data: bytes) -> Segment:
    """Decode a ``_sg/`` segment: ``.col`` (column-oriented), v4 header + payloads, or v0-v2 JSON."""
    if key.endswith(".bincode"):
        raise UnsupportedFormatError(f"cannot decode Fuse metadata {key!r}: it is a Databend v3 (bincode) segment, "
                                     f"which airflow-fuse does not read; {PREFIX_ADVICE}")
    if key.endswith(".col"):
        return _decode_column_segment(key, data)
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
        blocks = _payload(key, data[start:start + blocks_len], encoding, compression)
        summary = _payload(key, data[start + blocks_len:], encoding, compression)
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


def _decode_column_segment(key: str, data: bytes) -> Segment:
    """Parquet of block metas (one row per block), then the summary payload, then an 18-byte trailer."""
    size = _COLUMN_SEGMENT_TRAILER.size
    if len(data) < size + 4:
        raise _error(key, f"{len(data)} bytes is too short for a column-oriented segment")
    encoding, compression, blocks_len, summary_len = _COLUMN_SEGMENT_TRAILER.unpack_from(data, len(data) - size)
    if encoding not in _ENCODING_NAMES or blocks_len + summary_len + size != len(data):
        raise _error(key, f"the trailer (encoding {encoding}, {blocks_len} + {summary_len} bytes) does not match "
                          f"a {len(data)}-byte column-oriented segment")
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data[:blocks_len]))
        # Only the block-level columns: the per-column stat_/meta_ columns are not needed to restore.
        wanted = [name for name in _COLUMN_BLOCK_FIELDS if name in parquet.schema_arrow.names]
        rows = parquet.read(columns=wanted).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _error(key, f"the block metas are not readable Parquet ({exc})") from None
    blocks = [_block_from_map(key, row, i) for i, row in enumerate(rows)]
    summary = _payload(key, data[blocks_len:blocks_len + summary_len], encoding, compression)
    return _segment(key, 4, blocks, _map(key, summary, "the segment summary"), column_oriented=True)


# hint -----------------------------------------------------------------------------------------------

def decode_hint(key: str, data: bytes) -> Hint:
    """``last_snapshot_location_hint_v2`` (JSON) or the legacy ``last_snapshot_location_hint`` (plain text)."""
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

