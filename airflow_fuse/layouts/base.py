"""What every layout gives the planner: the keys a table needs, with what its metadata knows of each."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from airflow_fuse.errors import MetadataError
from airflow_fuse.inventory import Inventory

if TYPE_CHECKING:
    from airflow_fuse.deleted_plan import DeletedKeys

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


@dataclass(eq=False)
class TableSummary(Mapping[str, Any]):
    """One table found under the location: the facts every format gives (typed), and its own (``details``).

    Reads like the mapping it is stored as (``summary["row_count"]``, ``summary["snapshot_key"]``): plans and
    reports keep it as a JSON object with the typed fields and the details side by side.
    """

    table_root: str = ""
    table_format: str = ""
    state: str | None = None  # the metadata object the table's state was read from (snapshot, metadata.json, log)
    state_source: str | None = None  # how that object was chosen (hint file, newest listed, given, ...)
    row_count: int | None = None  # rows the metadata says the table's data files hold (verification)
    data_files: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    _TYPED = ("table_root", "table_format", "state", "state_source", "row_count", "data_files")

    @classmethod
    def from_facts(cls, table_format: str, facts: Mapping[str, Any], *, state: str, source: str,
                   files: str) -> TableSummary:
        """A layout's facts, with the keys that hold the typed fields named (the facts stay as details too)."""
        value = facts.get(state)
        label = None if value is None else f"{state} {value}" if isinstance(value, int) else str(value)
        return cls(table_root=str(facts.get("table_root", "")), table_format=table_format, state=label,
                   state_source=facts.get(source), row_count=facts.get("row_count"), data_files=facts.get(files),
                   details={k: v for k, v in facts.items() if k not in cls._TYPED})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSummary:
        """Back from its stored form (a plan or report file)."""
        return cls(**{k: data.get(k) for k in cls._TYPED if k in data},
                   details={k: v for k, v in data.items() if k not in cls._TYPED})

    def as_dict(self) -> dict[str, Any]:
        return {**self.details, **{k: getattr(self, k) for k in self._TYPED}}

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    def line(self) -> str:
        """One line for the report."""
        rows = "?" if self.row_count is None else self.row_count
        files = "?" if self.data_files is None else self.data_files
        return (f"table {self.table_root} ({self.table_format}): {self.state or 'no readable state'}"
                f"{f' (from {self.state_source})' if self.state_source else ''}, {rows} rows, {files} data files")


@dataclass
class LayoutResult:
    """The needed keys, keys deliberately left alone (with why), and facts for the report."""

    needed: list[NeededObject]
    skipped: list[SkippedKey] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    tables: list[TableSummary] = field(default_factory=list)  # one per table found
    # Instead of ``needed``/``skipped``: every key whose current entry is a delete marker (inside the window) is
    # needed with no metadata checks, the other deleted keys are skipped; planned on the inventory's columns.
    deleted: DeletedKeys | None = None


def check_table_roots(roots: list[str], inventory: Inventory, *, what: str, how_found: str, give: str) -> None:
    """Refuse a location with no table of this format, or one inside a table (not its root): the whole table must
    be listed, or the keys it needs outside the listing would look missing. ``how_found`` says which keys mark a
    table; ``give`` what to give instead."""
    where = f"s3://{inventory.bucket}/{inventory.prefix}"
    if not roots:
        raise MetadataError(f"no {what} table under {where}: {how_found}. Give {give}, or use "
                            "table_format='prefix' for a table of plain files")
    outside = [root for root in roots if not root.startswith(inventory.prefix)]
    if outside:
        raise MetadataError(f"{where} is inside the {what} table {outside[0]!r}, not its root: give "
                            f"s3://{inventory.bucket}/{outside[0]} so the whole table is listed")


class VersionReader(Protocol):
    """Reads one version of one object (metadata reads are version-aware: no write needed to scan)."""

    def read(self, key: str, version_id: str) -> bytes: ...


class Layout(Protocol):
    name: str

    def needed(self, inventory: Inventory, reader: VersionReader) -> LayoutResult: ...
