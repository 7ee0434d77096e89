"""The ``iceberg`` layout: which keys an Apache Iceberg table needs, read from its own metadata.

The table root holds ``metadata/`` and ``data/``. The table needs its current ``metadata.json``, and for
every snapshot that metadata retains (``snapshots``): the snapshot's manifest list, the manifests in it, and
in each manifest the files of its ADDED and EXISTING entries (data files, position and equality delete
files, deletion vectors); DELETED entries are tombstones of their snapshot and are not needed. Statistics
and partition statistics (Puffin) files listed in the metadata are needed too. ``current_snapshot_only``
keeps only what the current snapshot reaches. Files that snapshot expiry or orphan-file removal deleted are
not reachable from the metadata, so they stay deleted.

The current metadata is the one given (``metadata_location``, as the catalog reports it), else the one
``metadata/version-hint.text`` names (Hadoop tables), else the listed ``*.metadata.json`` with the highest
version number (``00042-<uuid>.metadata.json``, ``v42.metadata.json``), deleted ones included. Older
metadata files (``metadata-log``) come back only with ``include_history``. ``version-hint.text`` is a
pointer file: it is never rolled back unless named in ``rollback_keys``.

Metadata is read version-aware and never written: for each metadata key, the newest version holding data
is read even under a delete marker, and a version that does not decode (JSON, Avro) or has another size
than the manifest list records is passed over, so the plan restores an older, good one. Manifests and
manifest lists are Avro, read with fastavro.

Paths in Iceberg metadata are absolute URIs (``s3://bucket/key``) and used as written: a partition value
``New York`` is the key ``city=New+York``, never percent-decoded. Every path must be in the listed bucket and
inside the table root: a damaged or crafted metadata file must not make a restore touch other keys.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
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
from airflow_fuse.layouts.metadata import MetadataReader, MetadataScan

METADATA_DIR = "metadata"
HINT_NAME = "version-hint.text"
SCHEMES = ("s3://", "s3a://", "s3n://")
SUPPORTED_FORMAT_VERSIONS = (1, 2, 3)
# 00042-<uuid>.metadata.json (catalogs), v42.metadata.json (Hadoop tables); ".gz" before ".metadata.json"
# when compressed.
_METADATA_NAME = re.compile(r"^(?:v(\d+)|(\d+)-[^/]*?)(?:\.gz)?\.metadata\.json$")
STATUS_EXISTING, STATUS_ADDED, STATUS_DELETED = 0, 1, 2
CONTENT_DATA, CONTENT_POSITION_DELETES, CONTENT_EQUALITY_DELETES = 0, 1, 2
HINT_REASON = ("deleted pointer file, left deleted: version-hint.text is rewritten after every commit of a Hadoop "
               "table, so bringing back an old version could point readers at an older metadata file; without it "
               "readers find the newest vN.metadata.json by listing. Name it in rollback_keys to restore it")
HISTORY_REASON = ("older table metadata (metadata-log), left deleted: the current metadata does not need it; pass "
                  "include_history=True to restore it")



class UnsupportedIcebergError(MetadataError):
    """A metadata file in a format this layout does not read (not damage: nothing is restored from it)."""


# finding tables -------------------------------------------------------------------------------------

@dataclass
class IcebergTable:
    """One table found under the listed location: its root and its listed metadata keys."""

    root: str  # "lake/db/t/"
    metadata_keys: list[str] = field(default_factory=list)  # every listed *.metadata.json, deleted ones included
    hint_key: str | None = None

    @property
    def metadata_prefix(self) -> str:
        return self.root + METADATA_DIR + "/"


def metadata_version(key: str) -> int | None:
    """The version number in a metadata file name (``00042-<uuid>.metadata.json`` → 42), else None."""
    match = _METADATA_NAME.match(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def _root_of(key: str) -> tuple[str, str] | None:
    """(table root, "metadata" or "hint") for a metadata.json or version-hint key, else None."""
    parent, _, name = key.rpartition("/")
    if parent != METADATA_DIR and not parent.endswith("/" + METADATA_DIR):
        return None
    root = parent[: len(parent) - len(METADATA_DIR)]
    if name.endswith(".metadata.json"):
        return root, "metadata"
    if name == HINT_NAME:
        return root, "hint"
    return None


def find_tables(inventory: Inventory) -> list[IcebergTable]:
    """Every table with a ``metadata/*.metadata.json`` key in the listing (deleted ones count), in key order."""
    tables: dict[str, IcebergTable] = {}
    hints: dict[str, str] = {}
    for key in inventory.keys():
        found = _root_of(key)
        if found is None:
            continue
        root, what = found
        if what == "hint":
            hints[root] = key
            continue
        tables.setdefault(root, IcebergTable(root)).metadata_keys.append(key)
    for root, key in hints.items():
        if root in tables:
            tables[root].hint_key = key
    return [tables[root] for root in sorted(tables)]


def detect(inventory: Inventory) -> bool:
    """True when the listing holds ``<root>/metadata/*.metadata.json``, deleted or not."""
    return any((found := _root_of(key)) is not None and found[1] == "metadata" for key in inventory.keys())


# decoding -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestFile:
    """One entry of a manifest list."""

    path: str
    length: int | None  # bytes (manifest_length); None for a v1 snapshot's bare "manifests" list
    content: int = CONTENT_DATA  # 0 data manifest, 1 delete manifest


@dataclass(frozen=True)
class ContentFile:
    """A live (ADDED or EXISTING) entry of a manifest."""

    path: str
    content: int  # 0 data, 1 position deletes (or deletion vectors), 2 equality deletes
    file_format: str
    record_count: int
    size: int


def _decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise MetadataError(f"not valid gzip ({exc})") from None
    return data


def decode_metadata(key: str, data: bytes) -> dict[str, Any]:
    """A ``metadata.json``: JSON with a supported ``format-version`` and a ``location``."""
    try:
        value = json.loads(_decompress(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{key!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict) or "format-version" not in value:
        raise MetadataError(f"{key!r} is not Iceberg table metadata (no format-version)")
    version = value["format-version"]
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise UnsupportedIcebergError(
            f"{key!r} has Iceberg format-version {version!r}; this layout reads versions "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}: use table_format='prefix' for this table")
    if not isinstance(value.get("location"), str):
        raise MetadataError(f"{key!r} is not Iceberg table metadata (no location)")
    for name in ("snapshots", "statistics", "partition-statistics", "metadata-log"):
        if not isinstance(value.get(name) or [], list):
            raise MetadataError(f"{key!r} has a {name!r} that is not a list")
    return value


def _strip_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(v) for v in schema]
    return schema


def _without_logical_types(data: bytes) -> bytes:
    """The Avro file with ``logicalType`` removed from its schema. Only paths, sizes and counts are read, and
    fastavro converts logical types by the file's own schema: a valid Iceberg partition value such as a
    timestamp past year 9999 would not decode as a Python datetime, and a good manifest would look damaged."""
    from fastavro import schemaless_reader, schemaless_writer
    from fastavro.read import HEADER_SCHEMA

    source = io.BytesIO(data)
    header: Any = schemaless_reader(source, HEADER_SCHEMA, None)
    if header["magic"] != b"Obj\x01":
        raise ValueError("no Avro object container magic")
    schema = json.loads(header["meta"]["avro.schema"])
    header["meta"]["avro.schema"] = json.dumps(_strip_logical_types(schema)).encode()
    out = io.BytesIO()
    schemaless_writer(out, HEADER_SCHEMA, header)
    return out.getvalue() + data[source.tell():]


def read_avro(key: str, data: bytes) -> list[dict[str, Any]]:
    """Every record of an Avro object container file; MetadataError when it does not decode."""
    import fastavro

    try:
        records = fastavro.reader(io.BytesIO(_without_logical_types(data)))
        return [record for record in records if isinstance(record, dict)]
    except Exception as exc:  # fastavro raises ValueError, EOFError, SchemaParseException, ...
        raise MetadataError(f"{key!r} is not a readable Avro file ({type(exc).__name__}: {exc})") from None


def _field(key: str, record: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MetadataError(f"{key!r} is not an Iceberg {what}: a record has no {kind.__name__} {name!r}")
    return value


def decode_manifest_list(key: str, data: bytes) -> list[ManifestFile]:
    out = []
    for record in read_avro(key, data):
        out.append(ManifestFile(path=_field(key, record, "manifest_path", str, "manifest list"),
                                length=_field(key, record, "manifest_length", int, "manifest list"),
                                content=record.get("content") or CONTENT_DATA))
    return out


def decode_manifest(key: str, data: bytes) -> list[ContentFile]:
    """The live (ADDED, EXISTING) entries of a manifest; DELETED entries are tombstones."""
    out = []
    for record in read_avro(key, data):
        status = _field(key, record, "status", int, "manifest")
        data_file = record.get("data_file")
        if not isinstance(data_file, dict):
            raise MetadataError(f"{key!r} is not an Iceberg manifest: an entry has no data_file")
        entry = ContentFile(path=_field(key, data_file, "file_path", str, "manifest"),
                            content=data_file.get("content") or CONTENT_DATA,
                            file_format=str(data_file.get("file_format") or "").upper(),
                            record_count=_field(key, data_file, "record_count", int, "manifest"),
                            size=_field(key, data_file, "file_size_in_bytes", int, "manifest"))
        if status in (STATUS_ADDED, STATUS_EXISTING):
            out.append(entry)
        elif status != STATUS_DELETED:
            raise MetadataError(f"{key!r} is not an Iceberg manifest: entry status {status} is not 0, 1 or 2")
    return out


# the layout -----------------------------------------------------------------------------------------

class IcebergLayout:
    """The keys an Iceberg table needs: its current metadata and everything its snapshots reference.

    :param metadata_location: the current metadata file, as the catalog reports it (``s3://bucket/…/metadata/
        00042-….metadata.json``, or a key relative to the listed location); default: ``version-hint.text``'s,
        else the listed one with the highest version number.
    :param current_snapshot_only: keep only what the current snapshot reaches (older snapshots' files that it
        does not reach stay deleted; time travel to them will fail).
    :param include_history: also restore the older metadata files listed in ``metadata-log``.
    :param rollback_keys: pointer files to restore anyway (``…/metadata/version-hint.text``).
    """

    name = "iceberg"

    def __init__(self, *, metadata_location: str | None = None, current_snapshot_only: bool = False,
                 include_history: bool = False, rollback_keys: Iterable[str] = ()) -> None:
        self.metadata_location = metadata_location.strip() if metadata_location else None
        self.current_snapshot_only = current_snapshot_only
        self.include_history = include_history
        self.rollback_keys = frozenset(rollback_keys)

    def needed(self, inventory: Inventory, reader: VersionReader) -> LayoutResult:
        found = find_tables(inventory)
        where = f"s3://{inventory.bucket}/{inventory.prefix}"
        metadata = MetadataReader(inventory, reader, what="Iceberg metadata", stop_on=(UnsupportedIcebergError,))
        scan = _TableScan(inventory, metadata, current_snapshot_only=self.current_snapshot_only,
                          include_history=self.include_history, rollback_keys=self.rollback_keys)
        if self.metadata_location:
            key = self._given_metadata_key(inventory, where)
            root = _root_of(key)
            assert root is not None  # _given_metadata_key checked it
            table = next((t for t in found if t.root == root[0]), IcebergTable(root[0], [key]))
            summaries = [scan.table(table, key, "metadata_location")]
        else:
            self._check_found(found, inventory, where)
            summaries = []
            for table in found:
                key, source = scan.current_metadata(table)
                summaries.append(scan.table(table, key, source))
        info: dict[str, Any] = {
            "tables_found": [table.root for table in found],
            "metadata_reads": metadata.reads,
            "warnings": scan.warnings,
        }
        if len(summaries) == 1:
            info["metadata_source"] = summaries[0]["metadata_source"]
            info["metadata_key"] = summaries[0]["metadata_key"]
        return LayoutResult(needed=list(scan.needed.values()), skipped=scan.skipped, info=info, tables=summaries)

    def _given_metadata_key(self, inventory: Inventory, where: str) -> str:
        given = self.metadata_location or ""
        if given.startswith(SCHEMES):
            bucket, _, key = given.split("://", 1)[1].partition("/")
            if bucket != inventory.bucket:
                raise MetadataError(f"metadata_location {given!r} is in bucket {bucket!r}, not in {where}")
        else:
            key = given.lstrip("/")
            if not key.startswith(inventory.prefix):
                key = inventory.prefix + key
        found = _root_of(key)
        if found is None or found[1] != "metadata" or not found[0].startswith(inventory.prefix):
            raise MetadataError(f"metadata_location {given!r} is not a <table root>/metadata/*.metadata.json "
                                f"file under {where}: give it as the catalog reports it")
        if key not in inventory:
            listed = [t for t in find_tables(inventory) if t.root == found[0]]
            newest = sorted(listed[0].metadata_keys, key=lambda k: metadata_version(k) or -1)[-3:] if listed else []
            raise MetadataError(f"metadata_location {given!r} ({key!r}) is not listed under {where}; newest "
                                f"metadata files listed there: {', '.join(newest) or 'none'}")
        return key

    @staticmethod
    def _check_found(tables: list[IcebergTable], inventory: Inventory, where: str) -> None:  # noqa: ARG004
        check_table_roots([t.root for t in tables], inventory, what="Iceberg",
                          how_found="no metadata/*.metadata.json key is listed there (deleted ones included)",
                          give="the table root (…/<namespace>/<table>/, the table's 'location')")


class _TableScan(MetadataScan):
    """Walks one or more tables' metadata and collects the needed keys (deduplicated, first one wins)."""

    def __init__(self, inventory: Inventory, metadata: MetadataReader, *, current_snapshot_only: bool,
                 include_history: bool, rollback_keys: frozenset[str]) -> None:
        super().__init__(inventory, metadata)
        self.current_snapshot_only = current_snapshot_only
        self.include_history = include_history
        self.rollback_keys = rollback_keys
        self._manifest_sizes: dict[str, int | None] = {}  # manifest key -> manifest_length

    # collecting ---------------------------------------------------------------------------------------
    # the current metadata -----------------------------------------------------------------------------
    def current_metadata(self, table: IcebergTable) -> tuple[str, str]:
        """(metadata key, how it was chosen): the hint's, else the highest version number listed."""
        hinted = self._hinted_metadata(table)
        if hinted is not None:
            newer = [k for k in table.metadata_keys if (metadata_version(k) or -1) > (metadata_version(hinted) or -1)
                     and self._has_data(k)]
            if newer:
                self.warnings.append(f"{table.hint_key!r} names {hinted!r}, but newer metadata is listed "
                                     f"({newer[-1]!r}); if the catalog reports it, pass it as metadata_location=")
            return hinted, "version_hint"
        return self._newest_metadata(table)

    def _hinted_metadata(self, table: IcebergTable) -> str | None:
        """The metadata key ``version-hint.text`` names (its newest version holding data, read even under a
        delete marker), if it is listed with data; older hint versions point at older metadata: not used."""
        if table.hint_key is None:
            return None
        history = self.inventory.history(table.hint_key)
        newest = history.newest_data if history is not None else None
        if newest is None:
            return None
        try:
            raw = self.metadata.fetch(table.hint_key, newest)
        except MetadataError as exc:
            self.warnings.append(f"{table.hint_key!r} ignored: {exc}")
            return None
        text = raw.decode("utf-8", errors="replace").strip()
        if not text or "/" in text or text in (".", ".."):
            self.warnings.append(f"{table.hint_key!r} holds {text[:80]!r}, not a metadata version: ignored")
            return None
        if text.endswith(".metadata.json"):
            candidates = [table.metadata_prefix + text]
        elif text.isdigit():
            candidates = [table.metadata_prefix + f"v{text}.metadata.json",
                          *(k for k in table.metadata_keys if metadata_version(k) == int(text))]
        else:
            candidates = [table.metadata_prefix + f"{text}.metadata.json"]
        for key in candidates:
            if self._has_data(key):
                return key
        self.warnings.append(f"{table.hint_key!r} names version {text[:80]!r}, which has no metadata file holding "
                             "data; using the newest metadata file listed instead")
        return None

    def _newest_metadata(self, table: IcebergTable) -> tuple[str, str]:
        numbered = [k for k in table.metadata_keys if metadata_version(k) is not None and self._has_data(k)]
        if not numbered:
            raise MetadataError(f"table {table.root!r} has no metadata file with a version holding data (names like "
                                "00001-<uuid>.metadata.json or v1.metadata.json): its metadata cannot be read; pass "
                                "metadata_location= or use table_format='prefix'")
        ordered = sorted(numbered, key=lambda k: (metadata_version(k), self._written(k)), reverse=True)
        top = metadata_version(ordered[0])
        tied = [k for k in ordered if metadata_version(k) == top]
        if len(tied) > 1:
            self.warnings.append(f"{len(tied)} metadata files of {table.root!r} have version {top} (a commit that "
                                 f"lost a race with another writer leaves one behind); using the newest written, "
                                 f"{tied[0]!r}: if the catalog reports another, pass it as metadata_location=")
        # A file whose every version fails to decode cannot be the table's state: fall back to the next one.
        for key in ordered:
            if self.metadata.read_newest(key, decode_metadata).value is not None:
                if key != ordered[0]:
                    self.warnings.append(f"no version of {ordered[0]!r} decodes; using {key!r}, the newest "
                                         "metadata file that does")
                return key, "newest_metadata_file"
        return ordered[0], "newest_metadata_file"

    def _written(self, key: str) -> Any:
        history = self.inventory.history(key)
        newest = history.newest_data if history is not None else None
        return newest.last_modified if newest is not None else None

    # one table ----------------------------------------------------------------------------------------
    def table(self, table: IcebergTable, metadata_key: str, source: str) -> TableSummary:
        paths = _Paths(self.inventory.bucket, table.root)
        self._pointer_file(table)
        read = self.metadata.read_newest(metadata_key, decode_metadata)
        self._need_metadata(metadata_key, "metadata", read)
        summary: dict[str, Any] = {"table_root": table.root, "metadata_key": metadata_key, "metadata_source": source}
        metadata: dict[str, Any] | None = read.value
        if metadata is None:
            return TableSummary.from_facts("iceberg", summary,
                                           state="metadata_key", source="metadata_source", files="data_files")
        location = metadata["location"].rstrip("/")
        if paths.key_of(location + "/") != table.root:
            self.warnings.append(f"{metadata_key!r} gives the table location {location!r}, not the listed root "
                                 f"s3://{self.inventory.bucket}/{table.root} (the table was moved or copied, or writes "
                                 "data elsewhere): a file it references outside the listed root is refused")
        current_id = metadata.get("current-snapshot-id")
        current_id = None if current_id in (None, -1) else current_id
        snapshots = [s for s in metadata.get("snapshots") or [] if isinstance(s, dict)]
        if self.current_snapshot_only:
            snapshots = [s for s in snapshots if s.get("snapshot-id") == current_id]
        if current_id is not None and not any(s.get("snapshot-id") == current_id for s in snapshots):
            raise MetadataError(f"{metadata_key!r} names current snapshot {current_id}, which is not in its "
                                "snapshots: the metadata is damaged; pass metadata_location= to use another file")

        manifests_by_snapshot = self._manifest_lists(paths, metadata_key, snapshots)
        files_by_manifest = self._manifests(paths, manifests_by_snapshot)
        self._statistics(paths, metadata_key, metadata, current_id)
        self._metadata_log(paths, metadata_key, metadata)

        live: dict[str, ContentFile] = {}
        current: dict[str, ContentFile] = {}
        for snapshot_id, manifest_keys in manifests_by_snapshot.items():
            for manifest_key in manifest_keys:
                for entry in files_by_manifest.get(manifest_key, []):
                    live.setdefault(entry.path, entry)
                    if snapshot_id == current_id:
                        current.setdefault(entry.path, entry)
        data = [f for f in live.values() if f.content == CONTENT_DATA]
        deletes = [f for f in live.values() if f.content != CONTENT_DATA]
        current_data = [f for f in current.values() if f.content == CONTENT_DATA]
        current_deletes = [f for f in current.values() if f.content != CONTENT_DATA]
        summary.update({
            "format_version": metadata["format-version"],
            "table_uuid": metadata.get("table-uuid"),
            "snapshot_id": current_id,
            "snapshots_kept": len(snapshots),
            "snapshots_in_metadata": len(metadata.get("snapshots") or []),
            # Rows in the data files kept (every retained snapshot's, or the current one's): what the data
            # files hold before delete files apply. Verification compares the files' footers with it.
            "row_count": sum(f.record_count for f in data),
            "current_snapshot_rows": sum(f.record_count for f in current_data) if current_id is not None else 0,
            "data_files": len(data),
            "delete_files": len(deletes),
            "current_data_files": len(current_data),
            "current_delete_files": len(current_deletes),
            "manifest_lists": len(manifests_by_snapshot),
            "manifests": len(files_by_manifest),
        })
        self._check_totals(metadata_key, snapshots, current_id, summary, bool(current_deletes))
        return TableSummary.from_facts("iceberg", summary,
                                       state="metadata_key", source="metadata_source", files="data_files")

    def _pointer_file(self, table: IcebergTable) -> None:
        if table.hint_key is None:
            return
        history = self.inventory.history(table.hint_key)
        if table.hint_key in self.rollback_keys:
            self._need(NeededObject(table.hint_key, kind="version_hint"))
        elif history is not None and history.is_deleted:  # the one a user might expect back: say why not
            self.skipped.append(SkippedKey(table.hint_key, HINT_REASON, kind="version_hint"))

    def _check_totals(self, metadata_key: str, snapshots: list[dict], current_id: int | None,
                      summary: dict[str, Any], has_deletes: bool) -> None:
        if has_deletes:
            self.warnings.append(f"the current snapshot of {summary['table_root']!r} has "
                                 f"{summary['current_delete_files']} delete file(s): its row counts are rows in "
                                 "data files before deletes apply; readers see fewer")
        snapshot = next((s for s in snapshots if s.get("snapshot-id") == current_id), None)
        total = ((snapshot or {}).get("summary") or {}).get("total-records")
        if total is not None and str(total) != str(summary["current_snapshot_rows"]):
            self.warnings.append(f"snapshot {current_id} of {metadata_key!r} records total-records={total}, its "
                                 f"data files {summary['current_snapshot_rows']}: some manifest could not be read, "
                                 "or the metadata is inconsistent")

    # what the metadata references ---------------------------------------------------------------------
    def _manifest_lists(self, paths: _Paths, metadata_key: str,
                        snapshots: list[dict[str, Any]]) -> dict[int, list[str]]:
        """snapshot id → its manifest keys; needs each manifest list."""
        lists: dict[int, str] = {}
        bare: dict[int, list[ManifestFile]] = {}
        for snapshot in snapshots:
            snapshot_id = snapshot.get("snapshot-id")
            if not isinstance(snapshot_id, int):
                raise MetadataError(f"{metadata_key!r} has a snapshot without a snapshot-id: the metadata is "
                                    "damaged; pass metadata_location= to use another file")
            manifest_list = snapshot.get("manifest-list")
            if isinstance(manifest_list, str):
                lists[snapshot_id] = paths.resolve(manifest_list, metadata_key, "manifest list")
            elif isinstance(snapshot.get("manifests"), list):  # format v1: the manifests without a list
                bare[snapshot_id] = [ManifestFile(str(p), None) for p in snapshot["manifests"]]
            else:
                raise MetadataError(f"{metadata_key!r}: snapshot {snapshot_id} has no manifest-list: the metadata is "
                                    "damaged; pass metadata_location= to use another file")
        distinct = sorted(set(lists.values()))
        reads = dict(zip(distinct, self.metadata.read_many([(k, decode_manifest_list, None) for k in distinct]),
                         strict=True))
        for key in distinct:
            self._need_metadata(key, "manifest_list", reads[key])
        out: dict[int, list[str]] = {}
        for snapshot_id in [s["snapshot-id"] for s in snapshots]:
            if snapshot_id in lists:
                list_key = lists[snapshot_id]
                manifests, source = reads[list_key].value or [], list_key
            else:
                manifests, source = bare[snapshot_id], metadata_key
            keys = []
            for manifest in manifests:
                key = paths.resolve(manifest.path, source, "manifest")
                self._manifest_sizes.setdefault(key, manifest.length)
                keys.append(key)
            out[snapshot_id] = keys
        return out

    def _manifests(self, paths: _Paths, manifests_by_snapshot: dict[int, list[str]]) -> dict[str, list[ContentFile]]:
        """manifest key → its live entries; needs each manifest and each file its live entries name."""
        distinct = sorted({k for keys in manifests_by_snapshot.values() for k in keys})
        reads = self.metadata.read_many([(k, decode_manifest, self._manifest_sizes[k]) for k in distinct])
        out: dict[str, list[ContentFile]] = {}
        for key, read in zip(distinct, reads, strict=True):
            self._need_metadata(key, "manifest", read, expected_size=self._manifest_sizes[key])
            entries = read.value or []
            for entry in entries:
                self._need_file(paths, key, entry)
            out[key] = entries
        return out

    def _need_file(self, paths: _Paths, manifest_key: str, entry: ContentFile) -> None:
        if entry.content == CONTENT_DATA:
            key = paths.resolve(entry.path, manifest_key, "data file")
            if entry.file_format in ("PARQUET", ""):
                self._need(NeededObject(key, kind="data_file", expected_size=entry.size,
                                        row_count=entry.record_count, parquet=True))
            else:  # ORC, Avro: no Parquet footer to check
                self._need(NeededObject(key, kind=f"data_file_{entry.file_format.lower()}", expected_size=entry.size))
        else:
            key = paths.resolve(entry.path, manifest_key, "delete file")
            self._need(NeededObject(key, kind="delete_file", expected_size=entry.size))

    def _statistics(self, paths: _Paths, metadata_key: str, metadata: dict[str, Any], current_id: int | None) -> None:
        for name in ("statistics", "partition-statistics"):
            for stats in metadata.get(name) or []:
                if not isinstance(stats, dict) or not isinstance(stats.get("statistics-path"), str):
                    raise MetadataError(f"{metadata_key!r} has a {name!r} entry without a statistics-path: the "
                                        "metadata is damaged; pass metadata_location= to use another file")
                if self.current_snapshot_only and stats.get("snapshot-id") != current_id:
                    continue
                key = paths.resolve(stats["statistics-path"], metadata_key, name.replace("-", " ") + " file")
                size = stats.get("file-size-in-bytes")
                self._need(NeededObject(key, kind="statistics",
                                        expected_size=size if isinstance(size, int) and size > 0 else None))

    def _metadata_log(self, paths: _Paths, metadata_key: str, metadata: dict[str, Any]) -> None:
        entries = [e.get("metadata-file") for e in metadata.get("metadata-log") or [] if isinstance(e, dict)]
        keys = [paths.resolve(e, metadata_key, "previous metadata") for e in entries if isinstance(e, str)]
        if not self.include_history:
            for key in keys:
                history = self.inventory.history(key)
                if history is not None and history.is_deleted and key not in self.needed:
                    self.skipped.append(SkippedKey(key, HISTORY_REASON, kind="metadata"))
            return
        for key in keys:
            self._need_metadata(key, "metadata", self.metadata.read_newest(key, decode_metadata))


class _Paths:
    """Paths in a table's metadata (absolute URIs) as keys of the listed bucket, confined to the table root."""

    def __init__(self, bucket: str, root: str) -> None:
        self.bucket = bucket
        self.root = root

    def key_of(self, path: str) -> str | None:
        """The key of ``s3://<bucket>/<key>`` in the listed bucket, else None. Used as written: no decoding."""
        if not isinstance(path, str) or not path.startswith(SCHEMES):
            return None
        bucket, _, key = path.split("://", 1)[1].partition("/")
        return key if bucket == self.bucket else None

    def resolve(self, path: Any, source: str, what: str) -> str:
        """The bucket key of a path read from ``source``; refuses anything outside the table root."""
        key = self.key_of(path)
        inside = (
            key is not None and key.startswith(self.root) and len(key) > len(self.root) and "\x00" not in key
            and all(part not in (".", "..") for part in key[len(self.root):].split("/"))
        )
        if not inside:
            raise MetadataError(
                f"{source!r} gives the {what} path {path!r}, which is outside the table root "
                f"s3://{self.bucket}/{self.root}: the metadata is damaged or was not written for this table. "
                "Nothing was restored; check that object (pass metadata_location= to use another metadata file)")
        assert key is not None
        return key


def _build(layout_options: Any, times: Any) -> IcebergLayout:  # noqa: ARG001 - times do not apply to Iceberg
    keys = layout_options.get("rollback_keys") or ()
    return IcebergLayout(metadata_location=layout_options.get("metadata_location"),
                         current_snapshot_only=bool(layout_options.get("current_snapshot_only")),
                         include_history=bool(layout_options.get("include_history")),
                         rollback_keys=[keys] if isinstance(keys, str) else keys)


FORMAT = TableFormat(
    name="iceberg",
    title="Apache Iceberg",
    build=_build,
    detect=detect,
    options={"metadata_location": "the current metadata.json, as the catalog reports it (s3://… or relative)",
             "current_snapshot_only": "restore only what the current snapshot reaches, not older snapshots",
             "include_history": "also restore the older metadata.json files of metadata-log",
             "rollback_keys": "pointer files to restore anyway (…/metadata/version-hint.text)"},
    row_kinds=frozenset({"data_file"}),
)
