"""Inventory: one ListObjectVersions sweep of the table prefix, held as Arrow columns.

Every entry (data version or delete marker) is one row, in listing order: keys ascending (UTF-8 byte order,
as S3 lists them), each key's entries newest first. A key's entries are contiguous rows; the distinct keys
are held once, with the row where each key's entries start, and looked up by binary search. Python objects
(``KeyHistory``, ``VersionEntry``) are made only for the keys a caller asks about, a slice at a time when it
walks them all: a million entries take tens of megabytes, not the gigabytes of Python objects.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, overload

import pyarrow as pa
import pyarrow.compute as pc

from airflow_fuse.listing import (
    LIST_CONCURRENCY,
    SCHEMA,
    Listing,
    VersionEntry,
    compact,
    entry_rows,
    finish,
    list_entries,
)

__all__ = ["SCHEMA", "Inventory", "KeyHistory", "iter_histories"]

_BATCH = 50_000
_SLICE = 8192  # keys materialised at a time when walking every history


@dataclass(frozen=True)
class KeyHistory:
    """One key's entries, newest first."""

    key: str
    entries: tuple[VersionEntry, ...]

    @property
    def current(self) -> VersionEntry:
        return self.entries[0]

    @property
    def is_deleted(self) -> bool:
        return self.current.is_delete_marker

    @property
    def data_versions(self) -> list[VersionEntry]:
        return [e for e in self.entries if not e.is_delete_marker]

    @property
    def newest_data(self) -> VersionEntry | None:
        return next((e for e in self.entries if not e.is_delete_marker), None)

    def above(self, version_id: str) -> list[VersionEntry]:
        """The entries newer than ``version_id`` (what lies on top of it)."""
        out: list[VersionEntry] = []
        for entry in self.entries:
            if entry.version_id == version_id:
                return out
            out.append(entry)
        raise KeyError(f"version {version_id} of {self.key!r} is not in the listing")

    def at(self, when: datetime) -> VersionEntry | None:
        """The entry that was current at ``when`` (None: the key did not exist yet)."""
        return next((e for e in self.entries if e.last_modified <= when), None)

    def deleted_at(self) -> datetime | None:
        return self.current.last_modified if self.is_deleted else None


def iter_histories(entries: Iterable[VersionEntry]) -> Iterator[KeyHistory]:
    """Group a listing's entries (keys ascending, each key newest first) into one history per key, streaming."""
    key: str | None = None
    group: list[VersionEntry] = []
    for entry in entries:
        if entry.key != key:
            if group:
                yield KeyHistory(group[0].key, tuple(group))
            key, group = entry.key, []
        group.append(entry)
    if group:
        yield KeyHistory(group[0].key, tuple(group))


class KeyList(Sequence[str]):
    """The listing's distinct keys, ascending, read from the Arrow column a slice at a time."""

    def __init__(self, keys: pa.ChunkedArray, find: Callable[[str], int | None]) -> None:
        self._keys = keys
        self._find = find

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._keys[index].as_py()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self._keys), _SLICE):
            yield from self._keys.slice(start, _SLICE).to_pylist()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None


class _SortedStrings:
    """Binary search over sorted Arrow strings (chunks in order), straight on their offsets and data buffers."""

    def __init__(self, array: pa.ChunkedArray | pa.StringArray) -> None:
        chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
        self._chunks: list[tuple[int, int, memoryview, memoryview, int]] = []  # (first index, n, offsets, data, base)
        self._firsts: list[bytes] = []
        index = 0
        for chunk in chunks:
            n = len(chunk)
            if not n:
                continue
            buffers = chunk.buffers()
            data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")
            offsets = memoryview(buffers[1]).cast("i")
            self._chunks.append((index, n, offsets, data, chunk.offset))
            self._firsts.append(data[offsets[chunk.offset]:offsets[chunk.offset + 1]].tobytes())
            index += n

    def find(self, key: str) -> int | None:
        target = key.encode("utf-8")
        which = bisect.bisect_right(self._firsts, target) - 1
        if which < 0:
            return None
        first, n, offsets, data, base = self._chunks[which]
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            value = data[offsets[base + mid]:offsets[base + mid + 1]].tobytes()
            if value < target:
                lo = mid + 1
            elif value > target:
                hi = mid
            else:
                return first + mid
        return None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _Rows:
    """Single entries read straight from the columns' buffers (no Arrow call per lookup): what one key's
    history needs, in a few microseconds."""

    def __init__(self, entries: pa.Table) -> None:
        layouts = {tuple(len(c) for c in entries.column(name).chunks) for name in entries.column_names}
        if len(layouts) > 1:  # columns chunked differently (after a take): one chunk each
            entries = entries.combine_chunks()
        columns = {name: entries.column(name).chunks for name in entries.column_names}
        self._bounds: list[int] = []
        self._chunks: list[tuple] = []
        row = 0
        for i, chunk in enumerate(columns["version_id"]):
            if not len(chunk):
                continue
            self._bounds.append(row)
            self._chunks.append(tuple(self._views(columns[name][i]) for name in (
                "version_id", "is_delete_marker", "is_latest", "size", "last_modified", "etag")))
            row += len(chunk)

    @staticmethod
    def _views(array: pa.Array) -> tuple:
        buffers = array.buffers()
        if array.null_count:
            raise ValueError("entries columns hold no nulls")
        if pa.types.is_string(array.type):
            data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")
            return ("s", array.offset, memoryview(buffers[1]).cast("i"), data)
        if pa.types.is_boolean(array.type):
            return ("b", array.offset, memoryview(buffers[1]), None)
        return ("q", array.offset, memoryview(buffers[1]).cast("q"), None)

    def row(self, row: int) -> tuple:
        """VersionEntry's fields after the key, for one row."""
        which = bisect.bisect_right(self._bounds, row) - 1
        local = row - self._bounds[which]
        out = []
        for kind, offset, values, data in self._chunks[which]:
            at = offset + local
            if kind == "s":
                out.append(data[values[at]:values[at + 1]].tobytes().decode("utf-8"))
            elif kind == "b":
                out.append(bool(values[at >> 3] >> (at & 7) & 1))
            else:
                out.append(values[at])
        out[4] = _EPOCH + timedelta(microseconds=out[4])
        return tuple(out)


class Inventory:
    """Every version and delete marker under ``bucket/prefix``, from one listing sweep."""

    def __init__(self, bucket: str, prefix: str, table: pa.Table | Listing, *, pages: int = 0,
                 seconds: float = 0.0, listed_at: datetime | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.pages = pages
        self.seconds = seconds
        self.listed_at = listed_at or datetime.now(timezone.utc)
        if isinstance(table, Listing):
            listing = table
        else:  # entries as given (keys grouped, each key's order kept: the caller's)
            chunk = compact(table)
            chunk.disordered = (False, False)
            listing = finish([chunk], set())
        # The distinct keys once (the entries keep no key column) and where each key's entries start.
        self._keys: pa.ChunkedArray = (listing.keys if isinstance(listing.keys, pa.ChunkedArray)
                                       else pa.chunked_array([listing.keys], pa.string()))
        self._starts: pa.Int64Array = listing.starts
        self._entries = listing.entries
        self._search = _SortedStrings(self._keys)
        self._rows: _Rows | None = None
        self._start_values = memoryview(self._starts.buffers()[1]).cast("q")[self._starts.offset:]
        self._key_count = len(self._keys)
        self._entry_count = self._entries.num_rows
        # Once its rows are given back (``release_batches``): the histories still answered (None: all of them).
        self._kept: dict[str, KeyHistory] | None = None

    # building -------------------------------------------------------------------------------------
    @classmethod
    def from_entries(cls, bucket: str, prefix: str, entries: Iterable[VersionEntry], **kwargs: Any) -> Inventory:
        """From entries in listing order (each key's entries together, newest first)."""
        batches: list[pa.RecordBatch] = []
        cols: dict[str, list] = {name: [] for name in SCHEMA.names}

        def flush() -> None:
            if cols["key"]:
                batches.append(pa.RecordBatch.from_pydict(cols, schema=SCHEMA))
                for values in cols.values():
                    values.clear()

        for e in entries:
            cols["key"].append(e.key)
            cols["version_id"].append(e.version_id)
            cols["is_delete_marker"].append(e.is_delete_marker)
            cols["is_latest"].append(e.is_latest)
            cols["size"].append(e.size)
            cols["last_modified"].append(e.last_modified)
            cols["etag"].append(e.etag)
            if len(cols["key"]) >= _BATCH:
                flush()
        flush()
        table = pa.Table.from_batches(batches, schema=SCHEMA)
        if table.num_rows > 1:  # keys in byte order; a key's entries keep the order given (a stable sort)
            keys = table.column("key")
            if not pc.all(pc.less_equal(keys.slice(0, len(keys) - 1), keys.slice(1))).as_py():
                table = table.take(pc.sort_indices(table, sort_keys=[("key", "ascending")]))
        return cls(bucket, prefix, table, **kwargs)

    @classmethod
    def sweep(cls, client: Any, bucket: str, prefix: str, *, on_page: Callable[[int], None] | None = None,
              concurrency: int = LIST_CONCURRENCY, page_size: int = 1000) -> Inventory:
        """A paginated ListObjectVersions walk of ``prefix``: ``concurrency`` key ranges listed at once."""
        started = time.monotonic()
        listed_at = datetime.now(timezone.utc)
        listing = list_entries(client, bucket, prefix, page_size=page_size, concurrency=concurrency, on_page=on_page)
        return cls(bucket, prefix, listing, pages=listing.pages, seconds=time.monotonic() - started,
                   listed_at=listed_at)

    # reading --------------------------------------------------------------------------------------
    @property
    def table(self) -> pa.Table:
        """Every entry as one row (SCHEMA), in listing order; built on demand."""
        return Listing(self._keys, self._starts, self._entries).table()

    def __len__(self) -> int:
        return self._entry_count

    def keys(self) -> KeyList:
        """The distinct keys, ascending (a sequence read lazily from the columns)."""
        return KeyList(self._keys, self._search.find)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._search.find(key) is not None

    def _span(self, index: int) -> tuple[int, int]:
        return self._starts[index].as_py(), self._starts[index + 1].as_py()

    def _histories(self, first: int, stop: int) -> list[KeyHistory]:
        """The histories of keys ``first`` to ``stop`` (indices), from one slice of the columns."""
        if first >= stop:
            return []
        row, end = self._starts[first].as_py(), self._starts[stop].as_py()
        rows = self._entries.slice(row, end - row)
        keys = self._keys.slice(first, stop - first).to_pylist()
        starts = [s - row for s in self._starts.slice(first, stop - first + 1).to_pylist()]
        values = entry_rows(rows)
        return [KeyHistory(key, tuple(VersionEntry(key, *v) for v in values[starts[i]:starts[i + 1]]))
                for i, key in enumerate(keys)]

    def history(self, key: str) -> KeyHistory | None:
        if self._kept is not None:
            if key not in self._kept:
                raise LookupError(f"the listing's rows were given back after planning: the history of {key!r} "
                                  "was not kept")
            return self._kept[key]
        index = self._search.find(key)
        if index is None:
            return None
        if self._rows is None:
            self._rows = _Rows(self._entries)
        rows = self._rows
        return KeyHistory(key, tuple(VersionEntry(key, *rows.row(r))
                                     for r in range(self._start_values[index], self._start_values[index + 1])))

    def histories(self) -> Iterator[KeyHistory]:
        """Every key's history in key order, made a slice of keys at a time."""
        for first in range(0, len(self._keys), _SLICE):
            yield from self._histories(first, min(first + _SLICE, len(self._keys)))

    @property
    def key_count(self) -> int:
        return self._key_count

    @property
    def released(self) -> bool:
        """Whether the rows were given back (``release_batches``): only the counts and the kept histories are
        left."""
        return self._kept is not None

    # vectorised questions -------------------------------------------------------------------------
    def current_entries(self) -> pa.Table:
        """One row per key, its current entry (the first listed), with the key: for questions about every key
        at once (which are deleted, since when) without a Python object per key."""
        current = self._entries.take(self._starts.slice(0, len(self._keys)))
        return current.add_column(0, SCHEMA.field("key"), self._keys)

    def key_batches(self, size: int = 65_536) -> Iterator[tuple[int, pa.ChunkedArray, pa.Int64Array, pa.Table]]:
        """The listing ``size`` keys at a time, for computing on the columns in bounded memory: (index of the
        first key, the keys (the listing's chunks), where each key's entries start in the batch's entries then their
        count, those entries as one chunk)."""
        for first in range(0, len(self._keys), size):
            stop = min(first + size, len(self._keys))
            row, end = self._start_values[first], self._start_values[stop]
            starts = pc.subtract(self._starts.slice(first, stop - first + 1), pa.scalar(row, pa.int64()))
            yield (first, self._keys.slice(first, stop - first), starts,
                   self._entries.slice(row, end - row).combine_chunks())

    def release_batches(self, size: int = 65_536) -> Iterator[tuple[int, pa.ChunkedArray, pa.Int64Array, pa.Table]]:
        """:meth:`key_batches` that gives the listing's memory back as it goes, for a caller that keeps nothing of a
        batch once it asks for the next: the rows of the keys already walked are dropped (a page's columns go when
        every key of the page is walked), so what the caller builds grows while the listing shrinks.

        The inventory is spent from the first batch on: its counts, times and bucket stay; :meth:`history`
        answers only the keys given to :meth:`keep` (and raises ``LookupError`` for any other)."""
        keys, entries, starts = self._keys, self._entries, self._starts
        # Nothing else may hold the columns: the search and row readers keep views of their buffers.
        self._kept = {}
        self._keys = pa.chunked_array([], pa.string())
        self._entries = entries.slice(0, 0)
        self._starts = pa.array([0], pa.int64())
        self._search = _SortedStrings(self._keys)
        self._rows = None
        self._start_values = memoryview(self._starts.buffers()[1]).cast("q")
        total = len(keys)
        key_type, schema = keys.type, entries.schema
        # The listing's chunks (a page each), taken from the front as the batches cover them: a chunk walked is
        # dropped at once. (Slicing the whole ChunkedArray/Table per batch instead costs O(chunks) a batch: at
        # 10 M entries, 10,000 pages, that was ~80 s of CPU.)
        key_chunks: deque[pa.Array] = deque(keys.chunks)
        entry_chunks: deque[pa.RecordBatch] = deque(entries.to_batches())
        del keys, entries
        for first in range(0, total, size):
            stop = min(first + size, total)
            head = starts.slice(first, stop - first + 1)
            row = head[0].as_py()
            count = head[len(head) - 1].as_py() - row
            yield (first, pa.chunked_array(_take_front(key_chunks, stop - first), type=key_type),
                   pc.subtract(head, pa.scalar(row, pa.int64())),
                   pa.Table.from_batches(_take_front(entry_chunks, count), schema=schema).combine_chunks())
        del key_chunks, entry_chunks, starts

    def keep(self, history: KeyHistory) -> None:
        """Keep one key's history past :meth:`release_batches` (a key planned as a copy: re-checked on it)."""
        if self._kept is not None:
            self._kept[history.key] = history

    def deleted(self) -> pa.Table:
        """The keys whose current entry is a delete marker (``key``, the marker's ``version_id`` and
        ``last_modified``), answered on the columns: what the prefix layout restores by default."""
        current = self.current_entries()
        return current.filter(current.column("is_delete_marker")).select(["key", "version_id", "last_modified"])


def _take_front(chunks: deque[Any], n: int) -> list[Any]:
    """The first ``n`` rows of ``chunks`` (arrays or record batches), taken off its front (a chunk cut in two
    leaves its rest at the front)."""
    out = []
    while n > 0 and chunks:
        chunk = chunks.popleft()
        if len(chunk) <= n:
            out.append(chunk)
            n -= len(chunk)
        else:
            out.append(chunk.slice(0, n))
            chunks.appendleft(chunk.slice(n))
            n = 0
    return out
