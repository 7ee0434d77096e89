"""The listing at scale: the raw-XML page parser, and parallel key-range listing giving a sequential walk's result.

Parser tests run on real ListObjectVersions pages captured from moto and Ceph (tests/fixtures/listing, written
by ``python -m tests.fixtures.listing.capture moto|ceph``) and compare with botocore's own parse of the same
bytes. The listing tests run against the real servers (moto's and Ceph's own markers and encodings).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import botocore.session
import pytest
from botocore.handlers import decode_list_object_versions
from botocore.parsers import create_parser
from hypothesis import given
from hypothesis import strategies as st

from airflow_fuse.inventory import Inventory
from airflow_fuse.listing import iter_object_versions, list_entries, table_entries
from airflow_fuse.listing_ranges import _guesses, between, middle
from airflow_fuse.listing_xml import _parse_by_field, _parse_tags, _parse_template, _parse_tree, parse_list_versions
from tests.helpers import all_versions

SAMPLES = sorted((Path(__file__).parent / "fixtures" / "listing").glob("*.xml"))
_MODEL = botocore.session.get_session().get_service_model("s3").operation_model("ListObjectVersions")


def botocore_entries(body: bytes) -> tuple[list[tuple], list[tuple], dict]:
    """botocore's parse of a page, keys URL-decoded as its handler does for the client's own requests."""
    parsed = create_parser("rest-xml").parse({"body": body, "headers": {}, "status_code": 200}, _MODEL.output_shape)
    decode_list_object_versions(parsed, {"encoding_type_auto_set": True})
    versions = [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"], v["LastModified"], v["ETag"].strip('"'))
                for v in parsed.get("Versions", [])]
    markers = [(m["Key"], m["VersionId"], m["IsLatest"], m["LastModified"]) for m in parsed.get("DeleteMarkers", [])]
    return versions, markers, parsed


def our_entries(page) -> tuple[list[tuple], list[tuple]]:
    entries = table_entries(page.entries)
    versions = [(e.key, e.version_id, e.is_latest, e.size, e.last_modified, e.etag)
                for e in entries if not e.is_delete_marker]
    markers = [(e.key, e.version_id, e.is_latest, e.last_modified) for e in entries if e.is_delete_marker]
    return versions, markers


def test_samples_from_both_servers_are_there():
    names = {path.name.split("-")[0] for path in SAMPLES}
    assert names == {"moto", "ceph"} and len(SAMPLES) >= 10


@pytest.mark.parametrize("parse", [parse_list_versions, _parse_tags, _parse_template, _parse_by_field, _parse_tree],
                         ids=["first-that-reads", "tags", "template", "by-field", "elementtree"])
@pytest.mark.parametrize("sample", SAMPLES, ids=[path.name for path in SAMPLES])
def test_parser_reads_captured_pages_as_botocore_does(sample, parse):
    body = sample.read_bytes()
    versions, markers, parsed = botocore_entries(body)
    page = parse(body)
    assert page is not None
    assert our_entries(page) == (versions, markers)
    assert page.truncated == parsed["IsTruncated"]
    assert page.next_version_id_marker == parsed.get("NextVersionIdMarker")
    assert page.next_key_marker == parsed.get("NextKeyMarker")


def _ceph_page() -> bytes:
    return next(path for path in SAMPLES if path.name == "ceph-07.xml").read_bytes()


@pytest.mark.parametrize("change", [
    # one version laid out unlike the others (AWS adds elements to some entries only)
    lambda body: body.replace(b"<StorageClass>STANDARD</StorageClass>",
                              b"<StorageClass>STANDARD</StorageClass><RestoreStatus><IsRestoreInProgress>false"
                              b"</IsRestoreInProgress></RestoreStatus>", 1),
    # a key with a line feed and a carriage return, as character references
    lambda body: body.replace(b"<Key>t%2Fstraddle</Key>", b"<Key>t%2Fline&#10;feed&#13;x</Key>"),
    # whitespace between elements, as pretty-printing servers write
    lambda body: body.replace(b"><Key>", b">\n  <Key>").replace(b"</Key><", b"</Key>\n  <"),
    # a key made of characters XML must escape, not URL-encoded (no EncodingType in the response)
    lambda body: body.replace(b"<EncodingType>url</EncodingType>", b"").replace(
        b"<Key>t%2Fstraddle</Key>", b"<Key>t/a&amp;b&lt;c&gt;&quot;&apos; d+e%41</Key>"),
    # the tag scan's traps: an entry whose fields come in another order, an empty element, a comment holding
    # tags, a key in CDATA holding a '<'
    lambda body: _swap_last(body, rb"(<ETag>[^<]*</ETag>)(<Size>[^<]*</Size>)"),
    lambda body: _last(body, b"<DisplayName>tester</DisplayName>", b"<DisplayName/>"),
    lambda body: body.replace(b"</Version>", b"</Version><!-- <Version><Key>x</Key> -->", 1),
    lambda body: body.replace(b"<Key>t%2Fstraddle</Key>", b"<Key><![CDATA[t/a<b>]]></Key>"),
], ids=["one-entry-differs", "line-ends", "whitespace", "no-url-encoding", "fields-reordered", "empty-element",
        "comment", "cdata"])
def test_parser_matches_botocore_on_unusual_pages(change):
    body = change(_ceph_page())
    versions, markers, _ = botocore_entries(body)
    assert versions and markers
    assert our_entries(parse_list_versions(body)) == (versions, markers)
    scanned = _parse_tags(body)  # reads the page right, or leaves it to the regular expression
    assert scanned is None or our_entries(scanned) == (versions, markers)


def _swap_last(body: bytes, pattern: bytes) -> bytes:
    """The last match of ``pattern``'s two groups, swapped."""
    match = list(re.finditer(pattern, body))[-1]
    return body[:match.start()] + match.group(2) + match.group(1) + body[match.end():]


def _last(body: bytes, old: bytes, new: bytes) -> bytes:
    head, sep, tail = body.rpartition(old)
    assert sep
    return head + new + tail


def test_a_page_cut_short_is_not_read_as_fewer_entries():
    body = _ceph_page()
    cut = body[: body.rindex(b"<Version>") + 40]
    with pytest.raises(Exception):  # noqa: B017 - ElementTree's ParseError: never a shorter page
        parse_list_versions(cut)


@given(st.text(min_size=0, max_size=12), st.text(min_size=1, max_size=12))
def test_between_is_strictly_between(low, high):
    if not low < high:
        low, high = high, low
    if low == high:
        return
    middle = between(low, high)
    if middle is not None:
        assert low < middle < high


@given(st.text(min_size=0, max_size=12), st.text(min_size=1, max_size=12), st.text(max_size=16))
def test_middle_is_strictly_between(low, high, alphabet):
    if not low < high:
        low, high = high, low
    if low == high:
        return
    cut = middle(low, high, "".join(sorted(set(alphabet))))
    if cut is not None:
        assert low < cut < high


def test_the_first_cut_spreads_over_the_folder_of_hex_names():
    """One page of Fuse's block names, from the start of _b/: 32 guesses cutting the rest of _b/ into equal
    parts (by the names' first two hex digits), not the code points between the characters."""
    keys = [f"t/_b/{i * 16**28:032x}_v2.parquet" for i in range(20)]
    assert _guesses(keys, "t/", 32) == ["t/_b/01"] + [f"t/_b/{i:02x}" for i in range(8, 256, 8)]


def test_between_halves_hex_names():
    assert between("t/_b/0", "t/_b/f") == "t/_b/K"  # halfway in code points; what matters: strictly between
    assert "t/_b/00ff" < between("t/_b/00ff", "t/_b/01") < "t/_b/01"


# against the servers ------------------------------------------------------------------------------------------

TRICKY = ["t/a+b c.parquet", "t/ü nicode ✓/x", "t/q&a<b>'\"", "t/z%20y", "t/plus+", "t/plus ", "t/_b/",
          "t/~end", "t/\u00e9t\u00e9/f"]


def _write_table(s3, bucket: str) -> None:
    """Tricky keys, 40 hex-named blocks under _b/ (one to three versions, most deleted), a key with many
    versions (it straddles pages), sibling folders, and a key outside the prefix."""
    rng = random.Random(7)
    keys = TRICKY + [f"t/_b/{rng.getrandbits(128):032x}_v2.parquet" for _ in range(40)]
    keys += [f"t/_sg/{i:03d}.json" for i in range(6)] + ["t/_ss/snap.mpk"]
    for key in keys:
        for n in range(rng.randint(1, 3)):
            s3.put_object(Bucket=bucket, Key=key, Body=f"{key}:{n}".encode())
        if rng.random() < 0.7:
            s3.delete_object(Bucket=bucket, Key=key)
    for n in range(7):
        s3.put_object(Bucket=bucket, Key="t/_b/many", Body=str(n).encode())
    s3.delete_object(Bucket=bucket, Key="t/_b/many")
    s3.put_object(Bucket=bucket, Key="t0/outside", Body=b"x")


def test_parallel_listing_equals_the_sequential_walk(s3, bucket):
    _write_table(s3, bucket)
    sequential = list_entries(s3, bucket, "t/", concurrency=1)
    table = sequential.table()
    expected = sorted(all_versions(s3, bucket, "t/"))
    assert sorted(zip(table.column("key").to_pylist(), table.column("version_id").to_pylist(),
                      table.column("is_delete_marker").to_pylist(), strict=True)) == expected
    # the streaming walk (small pages, keys straddling them) sees the same entries in the same order
    assert [(e.key, e.version_id) for e in iter_object_versions(s3, bucket, "t/", page_size=2)] == list(
        zip(table.column("key").to_pylist(), table.column("version_id").to_pylist(), strict=True))
    for page_size, concurrency in ((2, 4), (3, 8), (1, 16), (5, 3)):
        parallel = list_entries(s3, bucket, "t/", page_size=page_size, concurrency=concurrency)
        assert parallel.ranges > 1, "the key space was not split: nothing was listed in parallel"
        assert parallel.table().equals(table), (page_size, concurrency)


def test_parallel_inventory_answers_as_the_sequential_one(s3, bucket):
    _write_table(s3, bucket)
    one = Inventory.sweep(s3, bucket, "t/", concurrency=1)
    many = Inventory.sweep(s3, bucket, "t/", concurrency=8, page_size=2)
    assert len(many) == len(one) and many.key_count == one.key_count
    assert list(many.keys()) == list(one.keys()) == sorted({k for k, _, _ in all_versions(s3, bucket, "t/")})
    assert list(many.histories()) == list(one.histories())
    walked = {h.key: h for h in many.histories()}  # made a slice of keys at a time, from Arrow
    assert all(many.history(key) == history for key, history in walked.items())  # one key, from the buffers
    for key in [*TRICKY, "t/_b/many"]:
        history = many.history(key)
        assert history is not None and history == one.history(key) and key in many and key in many.keys()
        assert history.current.is_latest and all(e.key == key for e in history.entries)
    many_history = many.history("t/_b/many")
    assert many_history.is_deleted and len(many_history.data_versions) == 7
    assert many.history("t/_b") is None and "t/nope" not in many and many.history("t0/outside") is None
    assert many.pages > one.pages  # small pages, and the probes that cut the key space


def test_deleted_keys_come_from_the_columns(s3, bucket):
    _write_table(s3, bucket)
    inventory = Inventory.sweep(s3, bucket, "t/", concurrency=4, page_size=3)
    deleted = inventory.deleted().to_pylist()
    expected = [h for h in inventory.histories() if h.is_deleted]
    assert [row["key"] for row in deleted] == [h.key for h in expected] and "t/_b/many" in [h.key for h in expected]
    assert [(row["version_id"], row["last_modified"]) for row in deleted] == [
        (h.current.version_id, h.current.last_modified) for h in expected]


@given(st.lists(st.tuples(st.sampled_from(["t/a", "t/a+", "t/b", "t/é", "t/z"]), st.booleans(),
                          st.integers(0, 3)), min_size=1, max_size=30),
       st.lists(st.integers(1, 29), max_size=8), st.lists(st.integers(1, 8), max_size=4))
def test_pages_cut_anywhere_make_the_same_listing(rows, cuts, groups):
    """However the server's pages cut a listing (inside a key's entries too), the chunks make one listing:
    keys once, each key's entries newest first, as from a single page; merged a few pages at a time as a range
    lists them (``merge``: a key may straddle several pages, out of order across a seam), the same again."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from airflow_fuse.listing import SCHEMA, ChunkGroups, compact, finish, merge

    rows = sorted(rows, key=lambda r: r[0])
    when = [datetime(2026, 1, 1, 0, 0, 10 - seconds, tzinfo=timezone.utc) for _, _, seconds in rows]
    table = pa.table({"key": [r[0] for r in rows], "version_id": [f"v{i}" for i in range(len(rows))],
                      "is_delete_marker": [r[1] for r in rows], "is_latest": [False] * len(rows),
                      "size": [0] * len(rows), "last_modified": when, "etag": [""] * len(rows)}, schema=SCHEMA)
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    pieces = [compact(table.slice(a, b - a)) for a, b in zip(bounds, bounds[1:], strict=False)]
    whole = finish([compact(table)], {"interleaved"})
    merged, at = [], 0
    for size in [*groups, len(pieces)]:
        if at < len(pieces):
            merged.append(merge(pieces[at:at + size]))
            at += size
    backwards = [*pieces[1:], *pieces[:1]]  # finish empties the list it is given
    cut = finish(pieces, {"interleaved"})
    assert cut.table().equals(whole.table())
    assert finish(merged, {"interleaved"}).table().equals(whole.table())
    # Pages out of key order (a server going backwards): not merged; finish gives what it gave without groups.
    shuffled = ChunkGroups()
    for piece in backwards:
        shuffled.append(piece)
    assert finish(shuffled.done(), {"interleaved"}).table().equals(finish(list(backwards), {"interleaved"}).table())
    assert cut.keys.to_pylist() == sorted(set(table.column("key").to_pylist()))
    listed = whole.table().to_pylist()
    for a, b in zip(listed, listed[1:], strict=False):
        assert a["key"] < b["key"] or (a["key"] == b["key"] and a["last_modified"] >= b["last_modified"])


def test_large_buffers_are_moved_into_maps_of_their_own_and_given_back():
    """A listing's merged rows live in memory maps (returned to the system when the rows are planned); the values
    are the same, and a map goes when its array goes."""
    import gc

    import pyarrow as pa

    from airflow_fuse.mapped import MIN_BYTES, live_maps, mapped_table

    before = live_maps()
    ids = pa.array([f"{i:032x}" for i in range(5000)])  # 160 kB of text, 20 kB of offsets
    sizes = pa.array(list(range(5000)), pa.int64())  # 40 kB: stays in Arrow's pool
    flags = pa.array([i % 3 == 0 for i in range(5000)])
    moved = mapped_table(pa.table({"id": ids.slice(7), "size": sizes.slice(7), "flag": flags.slice(7)}))
    assert moved.column("id").equals(pa.chunked_array([ids.slice(7)]))
    assert moved.column("size").to_pylist() == list(range(7, 5000))
    assert moved.column("flag").to_pylist() == [i % 3 == 0 for i in range(7, 5000)]
    assert live_maps() == before + 1 and ids.buffers()[2].size >= MIN_BYTES > sizes.buffers()[1].size
    assert moved.column("id").chunk(0).buffers()[2].address != ids.buffers()[2].address
    assert pa.compute.equal(moved.column("id"), ids.slice(7)).to_pylist() == [True] * 4993
    del moved
    gc.collect()
    assert live_maps() == before
