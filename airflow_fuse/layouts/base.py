"""What every layout gives the planner: the keys a table needs, with what its metadata knows of each."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from airflow_fuse.inventory import Inventory

# Pointer files are rewritten in place after every commit: rolling one back in time silently reverts
# the table to an older snapshot, so they are never rolled back unless named explicitly.
POINTER_FILE_NAMES = (
    "last_snapshot_location_hint",
    "last_snapshot_location_hint_v2",
    "version-hint.text",
    "_last_checkpoint",
)


def is_pointer_file(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in POINTER_FILE_NAMES


@dataclass(slots=True)
class NeededObject:
    """A key the table needs, and how to tell a good version of it from a bad one."""

    key: str
    kind: str = "object"
    expected_size: int | None = None  # from metadata: a version of another size is damaged
    row_count: int | None = None  # rows the metadata says the block holds (verification)
    parquet: bool = False  # a Parquet data file (footer checks in verification)
    bad_versions: frozenset[str] = frozenset()  # versions known to be bad (failed to decode)
    as_of: datetime | None = None  # restore the version current at this time, not the newest
    damaged_reason: str = ""  # why the live version is bad, when the layout found out by reading it


@dataclass(slots=True)
class SkippedKey:
    key: str
    reason: str
    kind: str = "object"


@dataclass
class LayoutResult:
    """The needed keys, keys deliberately left alone (with why), and facts for the report."""

    needed: list[NeededObject]
    skipped: list[SkippedKey] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)  # per table found (fuse): root, rows, ...


class VersionReader(Protocol):
    """Reads one version of one object (metadata reads are version-aware: no write needed to scan)."""

    def read(self, key: str, version_id: str) -> bytes: ...


class Layout(Protocol):
    name: str

    def needed(self, inventory: Inventory, reader: VersionReader) -> LayoutResult: ...
