"""A walk of every version and delete marker under a prefix, in the order S3 lists them, as Arrow columns.

botocore would parse each ListObjectVersions page into one dict per entry (with our merge into VersionEntry
objects on top, about 85 µs of client CPU per entry). We take the raw XML instead, while botocore still
signs, sends and retries the request: a ``before-parse`` handler, active only for the calls this module makes,
keeps a complete 200 body aside and hands botocore's parser an empty result; the body is then parsed straight
into Arrow columns (:mod:`airflow_fuse.listing_xml`, about 2 µs of client CPU per entry).

A sweep (:func:`list_entries`) keeps each page as a :class:`Chunk` (its keys once, the entries without the key
column) and may list key ranges at once (:mod:`airflow_fuse.listing_ranges`).

The continuation key comes from the page's own entries (see :func:`_continuation`).

Order: a page lists ``<Version>`` and ``<DeleteMarker>`` elements interleaved in the server's true order (AWS,
Ceph), except moto, which writes all versions of a page before all markers. LastModified has one-second
resolution on many servers, so it cannot restore that order alone; the XML order breaks ties, and on a server
that lists versions first a marker is taken as the newer entry of a tie.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_fuse.listing_xml import _ROOT, SCHEMA, Page, _page_from_parsed, parse_list_versions
from airflow_fuse.mapped import mapped, mapped_table

__all__ = ["LIST_CONCURRENCY", "MAX_PAGES", "SCHEMA", "Chunk", "Listing", "Page", "VersionEntry", "compact",
           "fetch_page", "finish", "iter_object_versions", "iter_pages", "iter_range_versions", "list_entries",
           "list_page", "page_of", "parse_list_versions", "table_entries"]

# A safety bound on one walk: 10 million pages is 10 billion versions.
MAX_PAGES = 10_000_000
# Key ranges listed at once by a sweep (see airflow_fuse.listing_ranges).
LIST_CONCURRENCY = 16

@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One entry of a key's history: a version holding data, or a delete marker."""

    key: str
    version_id: str
    is_delete_marker: bool
    is_latest: bool
    size: int
    last_modified: datetime
    etag: str


# the request --------------------------------------------------------------------------------------------

_RAW_FIELD = "FuseRawListing"
_HANDLER_ATTR = "_airflow_fuse_raw_listing"
_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><ListVersionsResult></ListVersionsResult>'
_calling = threading.local()
_HANDLER_LOCK = threading.Lock()


def _keep_raw_body(response_dict: Any = None, customized_response_dict: Any = None, operation_model: Any = None,
                   **_: Any) -> None:
    """before-parse: for this module's own calls, keep a complete 200 body aside and let botocore parse nothing.

    Anything else (errors, a body cut short by the network) is left to botocore, which retries or raises.
    """
    if not getattr(_calling, "raw", False) or response_dict is None or customized_response_dict is None:
        return
    if getattr(operation_model, "name", "ListObjectVersions") != "ListObjectVersions":
        return
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not isinstance(body, (bytes, bytearray)):
        return
    if not bytes(body[-64:]).rstrip().endswith(b"</" + _ROOT + b">") or b"<" + _ROOT not in body[:512]:
        return
    customized_response_dict[_RAW_FIELD] = bytes(body)
    response_dict["body"] = _EMPTY


def _ensure_raw_handler(client: Any) -> None:
    """Put :func:`_keep_raw_body` before every other before-parse handler of the client's S3 calls.

    botocore's first handler there parses every 200 body with ElementTree to find S3 errors hidden in it
    (about half of the client CPU of a listing page). Ours must run first so that it sees the stand-in: it is
    put back behind ours. It still checks every other response, and ours hands it only complete listings.
    """
    if getattr(client, _HANDLER_ATTR, False):
        return
    with _HANDLER_LOCK:
        if not getattr(client, _HANDLER_ATTR, False):
            _install_raw_handler(client)


def _install_raw_handler(client: Any) -> None:
    events = client.meta.events
    try:
        from botocore.handlers import _handle_200_error as botocore_check
    except ImportError:  # pragma: no cover - another botocore: ours simply runs after it
        botocore_check = None
    if botocore_check is not None:
        events.unregister("before-parse.s3.*", botocore_check)
    events.register_first("before-parse.s3.*", _keep_raw_body, unique_id="airflow-fuse-raw-listing")
    if botocore_check is not None:
        events.register_first("before-parse.s3.*", botocore_check)
    setattr(client, _HANDLER_ATTR, True)


def fetch_page(client: Any, **kwargs: Any) -> bytes | dict:
    """One ListObjectVersions call (botocore signs, sends, retries): the raw XML body, or botocore's parsed
    response when another handler took the body (a stubbed client)."""
    _ensure_raw_handler(client)
    _calling.raw = True
    try:
        response = client.list_object_versions(**kwargs)
    finally:
        _calling.raw = False
    body = response.get(_RAW_FIELD)
    return response if body is None else body


def page_of(fetched: bytes | dict) -> Page:
    """A fetched page as columns."""
    return _page_from_parsed(fetched) if isinstance(fetched, dict) else parse_list_versions(fetched)


def list_page(client: Any, **kwargs: Any) -> Page:
    """One ListObjectVersions call, parsed into columns."""
    return page_of(fetch_page(client, **kwargs))


# paging -------------------------------------------------------------------------------------------------

def _continuation(page: Page) -> tuple[str | None, str | None]:
    """KeyMarker and VersionIdMarker for the next page.

    The key comes from the page's entries (URL-decoded once), not from NextKeyMarker, which some servers
    (Ceph) return unencoded so that decoding turns a '+' into a space. The server's last entry always belongs
    to the page's greatest key.
    """
    next_version = page.next_version_id_marker
    entries = page.entries
    if entries.num_rows:
        keys = entries.column("key")
        last_key = pc.max(keys).as_py()  # moto lists a page's markers after its versions: not the last row
        if next_version is None:
            return last_key, None
        same = pc.equal(keys, last_key)
        if pc.any(pc.and_(same, pc.equal(entries.column("version_id"), next_version))).as_py():
            return last_key, next_version
    return page.next_key_marker, next_version


def iter_pages(client: Any, bucket: str, prefix: str, *, page_size: int = 1000, key_marker: str | None = None,
               version_id_marker: str | None = None, first: Page | None = None,
               on_page: Callable[[int], None] | None = None) -> Iterator[Page]:
    """Every page under ``prefix``: from its start, or after ``key_marker`` (and ``version_id_marker``: after that
    version of the key; entries of keys ≤ ``key_marker`` that a server lists anyway are left in: callers filter),
    or continuing after an already fetched ``first``."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if key_marker is not None:
        kwargs["KeyMarker"] = key_marker
        if version_id_marker:
            kwargs["VersionIdMarker"] = version_id_marker
    previous: tuple | None = None
    for index in range(MAX_PAGES):
        page = first if (index == 0 and first is not None) else list_page(client, **kwargs)
        if on_page is not None and not (index == 0 and first is not None):
            on_page(page.entries.num_rows)
        yield page
        if not page.truncated:
            return
        markers = _continuation(page)
        if not markers[0] or markers == previous:
            raise RuntimeError(
                f"ListObjectVersions on bucket {bucket!r} did not advance past key {markers[0]!r}; "
                "the server returned a truncated page without a usable continuation marker"
            )
        previous = markers
        kwargs["KeyMarker"] = markers[0]
        # Pass both markers: without VersionIdMarker, moto and Ceph re-list the marker key.
        if markers[1]:
            kwargs["VersionIdMarker"] = markers[1]
        else:
            kwargs.pop("VersionIdMarker", None)
    raise RuntimeError(f"ListObjectVersions on bucket {bucket!r} exceeded {MAX_PAGES} pages")


# order --------------------------------------------------------------------------------------------------

def markers_first_on_ties(orders: list[str] | set[str]) -> bool:
    """Whether a tie (same key, same IsLatest, same LastModified) between a version and a marker makes the
    marker the newer entry: only when no page shows the server's true interleaving but one shows moto's
    versions-first order. That errs towards removing a marker too many (no data) rather than leaving a marker
    on top of the version being brought back."""
    return "interleaved" not in orders and "versions-first" in orders


def key_order(table: pa.Table) -> pa.Table:
    """Keys ascending (UTF-8 byte order, as S3 lists), each key's entries in the order given (a stable sort;
    nothing is copied when already so: moto's pages, versions then markers, are not)."""
    n = table.num_rows
    if n < 2:
        return table
    keys = table.column("key")
    if pc.all(pc.less_equal(keys.slice(0, n - 1), keys.slice(1))).as_py():
        return table
    return table.take(pc.sort_indices(table, sort_keys=[("key", "ascending")]))


def _disordered(entries: pa.Table, same_key: pa.Array, *, markers_first: bool) -> bool:
    """Whether some row and the next, of the same key (``same_key``: one flag per adjacent pair), are out of
    order: (not latest, older, version before marker if ``markers_first``) greater for the first."""
    n = entries.num_rows
    if n < 2:
        return False
    a, b = (lambda c: c.slice(0, n - 1)), (lambda c: c.slice(1))
    latest, modified = entries.column("is_latest"), entries.column("last_modified")
    greater = pc.less(a(latest), b(latest))  # not_latest greater: the first is not latest, the next is
    level = pc.equal(a(latest), b(latest))
    older = pc.less(a(modified), b(modified))
    if markers_first:
        marker = entries.column("is_delete_marker")
        older = pc.or_(older, pc.and_(pc.equal(a(modified), b(modified)), pc.less(a(marker), b(marker))))
    greater = pc.or_(greater, pc.and_(level, older))
    return bool(pc.any(pc.and_(greater, same_key)).as_py())


def order_within_keys(entries: pa.Table, group: pa.Array, *, markers_first: bool) -> pa.Table:
    """Each key's entries (rows of one ``group`` id, contiguous): the current one first, then newest
    LastModified first, ties in listing order (markers first with ``markers_first``). Only copied when some
    key's entries are not in that order already."""
    n = entries.num_rows
    if n < 2 or not _disordered(entries, pc.equal(group.slice(0, n - 1), group.slice(1)),
                                markers_first=markers_first):
        return entries
    sort_keys = pa.table({"g": group, "l": entries.column("is_latest"), "t": entries.column("last_modified"),
                          "m": entries.column("is_delete_marker")})
    order = pc.sort_indices(sort_keys, sort_keys=[("g", "ascending"), ("l", "descending"), ("t", "descending")]
                            + ([("m", "descending")] if markers_first else []))
    return entries.take(order)


def sort_entries(table: pa.Table, *, markers_first: bool) -> pa.Table:
    """Keys ascending, each key's entries as :func:`order_within_keys` puts them."""
    table = key_order(table)
    n = table.num_rows
    if n < 2:
        return table
    keys = table.column("key")
    changes = pc.not_equal(keys.slice(0, n - 1), keys.slice(1))
    group = pc.cumulative_sum(pa.concat_arrays([pa.array([False]), pa.concat_arrays(changes.chunks)])
                              .cast(pa.int64()))
    return order_within_keys(table, group, markers_first=markers_first)


@dataclass
class Chunk:
    """Part of a listing in key order, each key once: ``keys`` (ascending), ``lengths`` (entries per key) and
    ``entries`` (SCHEMA without the key column). A key may go on in the next chunk."""

    keys: pa.Array
    lengths: pa.Array
    entries: pa.Table
    # Whether some key's entries in the chunk are out of order, with ties as listed / markers first.
    disordered: tuple[bool, bool] = (False, False)


def compact(table: pa.Table) -> Chunk:
    """A page's entries (any order) as a chunk: keys in order, each key's entries in the order given."""
    table = key_order(table)
    n = table.num_rows
    keys = table.column("key")
    keys = pa.concat_arrays(keys.chunks) if keys.num_chunks != 1 else keys.chunk(0)
    if n:
        starts = pa.concat_arrays([pa.array([True]), pc.not_equal(keys.slice(0, n - 1), keys.slice(1))])
        firsts = pc.indices_nonzero(starts).cast(pa.int64())
        bounds = pa.concat_arrays([firsts, pa.array([n], pa.int64())])
        lengths = pc.subtract(bounds.slice(1), bounds.slice(0, len(firsts)))
        keys = keys.take(firsts)
        same_key = pc.invert(starts.slice(1))
        disordered = (_disordered(table, same_key, markers_first=False),
                      _disordered(table, same_key, markers_first=True))
    else:
        lengths = pa.array([], pa.int64())
        disordered = (False, False)
    return Chunk(keys, lengths, table.drop_columns(["key"]), disordered)


# entries ------------------------------------------------------------------------------------------------

def entry_rows(table: pa.Table) -> list[tuple]:
    """The rows of an entries table as tuples of VersionEntry's fields after the key (timestamps aware, UTC)."""
    columns = [table.column(name).to_pylist() for name in ("version_id", "is_delete_marker", "is_latest", "size")]
    naive = table.column("last_modified").cast(pa.timestamp("us")).to_pylist()
    modified = [t.replace(tzinfo=timezone.utc) for t in naive]
    return list(zip(*columns, modified, table.column("etag").to_pylist(), strict=True))


def table_entries(table: pa.Table) -> list[VersionEntry]:
    """The rows of an entries table as VersionEntry objects."""
    return [VersionEntry(key, *row) for key, row in zip(table.column("key").to_pylist(), entry_rows(table),
                                                         strict=True)]


def merge_page(page: Page) -> list[VersionEntry]:
    """The page's entries in listing order (ties decided by this page alone)."""
    return table_entries(sort_entries(page.entries, markers_first=page.order == "versions-first"))


def iter_object_versions(
    client: Any, bucket: str, prefix: str, *, page_size: int = 1000, on_page: Any = None
) -> Iterator[VersionEntry]:
    """Every version and delete marker under ``prefix``, one ListObjectVersions page at a time.

    Correct on pages holding only delete markers, keys whose entries straddle pages, ``null`` version ids,
    and keys with spaces, unicode or URL-special characters. ``on_page(n_entries)`` is called after each page
    (progress, request counting).
    """
    for page in iter_pages(client, bucket, prefix, page_size=page_size, on_page=on_page):
        yield from merge_page(page)


def iter_range_versions(
    client: Any, bucket: str, prefix: str, *, after: str | None, end: str | None, page_size: int = 1000,
    on_page: Any = None, after_version: str | None = None,
) -> Iterator[VersionEntry]:
    """Every version and delete marker of the keys under ``prefix`` in the range ``(after, end]`` (``None``: open).
    With ``after_version`` (a version id of ``after``) the walk starts after that version (``VersionIdMarker``).

    The walk starts at ``KeyMarker=after`` and stops at the first page that shows a key past ``end`` (entries
    beyond are dropped): a key range is listed without listing the rest of the prefix. Entries of keys ≤ ``after``
    that a server lists anyway (moto lists the marker key) are dropped. ``after`` should be a key that exists:
    moto drops the first entry at or after a KeyMarker (its own, when it exists).
    """
    for page in iter_pages(client, bucket, prefix, page_size=page_size, key_marker=after,
                           version_id_marker=after_version, on_page=on_page):
        past = False
        for entry in merge_page(page):
            if after is not None and entry.key <= after:
                continue
            if end is not None and entry.key > end:
                past = True
                continue
            yield entry
        if past:
            return


# a whole listing ----------------------------------------------------------------------------------------

@dataclass
class Listing:
    """Every entry under a prefix in listing order, each key once: ``keys`` (distinct, ascending), ``starts``
    (the first row of each key's entries, then the number of rows) and ``entries`` (SCHEMA without the key)."""

    keys: pa.ChunkedArray
    starts: pa.Int64Array
    entries: pa.Table
    pages: int = 0
    ranges: int = 1

    def group(self) -> pa.Array:
        """The index of each row's key."""
        n = self.entries.num_rows
        lists = pa.LargeListArray.from_arrays(self.starts, pa.nulls(n))
        return pc.list_parent_indices(lists)

    def table(self) -> pa.Table:
        """Every entry as one row (SCHEMA)."""
        return self.entries.add_column(0, SCHEMA.field("key"), self.keys.take(self.group()))


class _PageCounter:
    """Counts pages and reports them to ``on_page`` (from any thread)."""

    def __init__(self, on_page: Callable[[int], None] | None) -> None:
        self.pages = 0
        self._on_page = on_page
        self._lock = threading.Lock()

    def __call__(self, entries: int) -> None:
        with self._lock:
            self.pages += 1
            if self._on_page is not None:
                self._on_page(entries)


def _row(entries: pa.Table, i: int) -> tuple:
    return tuple(entries.column(name)[i].as_py() for name in ("is_latest", "last_modified", "is_delete_marker"))


def _straddle_disordered(before: Chunk, after: Chunk, *, markers_first: bool) -> bool:
    """Whether the last entry of a key that goes on from ``before`` into ``after`` and its next are out of
    order."""
    if not len(before.keys) or not len(after.keys) or before.keys[-1] != after.keys[0]:
        return False
    a, b = _row(before.entries, before.entries.num_rows - 1), _row(after.entries, 0)
    a_key = (not a[0], -a[1].timestamp(), (not a[2]) if markers_first else False)
    b_key = (not b[0], -b[1].timestamp(), (not b[2]) if markers_first else False)
    return a_key > b_key


def _seams(chunks: list[Chunk]) -> tuple[list[int], bool]:
    """Where consecutive chunks (each with keys) meet: the positions, among all their keys, of a key going on from
    the chunk before, and whether the chunks are in key order."""
    seams: list[int] = []
    ordered, at, previous = True, 0, None
    for chunk in chunks:
        first = chunk.keys[0].as_py()
        if first == previous:
            seams.append(at)
        elif previous is not None and first < previous:
            ordered = False
        previous = chunk.keys[-1].as_py()
        at += len(chunk.keys)
    return seams, ordered


GROUP_PAGES = 8  # a range's page chunks are merged into one this many at a time (see ``ChunkGroups``)


def merge(chunks: list[Chunk]) -> Chunk:
    """Consecutive chunks of one walk (keys ascending; a key may go on from one into the next) as one chunk with
    its columns in one buffer each. Entries are not sorted here (``finish`` does that, knowing every page's order):
    the flags say whether some key's entries are out of order, across the seams too."""
    present = [c for c in chunks if c.entries.num_rows]
    if len(present) <= 1:
        return present[0] if present else chunks[0]
    disordered = [any(c.disordered[i] for c in present) for i in (0, 1)]
    lengths = np.concatenate([c.lengths.to_numpy(zero_copy_only=False) for c in present]).astype(np.int64)
    seams, _ = _seams(present)
    for before, after in zip(present, present[1:], strict=False):  # False where no key goes on across the seam
        for i, markers_first in enumerate((False, True)):
            disordered[i] = disordered[i] or _straddle_disordered(before, after, markers_first=markers_first)
    mask = np.ones(len(lengths), bool)
    for seam in reversed(seams):  # from the last: a key over three chunks is folded twice, into its first
        lengths[seam - 1] += lengths[seam]
        mask[seam] = False
    keys = pa.concat_arrays([c.keys for c in present])
    return Chunk(mapped(keys.filter(pa.array(mask)) if seams else keys), pa.array(lengths[mask], pa.int64()),
                 mapped_table(pa.concat_tables([c.entries for c in present]).combine_chunks()),
                 (disordered[0], disordered[1]))


class ChunkGroups:
    """A walk's page chunks, merged ``GROUP_PAGES`` at a time as they come (``merge``). Pages are parsed into many
    small buffers; the listings of concurrent ranges interleave them in memory, so freeing the rows in key order
    (``Inventory.release_batches``) would leave holes that the plan's larger buffers cannot use. Merged, a range's
    rows are a few large buffers that go back whole."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self._merged = 0  # chunks[:_merged] are merged groups

    def append(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        if len(self.chunks) - self._merged >= GROUP_PAGES:
            self._merge_tail()

    def _merge_tail(self) -> None:
        tail = [c for c in self.chunks[self._merged:] if len(c.keys)]
        # Only pages in key order are merged: a server that went backwards is left to ``finish`` (it sorts).
        if len(tail) > 1 and _seams(tail)[1]:
            self.chunks[self._merged:] = [merge(tail)]
        self._merged = len(self.chunks)

    def done(self) -> list[Chunk]:
        """Every chunk, the last pages merged too; the groups are given to the caller."""
        self._merge_tail()
        chunks, self.chunks, self._merged = self.chunks, [], 0
        return chunks


def finish(chunks: list[Chunk], orders: set[str]) -> Listing:
    """Chunks in key order (a key's entries may straddle two) as one listing, each key's entries sorted.
    ``chunks`` is emptied: their memory goes to the listing."""
    markers_first = markers_first_on_ties(orders)
    present = [c for c in chunks if c.entries.num_rows]
    chunks.clear()
    if not present:
        return Listing(pa.chunked_array([], pa.string()), pa.array([0], pa.int64()),
                       SCHEMA.empty_table().drop_columns(["key"]))
    disordered = any(c.disordered[markers_first] for c in present) or any(
        _straddle_disordered(x, y, markers_first=markers_first) for x, y in zip(present, present[1:], strict=False))
    # Keys stay in their chunks (no copy: freed page memory would be left as holes between the entries).
    straddling, ordered = _seams(present)
    continued = set(straddling)
    key_chunks: list[pa.Array] = []
    at = 0
    for chunk in present:
        key_chunks.append(chunk.keys.slice(1) if at in continued else chunk.keys)
        at += len(chunk.keys)
    lengths = pa.concat_arrays([c.lengths for c in present])
    entries = pa.concat_tables([c.entries for c in present])
    ends = pc.cumulative_sum(lengths)
    starts = pa.concat_arrays([pa.array([0], pa.int64()), ends.slice(0, len(ends) - 1)])
    if straddling:  # one key: its entries start where the previous chunk's part of them does
        mask = [True] * at
        for position in straddling:
            mask[position] = False
        starts = starts.filter(pa.array(mask, pa.bool_()))
    keys = pa.chunked_array(key_chunks, pa.string())
    del present
    if not ordered:
        # Chunks out of key order (not from one walk): sort the rows whole.
        whole = Listing(keys, pa.concat_arrays([starts, pa.array([entries.num_rows], pa.int64())]), entries)
        return finish([compact(whole.table())], orders)
    listing = Listing(keys, pa.concat_arrays([starts, pa.array([entries.num_rows], pa.int64())]), entries)
    if disordered:
        listing.entries = order_within_keys(entries, listing.group(), markers_first=markers_first)
    return listing


def list_entries(client: Any, bucket: str, prefix: str, *, page_size: int = 1000,
                 concurrency: int = LIST_CONCURRENCY,
                 on_page: Callable[[int], None] | None = None) -> Listing:
    """Every version and delete marker under ``prefix`` as one table; ``concurrency`` > 1 lists key ranges at
    once (see :mod:`airflow_fuse.listing_ranges`), with the same result as one sequential walk."""
    counter = _PageCounter(on_page)
    if concurrency > 1:
        from airflow_fuse.listing_ranges import list_ranges

        chunks, orders, ranges = list_ranges(client, bucket, prefix, page_size=page_size, concurrency=concurrency,
                                             on_page=counter)
    else:
        groups, orders, ranges = ChunkGroups(), set(), 1
        for page in iter_pages(client, bucket, prefix, page_size=page_size, on_page=counter):
            groups.append(compact(page.entries))
            orders.add(page.order)
        chunks = groups.done()
    pa.default_memory_pool().release_unused()  # what the pages' parsing freed, kept by the allocator
    listing = finish(chunks, orders)
    listing.pages, listing.ranges = counter.pages, ranges
    return listing
