"""Version-aware reads of a table's own metadata, shared by every layout.

A metadata key is read from its newest version holding data, even under a delete marker (the incident
deleted it); a version that does not decode is recorded as bad, and the next older one is tried, so the plan
restores a good version. Each key is read once (cached). Every version is held to the metadata cap by its
*listed* size before it is fetched: a crafted object is never downloaded, let alone decoded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_fuse.errors import MetadataError
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.base import NeededObject, SkippedKey, VersionReader
from airflow_fuse.limits import metadata_cap, over_cap_advice
from airflow_fuse.listing import VersionEntry

T = TypeVar("T")
READ_WORKERS = 8  # metadata GETs in flight at once (a table has many manifests or segments)


@dataclass
class MetadataRead:
    """The outcome of reading one metadata key, newest good version first."""

    value: Any = None  # the decoded metadata; None when no version decoded
    version_id: str | None = None  # the version it was decoded from
    bad_versions: frozenset[str] = frozenset()
    damaged_reason: str = ""  # why the live version is bad, when it is
    problem: str = ""  # why nothing decoded


class MetadataReader:
    """Reads metadata keys of one listing, version-aware and bounded, and counts the GETs.

    :param what: what the metadata is, for messages ("Fuse metadata", "Delta log object", ...).
    :param stop_on: errors that are not damage (a format version we do not read): raised, not recorded.
    :param decode_kwargs: passed to every ``decode(key, data, **decode_kwargs)``.
    """

    def __init__(self, inventory: Inventory, reader: VersionReader, *, what: str = "metadata",
                 cap: int | None = None, stop_on: tuple[type[Exception], ...] = (),
                 decode_kwargs: dict[str, Any] | None = None) -> None:
        self.inventory = inventory
        self.reader = reader
        self.what = what
        self.cap = metadata_cap() if cap is None else cap
        self.stop_on = stop_on
        self.decode_kwargs = decode_kwargs or {}
        self.reads = 0
        self._cache: dict[str, MetadataRead] = {}
        self._lock = threading.Lock()

    def fetch(self, key: str, entry: VersionEntry) -> bytes:
        """One version's bytes; a version listed over the cap is never fetched."""
        if entry.size > self.cap:
            raise MetadataError(f"cannot read {self.what} {key!r}: version {entry.version_id} is listed at "
                                f"{entry.size:,} bytes, over the cap, so it was not read; {over_cap_advice(self.cap)}")
        with self._lock:
            self.reads += 1
        return self.reader.read(key, entry.version_id)

    def decode(self, key: str, entry: VersionEntry, decode: Callable[..., T]) -> T:
        return decode(key, self.fetch(key, entry), **self.decode_kwargs)

    def read_newest(self, key: str, decode: Callable[..., Any], expected_size: int | None = None) -> MetadataRead:
        """The newest version holding data (of ``expected_size`` bytes when the metadata that references the key
        records it) that decodes; older ones are tried in turn, and the ones that fail are bad versions."""
        if key in self._cache:
            return self._cache[key]
        result = MetadataRead()
        history = self.inventory.history(key)
        if history is None or not history.data_versions:
            why = "is not listed" if history is None else "has only delete markers left"
            result.problem = f"{key!r} {why}: no version to read it from"
            self._cache[key] = result
            return result
        versions = [v for v in history.data_versions if expected_size is None or v.size == expected_size]
        bad: dict[str, str] = {}
        for entry in versions:
            try:
                result.value, result.version_id = self.decode(key, entry, decode), entry.version_id
                break
            except self.stop_on:
                raise  # a format we do not read is not damage: stop and say so
            except MetadataError as exc:
                bad[entry.version_id] = str(exc)
        result.bad_versions = frozenset(bad)
        current = history.current
        if not current.is_delete_marker and current.version_id in bad:
            result.damaged_reason = f"the live version does not decode as {self.what} ({bad[current.version_id]})"
        if result.value is None:
            if bad:
                result.problem = (f"none of the {len(bad)} version(s) of {key!r} decodes "
                                  f"(newest: {next(iter(bad.values()))})")
            else:
                sizes = sorted({v.size for v in history.data_versions})
                result.problem = (f"no version of {key!r} has the size its metadata records ({expected_size} "
                                  f"bytes; versions have {sizes})")
        self._cache[key] = result
        return result

    def read_many(self, requests: list[tuple[str, Callable[..., Any], int | None]]) -> list[MetadataRead]:
        """``read_newest`` for distinct keys, several at a time."""
        if len(requests) <= 1:
            return [self.read_newest(*request) for request in requests]
        with ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="fuse-metadata") as pool:
            return list(pool.map(lambda request: self.read_newest(*request), requests))

    def newest_only(self, key: str, decode: Callable[..., T]) -> T | None:
        """The newest version holding data, or None when there is none. For pointer files: an older version is
        no fall-back, it names an older state of the table."""
        history = self.inventory.history(key)
        newest = history.newest_data if history is not None else None
        if newest is None:
            return None
        return self.decode(key, newest, decode)


class MetadataScan:
    """What a layout collects while it walks a table's metadata: the needed keys (deduplicated, the first one
    wins), the keys left alone on purpose, and warnings for the report."""

    def __init__(self, inventory: Inventory, metadata: MetadataReader) -> None:
        self.inventory = inventory
        self.metadata = metadata
        self.needed: dict[str, NeededObject] = {}
        self.skipped: list[SkippedKey] = []
        self.warnings: list[str] = []

    def _need(self, obj: NeededObject) -> None:
        self.needed.setdefault(obj.key, obj)

    def _need_metadata(self, key: str, kind: str, read: MetadataRead, expected_size: int | None = None) -> None:
        """A metadata key the table needs, with the versions that did not decode; a warning when none did."""
        if key in self.needed:
            return
        self._need(NeededObject(key, kind=kind, expected_size=expected_size, bad_versions=read.bad_versions,
                                damaged_reason=read.damaged_reason))
        if read.value is None:
            self.warnings.append(f"{kind} {read.problem}; it is still listed as needed, but the objects it "
                                 "references cannot be listed")

    def _has_data(self, key: str) -> bool:
        history = self.inventory.history(key)
        return history is not None and history.newest_data is not None
