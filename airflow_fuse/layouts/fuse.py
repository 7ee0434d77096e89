"""The ``fuse`` layout: which keys a Databend Fuse table needs, read from its own metadata.

The table needs its current snapshot, the snapshot's segments, each segment's ``_hs`` statistics, the
blocks the segments list and every index file of those blocks. Everything else under the table root
(older snapshots, blocks replaced by compaction, objects Databend's own garbage collection deleted) is
not needed, and restoring it would only bring garbage back.

Metadata is read version-aware and never written: for each metadata key, the newest version holding
data is read even when a delete marker lies on top of it (the incident deleted it), and a version that
does not decode is recorded as bad so the plan restores an older, good one instead. Only metadata is
read (one GET per version tried); data files are judged by the sizes and row counts the metadata records.
Reading is bounded (see limits.py): a version listed larger than the cap is bad without being read, and
one that decompresses past it is bad too, so a crafted object cannot exhaust memory.

Every location found in metadata must stay inside the table root: a damaged or crafted snapshot must
not make a restore touch another table's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_fuse.errors import MetadataError
from airflow_fuse.formats import TableFormat
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.base import (
    LayoutResult,
    NeededObject,
    SkippedKey,
    TableSummary,
    VersionReader,
    check_table_roots,
)
from airflow_fuse.layouts.fuse_format import (
    BlockMeta,
    Hint,
    IndexInfo,
    Segment,
    Snapshot,
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
from airflow_fuse.layouts.metadata import MetadataReader, MetadataScan
from airflow_fuse.limits import metadata_cap

HINT_V2 = "last_snapshot_location_hint_v2"
HINT_LEGACY = "last_snapshot_location_hint"
SNAPSHOT_DIR = "_ss"
INVERTED_INDEX_DIR = "_i_i/"
POINTER_REASON = ("deleted pointer file, left deleted: Databend rewrites it after every commit, so bringing back an "
                  "old version could point the table at an older snapshot; Databend reads the current snapshot's "
                  "location from its meta service, not from this file")



# finding tables -------------------------------------------------------------------------------------

@dataclass
class FuseTable:
    """One table found under the listed location, and the keys that identify it."""

    table_root: str  # "tbl/1/6/"
    table_prefix: str  # "1/6": metadata locations start with it
    storage_root: str  # "tbl/": metadata locations are relative to it
    snapshot_keys: list[str] = field(default_factory=list)  # every _ss/ key listed, deleted ones included
    hint_keys: dict[str, str] = field(default_factory=dict)  # hint file name -> key

    def key(self, location: str) -> str:
        return self.storage_root + location


def _table_root_of(key: str) -> tuple[str, str] | None:
    """(table root, what identified it) for a snapshot or hint key, else None."""
    parent, _, name = key.rpartition("/")
    if name in (HINT_V2, HINT_LEGACY):
        return key[: len(key) - len(name)], name
    if (parent == SNAPSHOT_DIR or parent.endswith("/" + SNAPSHOT_DIR)) and snapshot_id_from_name(name):
        return parent[: len(parent) - len(SNAPSHOT_DIR)], SNAPSHOT_DIR
    return None


def _new_table(table_root: str) -> FuseTable:
    # The table prefix is <database id>/<table id>: the last two segments of the table root.
    segments = [part for part in table_root.split("/") if part]
    table_prefix = "/".join(segments[-2:])
    storage_root = table_root[: len(table_root) - len(table_prefix) - 1] if table_prefix else ""
    return FuseTable(table_root=table_root, table_prefix=table_prefix, storage_root=storage_root)


def find_tables(inventory: Inventory) -> list[FuseTable]:
    """Every Fuse table with a snapshot or hint key in the listing (delete markers count: a listing shows
    keys the incident deleted), in key order."""
    tables: dict[str, FuseTable] = {}
    for key in inventory.keys():
        found = _table_root_of(key)
        if found is None:
            continue
        root, what = found
        if root not in tables:
            tables[root] = _new_table(root)
        table = tables[root]
        if what == SNAPSHOT_DIR:
            table.snapshot_keys.append(key)
        else:
            table.hint_keys[what] = key
    return [tables[root] for root in sorted(tables)]


def detect(inventory: Inventory) -> bool:
    """True when the listing holds a Fuse table: a ``_ss/`` snapshot key or a hint file, deleted or not."""
    return any(_table_root_of(key) is not None for key in inventory.keys())


# the layout -----------------------------------------------------------------------------------------

class FuseLayout:
    """The keys a Databend Fuse table needs: its current snapshot and everything that snapshot references.

    :param table_prefix: with several tables under the location, the one to restore (``"1/6"``).
    :param snapshot_location: the snapshot to restore to, as Databend's ``SHOW CREATE TABLE`` prints it
        (``1/6/_ss/h01a…_v4.mpk``, relative to the storage root); default: the hint file's, else the newest.
    :param include_history: also keep the older snapshots of the ``prev_snapshot_id`` chain and everything
        they reference (time travel), as far as listed versions allow.
    """

    name = "fuse"

    def __init__(self, *, table_prefix: str | None = None, snapshot_location: str | None = None,
                 include_history: bool = False) -> None:
        self.table_prefix = table_prefix.strip("/") if table_prefix else None
        self.snapshot_location = snapshot_location.strip() if snapshot_location else None
        self.include_history = include_history

    def needed(self, inventory: Inventory, reader: VersionReader) -> LayoutResult:
        found = find_tables(inventory)
        tables = self._select(found, inventory)
        cap = metadata_cap()
        scan = _TableScan(inventory, MetadataReader(inventory, reader, what="Fuse metadata", cap=cap,
                                                    stop_on=(UnsupportedFormatError,),
                                                    decode_kwargs={"max_bytes": cap}))
        summaries = [scan.table(table, snapshot_location=self.snapshot_location,
                                include_history=self.include_history) for table in tables]
        info: dict[str, Any] = {
            "tables_found": [table.table_root for table in found],
            "metadata_reads": scan.metadata.reads,
            "warnings": scan.warnings,
        }
        if len(summaries) == 1:
            info["snapshot_source"] = summaries[0]["snapshot_source"]
            info["snapshot_key"] = summaries[0]["snapshot_key"]
        return LayoutResult(needed=list(scan.needed.values()), skipped=scan.skipped, info=info, tables=summaries)

    def _select(self, tables: list[FuseTable], inventory: Inventory) -> list[FuseTable]:
        where = f"s3://{inventory.bucket}/{inventory.prefix}"
        check_table_roots([t.table_root for t in tables], inventory, what="Fuse",
                          how_found="no Databend _ss/ snapshot key and no last_snapshot_location_hint file is "
                                    "listed there",
                          give="the table root (…/<database id>/<table id>/) or the storage root of CREATE TABLE")
        names = ", ".join(f"{t.table_prefix} ({t.table_root})" for t in tables)
        if self.table_prefix is not None:
            chosen = [t for t in tables if t.table_prefix == self.table_prefix]
            if not chosen:
                raise MetadataError(f"table_prefix {self.table_prefix!r} is not a Fuse table under {where}; "
                                    f"tables found: {names}")
            return chosen
        if self.snapshot_location and len(tables) > 1:
            chosen = [t for t in tables if _location_in_table(t, self.snapshot_location) is not None]
            if len(chosen) != 1:
                raise MetadataError(f"snapshot_location {self.snapshot_location!r} does not name one table under "
                                    f"{where}; give table_prefix= too. Tables found: {names}")
            return chosen
        return tables


def _location_in_table(table: FuseTable, path: str) -> str | None:
    """A snapshot path (a location, a bucket key, or a hint's "/<root>/<location>") as a location of ``table``."""
    path = path.lstrip("/")
    if not table.table_prefix:
        return path[len(table.storage_root):] if path.startswith(table.storage_root) else path
    if path.startswith(table.table_root):
        return path[len(table.storage_root):]
    if path.startswith(table.table_prefix + "/"):
        return path
    # Databend's operator root is not always the bucket prefix we listed: find the table prefix in the path.
    marker = f"/{table.table_prefix}/{SNAPSHOT_DIR}/"
    at = path.find(marker)
    return path[at + 1:] if at >= 0 else None


def _snapshot_id_of(key: str) -> str:
    return snapshot_id_from_name(key.rsplit("/", 1)[-1]) or ""


def _resolve(table: FuseTable, location: str, source: str, what: str) -> str:
    """The bucket key of a location read from ``source``; refuses anything outside the table root."""
    parts = location.split("/") if isinstance(location, str) else [""]
    inside = (
        isinstance(location, str) and not location.startswith("/") and "\x00" not in location
        and all(part not in ("", ".", "..") for part in parts)
        and (not table.table_prefix or location.startswith(table.table_prefix + "/"))
    )
    if not inside:
        raise MetadataError(
            f"{source!r} gives the {what} location {location!r}, which is outside the table root "
            f"{table.table_root!r}: the metadata is damaged or was not written by Databend for this table. "
            "Nothing was read or written for it; check that object (pass snapshot_location= to use another "
            "snapshot)")
    return table.key(location)


class _TableScan(MetadataScan):
    """Walks one or more tables' metadata and collects the needed keys (deduplicated, first one wins)."""

    def __init__(self, inventory: Inventory, metadata: MetadataReader) -> None:
        super().__init__(inventory, metadata)
        self._listed_inverted: dict[str, dict[str, list[str]]] = {}  # table root -> block id -> _i_i/ keys
        self._segment_blocks: dict[str, list[BlockMeta]] = {}  # segments already expanded (shared by snapshots)

    # one table ----------------------------------------------------------------------------------------
    def table(self, table: FuseTable, *, snapshot_location: str | None, include_history: bool) -> TableSummary:
        hint = self._read_hint(table)
        snapshot_key, source = self._current_snapshot(table, hint, snapshot_location)
        for hint_key in table.hint_keys.values():
            history = self.inventory.history(hint_key)
            if history is not None and history.is_deleted:  # the one a user might expect back: say why not
                self.skipped.append(SkippedKey(hint_key, POINTER_REASON, kind="hint"))
        indexes = self._inverted_indexes(table, hint)
        read = self.metadata.read_newest(snapshot_key, decode_snapshot)
        self._need_metadata(snapshot_key, "snapshot", read)
        snapshot: Snapshot | None = read.value
        blocks = self._expand_snapshot(table, snapshot_key, snapshot, indexes) if snapshot else []
        summary: dict[str, Any] = {
            "table_root": table.table_root,
            "table_prefix": table.table_prefix,
            "storage_root": table.storage_root,
            "snapshot_key": snapshot_key,
            "snapshot_location": snapshot_key[len(table.storage_root):],
            "snapshot_source": source,
            "snapshot_id": snapshot.snapshot_id if snapshot else None,
            "format_version": snapshot.format_version if snapshot else None,
            "row_count": snapshot.row_count if snapshot else None,
            "block_count": snapshot.block_count if snapshot else None,
            "segment_count": len(snapshot.segments) if snapshot else None,
            "blocks_listed": len(blocks),
            "block_rows": sum(block.row_count or 0 for block in blocks),
            "inverted_indexes": sorted(index.name for index in indexes) if indexes is not None else None,
        }
        if snapshot and snapshot.row_count is not None and summary["block_rows"] != snapshot.row_count:
            self.warnings.append(f"{snapshot_key!r} records {snapshot.row_count} rows, its blocks "
                                 f"{summary['block_rows']}: some segment could not be read, or the metadata is "
                                 "inconsistent")
        if include_history:
            summary["history"] = self._history(table, snapshot, indexes) if snapshot else []
        return TableSummary.from_facts("fuse", summary,
                                       state="snapshot_key", source="snapshot_source", files="blocks_listed")

    # the current snapshot -----------------------------------------------------------------------------
    def _read_hint(self, table: FuseTable) -> Hint | None:
        """The newest hint version holding data (v2 first). Older versions point at older snapshots, so a
        hint that does not decode is not replaced by an older one: the newest snapshot key is used instead."""
        for name in (HINT_V2, HINT_LEGACY):
            key = table.hint_keys.get(name)
            history = self.inventory.history(key) if key else None
            newest = history.newest_data if history else None
            if key is None or newest is None:
                continue
            try:
                return self.metadata.decode(key, newest, decode_hint)
            except MetadataError as exc:
                self.warnings.append(f"hint file unusable, ignored: {exc}")
        return None

    def _current_snapshot(self, table: FuseTable, hint: Hint | None,
                          snapshot_location: str | None) -> tuple[str, str]:
        if snapshot_location:
            location = _location_in_table(table, snapshot_location)
            if location is None:
                raise MetadataError(f"snapshot_location {snapshot_location!r} is not in table {table.table_root!r} "
                                    f"(table prefix {table.table_prefix!r})")
            key = _resolve(table, location, "snapshot_location", "snapshot")
            if key not in self.inventory:
                listed = ", ".join(k[len(table.storage_root):] for k in table.snapshot_keys[-5:]) or "none"
                raise MetadataError(f"snapshot_location {snapshot_location!r} ({key!r}) is not listed under "
                                    f"{table.table_root!r}; newest snapshots listed: {listed}")
            return key, "snapshot_location"
        if hint is not None:
            key = self._hint_snapshot_key(table, hint)
            if key is not None:
                self._warn_if_newer_snapshot(table, key)
                return key, "hint_legacy" if hint.legacy else "hint_v2"
        return self._newest_snapshot(table)

    def _hint_snapshot_key(self, table: FuseTable, hint: Hint) -> str | None:
        hint_key = table.hint_keys.get(HINT_LEGACY if hint.legacy else HINT_V2, "hint")
        location = _location_in_table(table, hint.snapshot_full_path)
        if location is None:
            raise MetadataError(f"{hint_key!r} points at {hint.snapshot_full_path!r}, which is outside the table "
                                f"root {table.table_root!r}: pass snapshot_location= to choose the snapshot")
        key = _resolve(table, location, hint_key, "snapshot")
        history = self.inventory.history(key)
        if history is None or history.newest_data is None:
            self.warnings.append(f"{hint_key!r} points at {key!r}, which has no version holding data; using the "
                                 "newest snapshot listed instead")
            return None
        return key

    def _warn_if_newer_snapshot(self, table: FuseTable, key: str) -> None:
        # The hint is written after the commit, best effort: a newer snapshot may be a commit whose hint
        # write failed, or an aborted one. Only Databend's meta service knows; say so.
        chosen = _snapshot_id_of(key)
        if uuid_version(chosen) != 7:
            return  # random ids say nothing about order
        newer = [k for k in table.snapshot_keys
                 if uuid_version(_snapshot_id_of(k)) == 7 and _snapshot_id_of(k) > chosen and self._has_data(k)]
        if newer:
            self.warnings.append(f"the hint file names {key!r}, but newer snapshot(s) are listed ({newer[-1]!r}, "
                                 f"{len(newer)} in all); if SHOW CREATE TABLE shows one of those, pass it as "
                                 "snapshot_location=")

    def _has_data(self, key: str) -> bool:
        history = self.inventory.history(key)
        return history is not None and history.newest_data is not None

    def _newest_snapshot(self, table: FuseTable) -> tuple[str, str]:
        candidates = [k for k in table.snapshot_keys if self._has_data(k)]
        if not candidates:
            raise MetadataError(f"table {table.table_root!r} has no snapshot with a version holding data and no "
                                "usable hint file: its metadata cannot be read; use table_format='prefix'")
        # UUID v7 ids start with their creation time: the greatest is the newest (and newer than any v4 id,
        # which older builds wrote before an upgrade).
        time_ordered = [k for k in candidates if uuid_version(_snapshot_id_of(k)) == 7]
        if time_ordered:
            return max(time_ordered, key=_snapshot_id_of), "newest_snapshot_name"
        return self._newest_by_time(candidates), "newest_snapshot_time"

    def _newest_by_time(self, candidates: list[str]) -> str:
        """Random (v4) ids: the snapshot whose data version was written last. LastModified has a one-second
        resolution, so ties are broken by reading the tied snapshots: the head of their chain, then the
        snapshot's own timestamp."""
        def written(key: str) -> datetime:
            history = self.inventory.history(key)
            newest = history.newest_data if history is not None else None
            return newest.last_modified if newest is not None else datetime.min.replace(tzinfo=timezone.utc)

        latest = max(written(k) for k in candidates)
        tied = [k for k in candidates if written(k) == latest]
        if len(tied) == 1:
            return tied[0]
        snapshots = {k: self.metadata.read_newest(k, decode_snapshot).value for k in tied}
        decoded = {k: s for k, s in snapshots.items() if s is not None}
        if not decoded:
            return max(tied)
        previous = {s.prev_snapshot_id[0] for s in decoded.values() if s.prev_snapshot_id}
        heads = [k for k, s in decoded.items() if s.snapshot_id not in previous] or list(decoded)
        return max(heads, key=lambda k: (decoded[k].timestamp or "", k))

    # what a snapshot references -----------------------------------------------------------------------
    def _inverted_indexes(self, table: FuseTable, hint: Hint | None) -> list[IndexInfo] | None:
        """The table's inverted indexes from the hint; None when unknown (then the listing is searched)."""
        if hint is None or hint.legacy:
            return None
        return hint.inverted_indexes

    def _expand_snapshot(self, table: FuseTable, key: str, snapshot: Snapshot,
                         indexes: list[IndexInfo] | None) -> list[BlockMeta]:
        if snapshot.table_statistics_location:
            stats_key = _resolve(table, snapshot.table_statistics_location, key, "table statistics")
            self._need(NeededObject(stats_key, kind="table_statistics"))
        if snapshot.stats_location:
            self._need(NeededObject(_resolve(table, snapshot.stats_location, key, "statistics"),
                                    kind="segment_stats"))
        blocks: list[BlockMeta] = []
        segment_keys = [_resolve(table, location, key, "segment") for location, _version in snapshot.segments]
        # Segments are read by a bounded pool (a big table has thousands), then expanded in snapshot order.
        new = list(dict.fromkeys(k for k in segment_keys if k not in self._segment_blocks))  # older snapshots share
        self.metadata.read_many([(segment_key, decode_segment, None) for segment_key in new])  # most segments
        for segment_key in segment_keys:
            if segment_key not in self._segment_blocks:
                read = self.metadata.read_newest(segment_key, decode_segment)  # from the cache
                self._need_metadata(segment_key, "segment", read)
                segment_blocks = self._expand_segment(table, segment_key, read.value, indexes) if read.value else []
                self._segment_blocks[segment_key] = segment_blocks
            blocks += self._segment_blocks[segment_key]
        return blocks

    def _expand_segment(self, table: FuseTable, key: str, segment: Segment,
                        indexes: list[IndexInfo] | None) -> list[BlockMeta]:
        if segment.stats_location:
            self._need(NeededObject(_resolve(table, segment.stats_location, key, "segment statistics"),
                                    kind="segment_stats", expected_size=segment.stats_size))
        for block in segment.blocks:
            self._need_block(table, key, block, indexes)
        return segment.blocks

    def _need_block(self, table: FuseTable, segment_key: str, block: BlockMeta,
                    indexes: list[IndexInfo] | None) -> None:
        self._need(NeededObject(_resolve(table, block.location, segment_key, "block"), kind="block",
                                expected_size=block.file_size, row_count=block.row_count, parquet=True))
        files: list[tuple[str | None, str, int | None]] = [
            (block.bloom_index_location, "bloom_index", block.bloom_index_size),
            (block.vector_index_location, "vector_index", block.vector_index_size),
            (block.spatial_index_location, "spatial_index", block.spatial_index_size),
            (block.virtual_location, "virtual_column", block.virtual_size),
            *((path, "granule_index", size) for path, size in block.granule_index_files),
        ]
        for location, kind, size in files:
            if location:
                self._need(NeededObject(_resolve(table, location, segment_key, kind.replace("_", " ")), kind=kind,
                                        expected_size=size))
        inverted = self._inverted_keys(table, segment_key, block, indexes)
        # inverted_index_size is the total over the block's inverted indexes: a size check only with one.
        size = block.inverted_index_size if len(inverted) == 1 else None
        for inverted_key in inverted:
            self._need(NeededObject(inverted_key, kind="inverted_index", expected_size=size))

    def _inverted_keys(self, table: FuseTable, segment_key: str, block: BlockMeta,
                       indexes: list[IndexInfo] | None) -> list[str]:
        """Inverted index files are named after the block, not listed in metadata: derive the names, and
        keep those the listing shows were written (blocks written before an index was created and not
        refreshed have none)."""
        if indexes is None:
            return self._listed_inverted_keys(table).get(block_id_from_location(block.location), [])
        keys = []
        for index in indexes:
            location = inverted_index_location(block.location, index.name, index.version)
            key = _resolve(table, location, segment_key, f"inverted index {index.name!r}")
            if key in self.inventory:
                keys.append(key)
        return keys

    def _listed_inverted_keys(self, table: FuseTable) -> dict[str, list[str]]:
        """block id -> listed ``_i_i/`` keys, for tables whose hint (and so index versions) is unknown."""
        if table.table_root not in self._listed_inverted:
            by_block: dict[str, list[str]] = {}
            prefix = table.table_root + INVERTED_INDEX_DIR
            for key in self.inventory.keys():
                if key.startswith(prefix) and key.endswith(".index"):
                    by_block.setdefault(key.rsplit("/", 1)[-1][:32], []).append(key)
            if by_block:
                self.warnings.append(f"index versions of {table.table_root!r} are unknown (no readable "
                                     "last_snapshot_location_hint_v2): every listed _i_i/ file of a referenced block "
                                     "is kept, including files of dropped indexes")
            self._listed_inverted[table.table_root] = by_block
        return self._listed_inverted[table.table_root]

    # time travel --------------------------------------------------------------------------------------
    def _history(self, table: FuseTable, snapshot: Snapshot, indexes: list[IndexInfo] | None) -> list[dict]:
        """Follow prev_snapshot_id as far as listed versions allow; keep each snapshot and what it references."""
        chain: list[dict] = []
        seen = {snapshot.snapshot_id}
        listed = {k.rsplit("/", 1)[-1]: k for k in table.snapshot_keys}
        previous = snapshot.prev_snapshot_id
        while previous is not None:
            snapshot_id, version = previous
            if snapshot_id in seen:
                self.warnings.append(f"snapshot {snapshot_id} appears twice in the prev_snapshot_id chain of "
                                     f"{table.table_root!r}; the chain is cut there")
                break
            seen.add(snapshot_id)
            key = next((listed[name] for name in snapshot_file_names(snapshot_id, version) if name in listed), None)
            if key is None:
                chain.append({"snapshot_id": snapshot_id, "key": None, "state": "not-listed"})
                break
            history = self.inventory.history(key)
            state = "deleted" if history is not None and history.is_deleted else "present"
            read = self.metadata.read_newest(key, decode_snapshot)
            self._need_metadata(key, "snapshot", read)
            chain.append({"snapshot_id": snapshot_id, "key": key, "state": state})
            if read.value is None:
                break
            self._expand_snapshot(table, key, read.value, indexes)
            previous = read.value.prev_snapshot_id
        return chain


def _build(layout_options: Any, times: Any) -> FuseLayout:  # noqa: ARG001 - times do not apply to fuse tables
    return FuseLayout(table_prefix=layout_options.get("table_prefix"),
                      snapshot_location=layout_options.get("snapshot_location"),
                      include_history=bool(layout_options.get("include_history")))


FORMAT = TableFormat(
    name="fuse",
    title="Databend Fuse",
    build=_build,
    detect=detect,
    options={"table_prefix": "only this table (<db_id>/<table_id>) under the location",
             "snapshot_location": "the snapshot to restore to, as SHOW CREATE TABLE prints it",
             "include_history": "also restore the chain of previous snapshots (time travel)"},
    row_kinds=frozenset({"block"}),
)
