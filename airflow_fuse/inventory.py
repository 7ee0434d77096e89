"""Inventory: one ListObjectVersions sweep of the table prefix, held as a pyarrow Table.

Every entry (data version or delete marker) is one row, in listing order: keys ascending, each key's
entries newest first. Per-key questions (is the current entry a delete marker, which is the newest
version holding data, which version was current at a time) are answered from a key's contiguous rows.
A million entries take tens of megabytes as Arrow columns, not the gigabytes of Python dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from airflow_fuse.listing import VersionEntry, iter_object_versions

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("version_id", pa.string()),
        ("is_delete_marker", pa.bool_()),
        ("is_latest", pa.bool_()),
        ("size", pa.int64()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
        ("etag", pa.string()),
    ]
)
_BATCH = 50_000


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


class Inventory:
    """Every version and delete marker under ``bucket/prefix``, from one listing sweep."""

    def __init__(self, bucket: str, prefix: str, table: pa.Table, *, pages: int = 0, seconds: float = 0.0,
                 listed_at: datetime | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.table = table
        self.pages = pages
        self.seconds = seconds
        self.listed_at = listed_at or datetime.now(timezone.utc)
        self._offsets: dict[str, tuple[int, int]] | None = None
        self._columns: dict[str, list] | None = None

    # building -------------------------------------------------------------------------------------
    @classmethod
    def from_entries(cls, bucket: str, prefix: str, entries: Iterable[VersionEntry], **kwargs: Any) -> Inventory:
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
        return cls(bucket, prefix, table, **kwargs)

    @classmethod
    def sweep(cls, client: Any, bucket: str, prefix: str, *,
              on_page: Callable[[int], None] | None = None) -> Inventory:
        """One paginated ListObjectVersions walk of ``prefix``."""
        started = time.monotonic()
        pages = 0

        def count(n: int) -> None:
            nonlocal pages
            pages += 1
            if on_page is not None:
                on_page(n)

        listed_at = datetime.now(timezone.utc)
        inventory = cls.from_entries(bucket, prefix, iter_object_versions(client, bucket, prefix, on_page=count),
                                     listed_at=listed_at)
        inventory.pages = pages
        inventory.seconds = time.monotonic() - started
        return inventory

    # reading --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    def _cols(self) -> dict[str, list]:
        if self._columns is None:
            self._columns = {name: self.table.column(name).to_pylist() for name in SCHEMA.names}
        return self._columns

    def _index(self) -> dict[str, tuple[int, int]]:
        if self._offsets is None:
            offsets: dict[str, tuple[int, int]] = {}
            keys = self._cols()["key"]
            start = 0
            for i in range(1, len(keys) + 1):
                if i == len(keys) or keys[i] != keys[start]:
                    offsets[keys[start]] = (start, i)
                    start = i
            self._offsets = offsets
        return self._offsets

    def keys(self) -> list[str]:
        return list(self._index())

    def __contains__(self, key: object) -> bool:
        return key in self._index()

    def _history(self, key: str, start: int, stop: int) -> KeyHistory:
        c = self._cols()
        return KeyHistory(
            key,
            tuple(
                VersionEntry(key, c["version_id"][i], c["is_delete_marker"][i], c["is_latest"][i], c["size"][i],
                             c["last_modified"][i], c["etag"][i])
                for i in range(start, stop)
            ),
        )

    def history(self, key: str) -> KeyHistory | None:
        span = self._index().get(key)
        return None if span is None else self._history(key, *span)

    def histories(self) -> Iterator[KeyHistory]:
        for key, (start, stop) in self._index().items():
            yield self._history(key, start, stop)

    @property
    def key_count(self) -> int:
        return len(self._index())
