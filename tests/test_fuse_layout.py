"""The fuse layout against real servers: replay a Databend-written table, break it, ask what it needs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_fuse.errors import MetadataError
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.base import LayoutResult
from airflow_fuse.layouts.fuse import FuseLayout, detect
from airflow_fuse.listing import VersionEntry
from airflow_fuse.reader import S3VersionReader
from tests.fuse_fixtures import (
    FIXTURE_NAMES,
    blob,
    encode_segment,
    encode_snapshot,
    history,
    latest_puts,
    load_expect,
    replay,
    unpack_segment,
    unpack_snapshot,
)


def scan(s3: Any, bucket: str, prefix: str, **options: Any) -> tuple[LayoutResult, S3VersionReader]:
    inventory = Inventory.sweep(s3, bucket, prefix)
    reader = S3VersionReader(s3, bucket)
    return FuseLayout(**options).needed(inventory, reader), reader


def needed_keys(result: LayoutResult) -> set[str]:
    keys = [obj.key for obj in result.needed]
    assert len(keys) == len(set(keys)), "needed keys are deduplicated"
    return set(keys)


def by_kind(result: LayoutResult) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for obj in result.needed:
        kinds.setdefault(obj.kind, set()).add(obj.key)
    return kinds


def present_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    inventory = Inventory.sweep(s3, bucket, prefix)
    return [h.key for h in inventory.histories() if not h.is_deleted]


def delete_everything(s3: Any, bucket: str, prefix: str) -> None:
    """The incident: a delete (a delete marker) on every key under the table root."""
    for key in present_keys(s3, bucket, prefix):
        s3.delete_object(Bucket=bucket, Key=key)


def remove_all_versions(s3: Any, bucket: str, key: str) -> None:
    """As if the key had never been written (lifecycle expiry, or a permanent delete)."""
    page = s3.list_object_versions(Bucket=bucket, Prefix=key)
    for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
        if entry["Key"] == key:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=entry["VersionId"])


# every fixture --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_needs_exactly_what_the_current_snapshot_references(s3, bucket, name):
    expect = load_expect(name)
    replay(s3, bucket, name)
    sizes = {key: len(body) for key, body in latest_puts(name).items()}
    for location in (expect["storage_root"], expect["table_root"]):
        result, reader = scan(s3, bucket, location)
        assert needed_keys(result) == set(expect["referenced_keys"]), location
        assert by_kind(result) == {kind: set(keys) for kind, keys in expect["referenced_by_kind"].items()}
        assert not needed_keys(result) & set(expect["deleted_by_databend"])
        assert not needed_keys(result) & set(expect["unreferenced_keys"])
        objects = {obj.key: obj for obj in result.needed}
        for block in expect["blocks"]:
            obj = objects[block["key"]]
            assert (obj.expected_size, obj.row_count, obj.parquet) == (block["file_size"], block["row_count"], True)
        # every size the metadata records is the size the engine wrote: a size check never flags a good object
        for obj in result.needed:
            assert obj.expected_size in (None, sizes[obj.key]), obj
            assert not obj.bad_versions and not obj.damaged_reason
        (table,) = result.tables
        assert {k: table[k] for k in ("table_root", "table_prefix", "storage_root", "snapshot_key", "row_count",
                                      "block_count", "segment_count")} == \
            {k: expect[k] for k in ("table_root", "table_prefix", "storage_root", "snapshot_key", "row_count",
                                    "block_count", "segment_count")}
        assert table["snapshot_location"] == expect["snapshot_location"]
        assert table["block_rows"] == expect["row_count"]
        source = "hint_legacy" if name == "fuse_legacy" else "hint_v2"
        assert table["snapshot_source"] == result.info["snapshot_source"] == source
        assert result.info["warnings"] == []
        # only metadata is read: the hint, the snapshot and each segment, one GET each
        assert reader.requests == result.info["metadata_reads"] == 2 + expect["segment_count"]
        assert result.skipped == []  # the hint file is present: nothing to say about it


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_everything_deleted_metadata_is_read_under_the_delete_markers(s3, bucket, name):
    expect = load_expect(name)
    replay(s3, bucket, name)
    delete_everything(s3, bucket, expect["table_root"])
    assert present_keys(s3, bucket, expect["table_root"]) == []
    inventory = Inventory.sweep(s3, bucket, expect["storage_root"])
    assert detect(inventory)
    result, reader = scan(s3, bucket, expect["storage_root"])
    assert needed_keys(result) == set(expect["referenced_keys"])
    assert result.tables[0]["snapshot_key"] == expect["snapshot_key"]
    assert result.info["snapshot_source"] in ("hint_v2", "hint_legacy")
    assert reader.requests == 2 + expect["segment_count"]
    assert not any(obj.bad_versions or obj.damaged_reason for obj in result.needed)
    # the deleted hint file is not needed, and the result says why it stays deleted
    assert [(s.key, s.kind) for s in result.skipped] == [(expect["hint"]["key"], "hint")]
    assert "pointer file" in result.skipped[0].reason


# finding the current snapshot ------------------------------------------------------------------------------

def test_deleted_snapshot_is_found_through_the_hint(s3, bucket):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    s3.delete_object(Bucket=bucket, Key=expect["snapshot_key"])
    result, _ = scan(s3, bucket, expect["table_root"])
    assert result.info["snapshot_source"] == "hint_v2"
    assert result.info["snapshot_key"] == expect["snapshot_key"]
    assert needed_keys(result) == set(expect["referenced_keys"])


@pytest.mark.parametrize("name, source", [("fuse_basic", "newest_snapshot_name"),
                                          ("fuse_purged", "newest_snapshot_name"),
                                          ("fuse_legacy", "newest_snapshot_time")])
def test_without_a_hint_the_newest_snapshot_is_used(s3, bucket, name, source):
    expect = load_expect(name)
    replay(s3, bucket, name)
    remove_all_versions(s3, bucket, expect["hint"]["key"])
    result, reader = scan(s3, bucket, expect["storage_root"])
    assert result.info["snapshot_source"] == source
    assert result.info["snapshot_key"] == expect["snapshot_key"]
    assert needed_keys(result) == set(expect["referenced_keys"])
    assert result.skipped == []
    assert reader.requests == result.info["metadata_reads"]


def test_hint_naming_an_older_snapshot_is_followed_with_a_warning(s3, bucket):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    older = expect["previous_snapshots"][0]["key"]
    rolled_back = json.dumps({"snapshot_full_path": f"/{older}", "indexes": {}}).encode()
    s3.put_object(Bucket=bucket, Key=expect["hint"]["key"], Body=rolled_back)
    result, _ = scan(s3, bucket, expect["table_root"])
    assert (result.info["snapshot_source"], result.info["snapshot_key"]) == ("hint_v2", older)
    assert any(expect["snapshot_key"] in warning and "snapshot_location=" in warning
               for warning in result.info["warnings"])


def test_unreadable_hint_falls_back_to_the_newest_snapshot(s3, bucket):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    s3.put_object(Bucket=bucket, Key=expect["hint"]["key"], Body=b"\x00\x01 not a hint")
    result, _ = scan(s3, bucket, expect["table_root"])
    assert (result.info["snapshot_source"], result.info["snapshot_key"]) == ("newest_snapshot_name",
                                                                             expect["snapshot_key"])
    assert any("hint file unusable" in warning for warning in result.info["warnings"])


def test_legacy_hint_is_plain_text(s3, bucket):
    expect = load_expect("fuse_legacy")
    replay(s3, bucket, "fuse_legacy")
    delete_everything(s3, bucket, expect["table_root"])
    result, _ = scan(s3, bucket, expect["table_root"])
    assert result.info["snapshot_source"] == "hint_legacy"
    assert result.tables[0]["table_prefix"] == "9/16"
    assert "segment_stats" not in by_kind(result)  # 1.2.453 wrote no _hs files


def test_column_oriented_segments(s3, bucket):
    expect = load_expect("fuse_column_oriented")
    replay(s3, bucket, "fuse_column_oriented")
    result, _ = scan(s3, bucket, expect["table_root"])
    assert by_kind(result)["segment"] == set(expect["referenced_by_kind"]["segment"])
    assert all(key.endswith(".col") for key in by_kind(result)["segment"])
    assert by_kind(result)["block"] == set(expect["referenced_by_kind"]["block"])


def test_inverted_index_files_come_from_the_hint_and_the_listing(s3, bucket):
    expect = load_expect("fuse_indexes")
    replay(s3, bucket, "fuse_indexes")
    result, _ = scan(s3, bucket, expect["table_root"])
    assert by_kind(result)["inverted_index"] == set(expect["referenced_by_kind"]["inverted_index"])
    assert result.tables[0]["inverted_indexes"] == ["idx1"]  # idx2 is an ngram index: inside the bloom files
    sized = {obj.key: obj.expected_size for obj in result.needed if obj.kind == "inverted_index"}
    assert sorted(v for v in sized.values() if v is not None) == [3888, 4540]  # the REFRESHed block has no size
    # without a hint the index versions are unknown: the listing's _i_i/ files of referenced blocks are kept
    remove_all_versions(s3, bucket, expect["hint"]["key"])
    result, _ = scan(s3, bucket, expect["table_root"])
    assert by_kind(result)["inverted_index"] == set(expect["referenced_by_kind"]["inverted_index"])
    assert any("index versions" in warning for warning in result.info["warnings"])


def test_explicit_snapshot_location(s3, bucket):
    expect = load_expect("fuse_compacted")
    replay(s3, bucket, "fuse_compacted")
    result, _ = scan(s3, bucket, expect["storage_root"], snapshot_location=expect["snapshot_location"])
    assert result.info["snapshot_source"] == "snapshot_location"
    assert needed_keys(result) == set(expect["referenced_keys"])
    # an older snapshot: right after OPTIMIZE COMPACT, before the DELETE and UPDATE rewrote the block
    older = expect["previous_snapshots"][3]
    result, _ = scan(s3, bucket, expect["table_root"], snapshot_location=older["key"][len(expect["storage_root"]):])
    assert result.info["snapshot_key"] == older["key"]
    assert by_kind(result)["snapshot"] == {older["key"]}
    assert not by_kind(result)["block"] & set(expect["referenced_by_kind"]["block"])
    assert result.tables[0]["block_rows"] == result.tables[0]["row_count"] == 586
    # the full key works too
    result, _ = scan(s3, bucket, expect["table_root"], snapshot_location=older["key"])
    assert result.info["snapshot_key"] == older["key"]
    with pytest.raises(MetadataError, match="not listed"):
        scan(s3, bucket, expect["table_root"], snapshot_location="1/6/_ss/h01a20ae95b947b34b1c68e5a9b91b857_v4.mpk")
    with pytest.raises(MetadataError, match="not in table"):
        scan(s3, bucket, expect["table_root"], snapshot_location="2/7/_ss/h01a20ae95b947b34b1c68e5a9b91b856_v4.mpk")


def test_several_tables_under_one_location(s3, bucket):
    basic, legacy = load_expect("fuse_basic"), load_expect("fuse_legacy")
    replay(s3, bucket, "fuse_basic")
    replay(s3, bucket, "fuse_legacy")
    result, reader = scan(s3, bucket, "")
    assert needed_keys(result) == set(basic["referenced_keys"]) | set(legacy["referenced_keys"])
    assert [t["table_root"] for t in result.tables] == ["legacy/9/16/", "tbl/1/6/"]
    assert "snapshot_source" not in result.info
    assert reader.requests == result.info["metadata_reads"] == (2 + 3) + (2 + 4)
    result, _ = scan(s3, bucket, "", table_prefix="9/16")
    assert needed_keys(result) == set(legacy["referenced_keys"])
    result, _ = scan(s3, bucket, "", snapshot_location=basic["snapshot_location"])
    assert needed_keys(result) == set(basic["referenced_keys"])
    with pytest.raises(MetadataError, match=r"tables found: 9/16 \(legacy/9/16/\), 1/6 \(tbl/1/6/\)"):
        scan(s3, bucket, "", table_prefix="5/5")


def test_no_fuse_table_under_the_location(s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain/part-0.parquet", Body=b"PAR1")
    s3.put_object(Bucket=bucket, Key="plain/_ss/notes.txt", Body=b"not a snapshot name")
    inventory = Inventory.sweep(s3, bucket, "plain/")
    assert not detect(inventory)
    with pytest.raises(MetadataError, match="table_format='prefix'"):
        FuseLayout().needed(inventory, S3VersionReader(s3, bucket))


def test_location_inside_the_table_is_refused(s3, bucket):
    replay(s3, bucket, "fuse_basic")
    with pytest.raises(MetadataError, match="inside the Fuse table"):
        scan(s3, bucket, "tbl/1/6/_ss/")


def test_v3_bincode_snapshot_asks_for_the_prefix_format(s3, bucket):
    s3.put_object(Bucket=bucket, Key="old/1/6/_ss/1d3db62f92d64efd96d8ac48cd06dc3a_v3.bincode",
                  Body=b"\x03\x00\x00\x00\x00\x00\x00\x00\x01\x01" + b"\x00" * 30)
    with pytest.raises(MetadataError, match="table_format='prefix'"):
        scan(s3, bucket, "old/")


# damaged and crafted metadata ------------------------------------------------------------------------------

def test_garbage_current_segment_version_is_damaged_and_the_older_one_used(s3, bucket):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    segment_key = expect["blocks"][1]["segment"]
    garbage = s3.put_object(Bucket=bucket, Key=segment_key, Body=b"\x00garbage, not a segment")["VersionId"]
    result, reader = scan(s3, bucket, expect["table_root"])
    assert needed_keys(result) == set(expect["referenced_keys"])  # the good version's blocks are listed
    segment = next(obj for obj in result.needed if obj.key == segment_key)
    assert segment.bad_versions == frozenset({garbage})
    assert "does not decode" in segment.damaged_reason
    assert reader.requests == result.info["metadata_reads"] == 2 + 3 + 1  # one extra GET: the garbage version
    others = [obj for obj in result.needed if obj.key != segment_key]
    assert not any(obj.bad_versions or obj.damaged_reason for obj in others)


def test_garbage_under_a_delete_marker_is_a_bad_version_but_not_live_damage(s3, bucket):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    garbage = s3.put_object(Bucket=bucket, Key=expect["snapshot_key"], Body=b"garbage")["VersionId"]
    s3.delete_object(Bucket=bucket, Key=expect["snapshot_key"])
    result, _ = scan(s3, bucket, expect["table_root"])
    snapshot = next(obj for obj in result.needed if obj.key == expect["snapshot_key"])
    assert snapshot.bad_versions == frozenset({garbage}) and snapshot.damaged_reason == ""
    assert needed_keys(result) == set(expect["referenced_keys"])


def test_segment_without_a_decodable_version_is_still_needed(s3, bucket):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    lost = expect["blocks"][0]
    remove_all_versions(s3, bucket, lost["segment"])
    garbage = s3.put_object(Bucket=bucket, Key=lost["segment"], Body=b"garbage")["VersionId"]
    result, _ = scan(s3, bucket, expect["table_root"])
    segment = next(obj for obj in result.needed if obj.key == lost["segment"])
    assert segment.bad_versions == frozenset({garbage}) and segment.damaged_reason
    stats = lost["segment"].replace("/_sg/h", "/_hs/").replace("_v4.mpk", "_v0.mpk")
    unreachable = {lost["key"], lost["bloom_index"], stats}
    assert needed_keys(result) == set(expect["referenced_keys"]) - unreachable
    assert any(lost["segment"] in warning for warning in result.info["warnings"])
    # a segment that was never listed at all: still needed (the plan reports it unrecoverable)
    remove_all_versions(s3, bucket, lost["segment"])
    result, _ = scan(s3, bucket, expect["table_root"])
    assert lost["segment"] in needed_keys(result)
    assert any("is not listed" in warning for warning in result.info["warnings"])


@pytest.mark.parametrize("location", ["1/6/../../2/9/_sg/h01a2100f98aa7806a82f90b8312e703e_v4.mpk",
                                      "1/60/_sg/h01a2100f98aa7806a82f90b8312e703e_v4.mpk",
                                      "/etc/passwd", "2/9/_sg/x_v4.mpk", "1/6//_sg/x_v4.mpk", "1/6/_sg/./x"])
def test_crafted_snapshot_pointing_outside_the_table_is_refused(s3, bucket, location):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    body = unpack_snapshot(latest_puts("fuse_basic")[expect["snapshot_key"]])
    body["segments"].append([location, 4])
    s3.put_object(Bucket=bucket, Key=expect["snapshot_key"], Body=encode_snapshot(body))
    with pytest.raises(MetadataError) as raised:
        scan(s3, bucket, expect["storage_root"])
    assert expect["snapshot_key"] in str(raised.value) and repr(location) in str(raised.value)


@pytest.mark.parametrize("field", ["location", "bloom_filter_index_location"])
def test_crafted_segment_pointing_outside_the_table_is_refused(s3, bucket, field):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    segment_key = expect["blocks"][0]["segment"]
    blocks, summary = unpack_segment(latest_puts("fuse_basic")[segment_key])
    blocks[0][field] = ["1/6/_b/../../../other/1/6/_b/x_v2.parquet", 2]
    s3.put_object(Bucket=bucket, Key=segment_key, Body=encode_segment(blocks, summary))
    with pytest.raises(MetadataError, match="outside the table root") as raised:
        scan(s3, bucket, expect["table_root"])
    assert segment_key in str(raised.value) and "other/1/6/_b/x_v2.parquet" in str(raised.value)


def test_crafted_hint_pointing_at_another_table_is_refused(s3, bucket):
    expect = load_expect("fuse_basic")
    replay(s3, bucket, "fuse_basic")
    s3.put_object(Bucket=bucket, Key=expect["hint"]["key"],
                  Body=b'{"snapshot_full_path": "/tbl/2/9/_ss/h01a20ae93d8c73b689d0d5e3d2c2bb90_v4.mpk"}')
    with pytest.raises(MetadataError, match="outside the table root"):
        scan(s3, bucket, expect["table_root"])


# time travel ---------------------------------------------------------------------------------------------

def test_include_history_keeps_the_previous_snapshots_and_what_they_reference(s3, bucket):
    expect = load_expect("fuse_compacted")
    replay(s3, bucket, "fuse_compacted")
    result, reader = scan(s3, bucket, expect["table_root"], include_history=True)
    # every snapshot of this table is in the chain, so every table object but the hint is needed
    assert needed_keys(result) == set(expect["referenced_keys"]) | set(expect["unreferenced_table_keys"]) - {
        expect["hint"]["key"]}
    assert result.tables[0]["history"] == expect["previous_snapshots"]
    assert reader.requests == result.info["metadata_reads"]


def test_include_history_follows_the_chain_under_delete_markers(s3, bucket):
    expect = load_expect("fuse_purged")
    replay(s3, bucket, "fuse_purged")
    result, _ = scan(s3, bucket, expect["table_root"], include_history=True)
    assert result.tables[0]["history"] == expect["previous_snapshots"]
    assert {entry["key"] for entry in expect["previous_snapshots"]} <= by_kind(result)["snapshot"]
    result, _ = scan(s3, bucket, expect["table_root"])
    assert needed_keys(result) == set(expect["referenced_keys"])  # without history, purged objects stay gone


# without a server: an inventory built from the fixture's history ------------------------------------------

class FixtureReader:
    """Serves each listed version's bytes from the fixture; counts GETs like S3VersionReader."""

    def __init__(self, bodies: dict[tuple[str, str], bytes]) -> None:
        self.bodies = bodies
        self.requests = 0

    def read(self, key: str, version_id: str) -> bytes:
        self.requests += 1
        return self.bodies[(key, version_id)]


def offline_inventory(name: str, *, skip: Callable[[str], bool]) -> tuple[Inventory, FixtureReader]:
    """The fixture as a listing where every entry has the same LastModified (a one-second clock)."""
    when = datetime(2026, 11, 24, tzinfo=timezone.utc)
    entries: list[VersionEntry] = []
    bodies: dict[tuple[str, str], bytes] = {}
    for i, op in enumerate(history(name)):
        if skip(op["key"]):
            continue
        version_id = f"v{i:04d}"
        entries.append(VersionEntry(op["key"], version_id, op["op"] == "delete", False, op["size"], when, ""))
        if op["op"] == "put":
            bodies[(op["key"], version_id)] = blob(name, op["blob"])
    # listing order: keys ascending, each key's entries newest first, the newest one current
    entries.sort(key=lambda e: (e.key, -int(e.version_id[1:])))
    entries = [replace(e, is_latest=(i == 0 or entries[i - 1].key != e.key)) for i, e in enumerate(entries)]
    return Inventory.from_entries("offline", "", entries), FixtureReader(bodies)


def test_legacy_snapshots_written_in_the_same_second_are_ordered_by_their_chain():
    expect = load_expect("fuse_legacy")
    inventory, reader = offline_inventory("fuse_legacy", skip=lambda key: key == expect["hint"]["key"])
    result = FuseLayout().needed(inventory, reader)
    assert (result.info["snapshot_source"], result.info["snapshot_key"]) == ("newest_snapshot_time",
                                                                             expect["snapshot_key"])
    assert needed_keys(result) == set(expect["referenced_keys"])
    # the four tied snapshots were read once each (the chosen one is not read again), then the 4 segments
    assert reader.requests == result.info["metadata_reads"] == 4 + 4


def test_vector_spatial_virtual_granule_and_table_statistics_files_are_needed():
    expect = load_expect("fuse_basic")
    inventory, reader = offline_inventory("fuse_basic", skip=lambda key: False)
    current = {key: version for (key, version) in reader.bodies}  # the last put of each key wins
    snapshot = unpack_snapshot(reader.bodies[(expect["snapshot_key"], current[expect["snapshot_key"]])])
    snapshot["table_statistics_location"] = "1/6/_ts/01a2100f98aa7961a1210d077401506f_ts_v4.json"
    reader.bodies[(expect["snapshot_key"], current[expect["snapshot_key"]])] = encode_snapshot(snapshot)
    segment_key = expect["blocks"][0]["segment"]
    blocks, summary = unpack_segment(reader.bodies[(segment_key, current[segment_key])])
    blocks[0].update({
        "vector_index_location": ["1/6/_i_v/01a2_v4.parquet", 4], "vector_index_size": 10,
        "spatial_index_location": ["1/6/_i_s/01a3_v4.parquet", 4], "spatial_index_size": 11,
        "virtual_block_meta": {"virtual_column_metas": {}, "virtual_column_size": 12,
                               "virtual_location": ["1/6/_vb_v2/h01a4_v2.parquet", 2]},
        "granule_index": {"granule_rows": 8, "mins": None,
                          "offsets": {"location": ["1/6/_i_g/01a5_v4.parquet", 4], "size": 13, "columns": {}}},
    })
    reader.bodies[(segment_key, current[segment_key])] = encode_segment(blocks, summary)
    result = FuseLayout().needed(inventory, reader)
    root = expect["storage_root"] + "1/6/"
    extra = {(obj.key, obj.kind, obj.expected_size) for obj in result.needed
             if obj.key not in expect["referenced_keys"]}
    assert extra == {
        (root + "_ts/01a2100f98aa7961a1210d077401506f_ts_v4.json", "table_statistics", None),
        (root + "_i_v/01a2_v4.parquet", "vector_index", 10),
        (root + "_i_s/01a3_v4.parquet", "spatial_index", 11),
        (root + "_vb_v2/h01a4_v2.parquet", "virtual_column", 12),
        (root + "_i_g/01a5_v4.parquet", "granule_index", 13),
    }
