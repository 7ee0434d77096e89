"""Decoding Fuse metadata, checked against what the real Databend engine wrote (the fixtures' bytes)."""

from __future__ import annotations

import json
import struct

import msgpack
import pytest
import zstandard

from airflow_fuse.errors import MetadataError
from airflow_fuse.layouts.fuse_format import (
    UnsupportedFormatError,
    block_id_from_location,
    decode_hint,
    decode_segment,
    decode_snapshot,
    inverted_index_location,
    snapshot_file_names,
    snapshot_id_from_name,
    uuid_version,
)
from tests.fuse_fixtures import (
    FIXTURE_NAMES,
    encode_segment,
    encode_snapshot,
    latest_puts,
    load_expect,
    unpack_segment,
    unpack_snapshot,
)


def _decoded_table(name: str) -> dict:
    """Everything the current snapshot references, decoded straight from the fixture's files."""
    expect, objects = load_expect(name), latest_puts(name)
    root = expect["storage_root"]
    snapshot = decode_snapshot(expect["snapshot_key"], objects[expect["snapshot_key"]])
    hint = decode_hint(expect["hint"]["key"], objects[expect["hint"]["key"]])
    by_kind: dict[str, set[str]] = {"snapshot": {expect["snapshot_key"]}}
    blocks = []
    for location, _version in snapshot.segments:
        segment_key = root + location
        segment = decode_segment(segment_key, objects[segment_key])
        by_kind.setdefault("segment", set()).add(segment_key)
        if segment.stats_location:
            by_kind.setdefault("segment_stats", set()).add(root + segment.stats_location)
            assert segment.stats_size == len(objects[root + segment.stats_location])
        for block in segment.blocks:
            inverted = [root + inverted_index_location(block.location, index.name, index.version)
                        for index in hint.inverted_indexes]
            inverted = [key for key in inverted if key in objects]  # written only for indexed blocks
            entry = {"key": root + block.location, "row_count": block.row_count, "file_size": block.file_size,
                     "segment": segment_key, "bloom_index": root + block.bloom_index_location}
            if inverted:
                entry["inverted_index"] = inverted
            blocks.append(entry)
            by_kind.setdefault("block", set()).add(entry["key"])
            by_kind.setdefault("bloom_index", set()).add(entry["bloom_index"])
            by_kind.setdefault("inverted_index", set()).update(inverted)
            assert block.bloom_index_size == len(objects[entry["bloom_index"]])
            if len(inverted) == 1 and block.inverted_index_size is not None:
                assert block.inverted_index_size == len(objects[inverted[0]])
    return {"snapshot": snapshot, "hint": hint, "blocks": blocks,
            "by_kind": {kind: keys for kind, keys in by_kind.items() if keys}}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_current_snapshot_and_segments_match_the_engine(name):
    expect = load_expect(name)
    table = _decoded_table(name)
    snapshot = table["snapshot"]
    assert snapshot.format_version == 4
    assert expect["snapshot_key"].endswith(f"{snapshot.snapshot_id}_v4.mpk")
    assert (snapshot.row_count, snapshot.block_count, len(snapshot.segments)) == (
        expect["row_count"], expect["block_count"], expect["segment_count"])
    assert sorted(table["blocks"], key=lambda b: b["key"]) == sorted(expect["blocks"], key=lambda b: b["key"])
    assert sum(block["row_count"] for block in table["blocks"]) == expect["row_count"]
    assert table["by_kind"] == {kind: set(keys) for kind, keys in expect["referenced_by_kind"].items()}
    # every block's file_size is the size the engine wrote
    objects = latest_puts(name)
    assert all(block["file_size"] == len(objects[block["key"]]) for block in table["blocks"])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_previous_snapshot_chain_matches_the_engine(name):
    expect, objects = load_expect(name), latest_puts(name)
    snapshot = decode_snapshot(expect["snapshot_key"], objects[expect["snapshot_key"]])
    directory = expect["snapshot_key"].rsplit("/", 1)[0] + "/"
    chain = []
    while snapshot.prev_snapshot_id is not None:
        snapshot_id, version = snapshot.prev_snapshot_id
        key = next(directory + name for name in snapshot_file_names(snapshot_id, version)
                   if directory + name in objects)
        chain.append({"snapshot_id": snapshot_id, "key": key})
        snapshot = decode_snapshot(key, objects[key])  # deleted ones too: their bytes are in the history
        assert snapshot.snapshot_id == snapshot_id
    assert chain == [{k: v for k, v in entry.items() if k != "state"} for entry in expect["previous_snapshots"]]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_hint_file_matches_the_engine(name):
    expect = load_expect(name)
    hint = decode_hint(expect["hint"]["key"], latest_puts(name)[expect["hint"]["key"]])
    assert hint.snapshot_full_path == expect["hint"]["snapshot_full_path"]
    assert hint.legacy == (expect["hint"]["format"] == "legacy-plain-text")
    assert {name: {"index_type": index.index_type, "version": index.version}
            for name, index in hint.indexes.items()} == expect["hint"].get("indexes", {})


def test_column_oriented_segments_are_parquet_with_a_trailer():
    expect, objects = load_expect("fuse_column_oriented"), latest_puts("fuse_column_oriented")
    for key in expect["referenced_by_kind"]["segment"]:
        assert key.endswith(".col")
        segment = decode_segment(key, objects[key])
        assert segment.column_oriented and len(segment.blocks) == segment.block_count == 1
        assert objects[key][:4] == b"PAR1"


def test_legacy_names_and_ids():
    expect = load_expect("fuse_legacy")
    name = expect["snapshot_key"].rsplit("/", 1)[-1]
    snapshot_id = snapshot_id_from_name(name)
    assert uuid_version(snapshot_id) == 4 and snapshot_file_names(snapshot_id, 4)[0] == name
    newer = "h01a20ae93d8c73b689d0d5e3d2c2bb90_v4.mpk"
    assert uuid_version(snapshot_id_from_name(newer)) == 7 and snapshot_file_names(newer[1:33], 4)[0] == newer
    assert snapshot_id_from_name("1d3db62f-92d6-4efd-96d8-ac48cd06dc3a_v2.json") == "1d3db62f92d64efd96d8ac48cd06dc3a"
    assert snapshot_id_from_name("last_snapshot_location_hint") is None
    assert block_id_from_location("1/6/_b/h01a2100f98aa7961a1210d077401506f_v2.parquet") == \
        "01a2100f98aa7961a1210d077401506f"
    assert inverted_index_location("1/6/_b/h01a2100ff0097d3b9e506f16d48bc2e3_v2.parquet", "idx1",
                                   "035be9c366d04c13a6705fbe3e769d18") == \
        "1/6/_i_i/idx1/035be9c/01a2100ff0097d3b9e506f16d48bc2e3_v0.index"


# other encodings --------------------------------------------------------------------------------------

def _current(name: str = "fuse_basic") -> tuple[str, dict]:
    expect = load_expect(name)
    return expect["snapshot_key"], unpack_snapshot(latest_puts(name)[expect["snapshot_key"]])


@pytest.mark.parametrize("encoding, compression", [(2, 0), (3, 0), (3, 1)])
def test_snapshot_encodings_in_the_v4_header(encoding, compression):
    key, body = _current()
    if encoding == 3:  # serde_json writes UUIDs as strings
        body["snapshot_id"] = body["snapshot_id"].hex()
        body["prev_snapshot_id"] = [body["prev_snapshot_id"][0].hex(), 4]
        body["summary"].pop("col_stats")  # integer map keys are not JSON
    snapshot = decode_snapshot(key, encode_snapshot(body, encoding=encoding, compression=compression))
    assert snapshot.snapshot_id == "01a20ae93d8c73b689d0d5e3d2c2bb90"
    assert snapshot.prev_snapshot_id == ("01a20ae93d117df9aad87fe88bff1433", 4)
    assert len(snapshot.segments) == 3 and snapshot.row_count == 3000


def _snappy(data: bytes) -> bytes:
    """Raw Snappy with literals only (valid Snappy; what an encoder emits for incompressible data)."""
    out, length = bytearray(), len(data)
    while True:  # varint of the uncompressed length
        out.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            break
    for start in range(0, len(data), 256):
        chunk = data[start:start + 256]
        out += bytes([60 << 2, len(chunk) - 1]) + chunk  # literal, length in one extra byte
    return bytes(out)


def test_snappy_compressed_snapshot():
    key, body = _current()
    payload = _snappy(msgpack.packb(body, use_bin_type=True))
    data = struct.pack("<QBBQ", 4, 2, 2, len(payload)) + payload
    assert decode_snapshot(key, data).row_count == 3000
    truncated = payload[:-5]
    with pytest.raises(MetadataError, match="snappy"):
        decode_snapshot(key, struct.pack("<QBBQ", 4, 2, 2, len(truncated)) + truncated)


def test_snappy_copies_may_overlap_their_output():
    from airflow_fuse.layouts.fuse_format import _Budget, _decompress_snappy

    # 32 bytes: an 8-byte literal, then a copy of 24 bytes from offset 8 (it reads what it writes)
    stream = bytes([32, (8 - 1) << 2]) + b"ABCDEFGH" + bytes([((24 - 1) << 2) | 2]) + (8).to_bytes(2, "little")
    assert _decompress_snappy(_Budget("k", 1 << 20), stream) == b"ABCDEFGH" * 4
    # 30 bytes: a 3-byte literal, then a copy of 27 bytes from offset 3 (the pattern repeats nine times)
    stream = bytes([30, (3 - 1) << 2]) + b"xyz" + bytes([((27 - 1) << 2) | 2]) + (3).to_bytes(2, "little")
    assert _decompress_snappy(_Budget("k", 1 << 20), stream) == b"xyz" * 10
    with pytest.raises(MetadataError, match="snappy"):
        _decompress_snappy(_Budget("k", 1 << 20),
                           bytes([32, (8 - 1) << 2]) + b"ABCDEFGH" + bytes([((24 - 1) << 2) | 2]) + b"\x09\x00")


def test_json_snapshots_v0_to_v2():
    v2 = {"format_version": 2, "snapshot_id": "1d3db62f-92d6-4efd-96d8-ac48cd06dc3a", "timestamp": None,
          "prev_snapshot_id": ["4f1d7329-8084-4b5c-bb6c-09502b0a47bb", 2], "schema": {"fields": []},
          "summary": {"row_count": 5, "block_count": 1, "uncompressed_byte_size": 10, "compressed_byte_size": 8,
                      "col_stats": {}},
          "segments": [["1/6/_sg/c1ea6e47e3524831a1c0d8b83a50415c_v2.json", 2]], "cluster_key_meta": None,
          "table_statistics_location": "1/6/_ts/0c4018703f4d4b61b294225a755c0f1b_ts_v2.json"}
    snapshot = decode_snapshot("t/1/6/_ss/1d3db62f92d64efd96d8ac48cd06dc3a_v2.json", json.dumps(v2).encode())
    assert (snapshot.format_version, snapshot.snapshot_id) == (2, "1d3db62f92d64efd96d8ac48cd06dc3a")
    assert snapshot.prev_snapshot_id == ("4f1d732980844b5cbb6c09502b0a47bb", 2)
    assert snapshot.segments == [("1/6/_sg/c1ea6e47e3524831a1c0d8b83a50415c_v2.json", 2)]
    assert snapshot.table_statistics_location == "1/6/_ts/0c4018703f4d4b61b294225a755c0f1b_ts_v2.json"
    v0 = {"snapshot_id": "1d3db62f-92d6-4efd-96d8-ac48cd06dc3a", "prev_snapshot_id": None,
          "schema": {}, "summary": {"row_count": 1, "block_count": 1}, "segments": ["1/6/_sg/s0"]}
    snapshot = decode_snapshot("t/1/6/_ss/1d3db62f92d64efd96d8ac48cd06dc3a", json.dumps(v0).encode())
    assert (snapshot.format_version, snapshot.segments, snapshot.prev_snapshot_id) == (0, [("1/6/_sg/s0", 0)], None)


def test_json_segments_v0_and_v2():
    v2 = {"format_version": 2, "summary": {"row_count": 3, "block_count": 1},
          "blocks": [{"row_count": 3, "block_size": 30, "file_size": 300, "col_stats": {}, "col_metas": {},
                      "cluster_stats": None, "location": ["1/6/_b/0c4018703f4d4b61b294225a755c0f1b_v0.parquet", 0],
                      "bloom_filter_index_location": ["1/6/_i_b_v2/0c4018703f4d4b61b294225a755c0f1b_v2.parquet", 2],
                      "bloom_filter_index_size": 77, "compression": "Lz4Raw"}]}
    segment = decode_segment("t/1/6/_sg/s_v2.json", json.dumps(v2).encode())
    (block,) = segment.blocks
    assert (block.location, block.file_size, block.row_count, block.bloom_index_size) == (
        "1/6/_b/0c4018703f4d4b61b294225a755c0f1b_v0.parquet", 300, 3, 77)
    v0 = {"summary": {"row_count": 3}, "blocks": [{"row_count": 3, "block_size": 30, "file_size": 300,
                                                   "col_stats": {}, "col_metas": {},
                                                   "location": {"path": "1/6/_b/b0.parquet", "meta_size": 12}}]}
    segment = decode_segment("t/1/6/_sg/s0", json.dumps(v0).encode())
    assert segment.blocks[0].location == "1/6/_b/b0.parquet" and segment.blocks[0].bloom_index_location is None


def test_unknown_and_missing_fields_are_tolerated():
    key, body = _current()
    body["a_field_from_the_future"] = {"x": [1, 2, 3]}
    for name in ("timestamp", "table_statistics_location", "cluster_key_meta", "prev_table_seq", "schema"):
        body.pop(name, None)
    assert len(decode_snapshot(key, encode_snapshot(body)).segments) == 3
    segment_key = load_expect("fuse_indexes")["referenced_by_kind"]["segment"][0]
    blocks, summary = unpack_segment(latest_puts("fuse_indexes")[segment_key])
    for block in blocks:
        block["granule_index"] = {"granule_rows": 8, "mins": None,
                                  "offsets": {"location": ["1/6/_i_g/x_v4.parquet", 4], "size": 9, "columns": {}}}
        block["vector_index_location"] = ["1/6/_i_v/v_v4.parquet", 4]
        block["vector_index_size"] = 11
        block["virtual_block_meta"] = {"virtual_column_metas": {}, "virtual_column_size": 12,
                                       "virtual_location": ["1/6/_vb_v2/h1_v2.parquet", 2]}
        for name in ("spatial_index_location", "ngram_filter_index_size", "create_on"):
            block.pop(name, None)
    (block,) = decode_segment(segment_key, encode_segment(blocks, summary)).blocks
    assert block.granule_index_files == (("1/6/_i_g/x_v4.parquet", 9),)
    assert (block.vector_index_location, block.vector_index_size) == ("1/6/_i_v/v_v4.parquet", 11)
    assert (block.virtual_location, block.virtual_size) == ("1/6/_vb_v2/h1_v2.parquet", 12)


# refusals and damage ------------------------------------------------------------------------------------

def test_v3_bincode_is_refused_with_the_prefix_advice():
    key = "t/1/6/_ss/1d3db62f92d64efd96d8ac48cd06dc3a_v3.bincode"
    with pytest.raises(UnsupportedFormatError, match="table_format='prefix'") as raised:
        decode_snapshot(key, b"\x03\x00\x00\x00\x00\x00\x00\x00\x01\x01" + b"\x00" * 40)
    assert key in str(raised.value)
    header_says_bincode = struct.pack("<QBBQ", 3, 1, 0, 2) + b"\x00\x00"
    with pytest.raises(UnsupportedFormatError, match="prefix"):
        decode_snapshot("t/1/6/_ss/1d3db62f92d64efd96d8ac48cd06dc3a_v4.mpk", header_says_bincode)
    with pytest.raises(UnsupportedFormatError, match="prefix"):
        decode_segment("t/1/6/_sg/s_v3.mpk", struct.pack("<QBBQQ", 3, 1, 0, 1, 1) + b"\x00\x00")


def _damaged_versions(name: str = "fuse_basic") -> dict[str, list[tuple[str, bytes]]]:
    expect, objects = load_expect(name), latest_puts(name)
    snapshot = objects[expect["snapshot_key"]]
    segment_key = expect["referenced_by_kind"]["segment"][0]
    segment = objects[segment_key]
    body = bytearray(snapshot)
    body[30] ^= 0xFF  # flip a byte inside the zstd frame
    return {
        expect["snapshot_key"]: [("garbage", b"this is not a snapshot at all, just text!"),
                                 ("empty", b""), ("truncated", snapshot[:-10]), ("longer", snapshot + b"\x00"),
                                 ("corrupt zstd", bytes(body)),
                                 ("not a map", encode_snapshot([1, 2, 3])),  # type: ignore[arg-type]
                                 ("bad segments", encode_snapshot({"segments": [["x", "y"]]})),
                                 ("bad json", b"{not json")],
        segment_key: [("garbage", b"\x89PNG" + b"\x00" * 64), ("truncated", segment[:40]),
                      ("trailing", segment + b"junk")],
        expect["hint"]["key"]: [("bad json", b'{"snapshot_full_path": 3}'), ("binary", b"\xff\xfe\x00")],
    }


@pytest.mark.parametrize("key, label, data", [(key, label, data) for key, versions in _damaged_versions().items()
                                                for label, data in versions])
def test_damage_raises_a_metadata_error_naming_the_key(key, label, data):
    decode = decode_hint if "hint" in key else decode_segment if "/_sg/" in key else decode_snapshot
    with pytest.raises(MetadataError) as raised:
        decode(key, data)
    assert key in str(raised.value)
    assert not isinstance(raised.value, UnsupportedFormatError), label


def test_damaged_column_oriented_segment():
    key = load_expect("fuse_column_oriented")["referenced_by_kind"]["segment"][0]
    data = latest_puts("fuse_column_oriented")[key]
    for damaged in (data[:-1], b"PAR1" + data[100:], data[:50] + b"\x00" * 100 + data[150:]):
        with pytest.raises(MetadataError, match=key):
            decode_segment(key, damaged)


# the cap on one object ----------------------------------------------------------------------------------

def _inflated_size(key: str, data: bytes) -> int:
    """What a v4 snapshot or segment decompresses to: the sum over its zstd payloads (one or two)."""
    header = struct.Struct("<QBBQ" if "/_ss/" in key else "<QBBQQ")
    _version, _encoding, compression, *lengths = header.unpack_from(data)
    assert compression == 1
    payloads, start = [], header.size
    for length in lengths:
        payloads.append(data[start:start + length])
        start += length
    return sum(len(zstandard.ZstdDecompressor().decompressobj().decompress(p)) for p in payloads)


def _v4_metadata(name: str) -> list[tuple[str, bytes]]:
    return [(key, data) for key, data in latest_puts(name).items()
            if key.endswith("_v4.mpk") and ("/_ss/" in key or "/_sg/" in key)]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_the_cap_holds_for_the_whole_object_to_the_byte(name):
    """Each snapshot and segment Databend wrote decodes with a cap of exactly what it decompresses to, and is
    refused, naming the key, the cap and how to raise it, with one byte less: the cap is per object (both
    payloads of a segment together), not per payload."""
    objects = _v4_metadata(name)
    assert objects
    for key, data in objects:
        decode = decode_snapshot if "/_ss/" in key else decode_segment
        inflated = _inflated_size(key, data)
        decode(key, data, max_bytes=max(inflated, len(data)))
        with pytest.raises(MetadataError, match="over the cap") as raised:
            decode(key, data, max_bytes=max(inflated, len(data)) - 1)
        assert key in str(raised.value) and "AIRFLOW_FUSE_MAX_METADATA_BYTES" in str(raised.value)


def test_the_cap_also_holds_for_json_and_column_oriented_metadata():
    expect, objects = load_expect("fuse_column_oriented"), latest_puts("fuse_column_oriented")
    segment_key = expect["referenced_by_kind"]["segment"][0]
    segment = objects[segment_key]
    assert len(decode_segment(segment_key, segment, max_bytes=len(segment)).blocks) == 1
    with pytest.raises(MetadataError, match=f"{segment_key}.*is {len(segment):,} bytes, over the cap"):
        decode_segment(segment_key, segment, max_bytes=len(segment) - 1)
    hint_key = expect["hint"]["key"]
    with pytest.raises(MetadataError, match="over the cap"):
        decode_hint(hint_key, objects[hint_key], max_bytes=len(objects[hint_key]) - 1)
    v0 = json.dumps({"snapshot_id": "1d3db62f-92d6-4efd-96d8-ac48cd06dc3a", "segments": ["1/6/_sg/s0"]}).encode()
    assert decode_snapshot("t/1/6/_ss/1d3db62f92d64efd96d8ac48cd06dc3a", v0, max_bytes=len(v0)).segments
    with pytest.raises(MetadataError, match="over the cap"):
        decode_snapshot("t/1/6/_ss/1d3db62f92d64efd96d8ac48cd06dc3a", v0, max_bytes=len(v0) - 1)
