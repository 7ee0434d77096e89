"""The ``delta`` layout: which keys a Delta Lake table needs, read from its own transaction log.

A Delta table's current version is its newest checkpoint plus the JSON commits after it; the files a reader
opens are the ``add`` actions of that state that no later ``remove`` retired, and the deletion vector files
those adds name. So the table needs: the checkpoint (every part of a multi-part one; a v2 checkpoint and its
sidecars), the commits after it, every live data file and every deletion vector file of a live add.

Not needed, and left as they are:
- data files a ``remove`` retired: ``vacuum`` deleted them on purpose (restoring them brings garbage back);
- commits, checkpoints and checksums older than the checkpoint used: history, which readers of the current
  version never open (delta-rs reads the table with every one of them gone); restored only with
  ``include_history``;
- ``_delta_log/_last_checkpoint``: a pointer file, rewritten after every checkpoint. Readers find the newest
  checkpoint by listing when it is missing, so it is never rolled back unless named in ``rollback_keys``.

Every log object is read version-aware (GetObject with the VersionId of its newest version holding data, so
a delete marker on top of it does not matter and a scan writes nothing); a version that does not decode is a
bad version, and the plan restores an older, good one. Data files are judged by the ``size`` of their add
action (another size is damage) and carry ``stats.numRecords`` as their row count for verification.

Paths in the log are URIs, percent-encoded once: delta-rs stores the partition value ``New York`` under the key
``city=New%20York/…`` and writes the path ``city=New%2520York/…``. Decoded once, a path is the key relative to
the table root; an absolute path (``s3://bucket/root/…``) must name this bucket. Either way it must stay inside
the table root: a damaged or crafted log must not make a restore touch another table's keys.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
from airflow_fuse.layouts.metadata import MetadataRead, MetadataReader, MetadataScan

LOG_DIR = "_delta_log/"
SIDECAR_DIR = "_sidecars/"
LAST_CHECKPOINT = "_last_checkpoint"
POINTER_REASON = ("deleted pointer file, left deleted: Delta rewrites _last_checkpoint after every checkpoint, so an "
                  "old version could name an older checkpoint; readers find the newest checkpoint by listing "
                  "_delta_log/ without it. Name it in rollback_keys to bring its newest version back")
HISTORY_REASON = ("older than the checkpoint used (version {version}): table history that readers of the current "
                  "version never open; pass include_history=True to restore it")

_COMMIT_RE = re.compile(r"^(\d{20})\.json$")
_CRC_RE = re.compile(r"^(\d{20})\.crc$")
_CLASSIC_RE = re.compile(r"^(\d{20})\.checkpoint\.parquet$")
_MULTI_PART_RE = re.compile(r"^(\d{20})\.checkpoint\.(\d{10})\.(\d{10})\.parquet$")
_UUID_CHECKPOINT_RE = re.compile(
    r"^(\d{20})\.checkpoint\.([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"\.(json|parquet)$")
_ABSOLUTE_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://([^/]*)/?(.*)$", re.DOTALL)
_S3_SCHEMES = ("s3", "s3a", "s3n")
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {char: value for value, char in enumerate(_Z85)}



# what the log says -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeletionVector:
    """A ``deletionVector`` descriptor of an add action (Delta protocol, "Deletion Vectors")."""

    storage_type: str  # 'u' relative (UUID-named file), 'p' absolute path, 'i' inline (no file)
    path_or_inline: str
    offset: int | None = None
    cardinality: int = 0

    @property
    def unique_id(self) -> str:
        """The protocol's ``uniqueId``: with the path, the identity of a logical file."""
        suffix = f"@{self.offset}" if self.offset is not None else ""
        return f"{self.storage_type}{self.path_or_inline}{suffix}"


@dataclass(frozen=True)
class FileAction:
    """One ``add`` or ``remove`` action: the path as written in the log (a URI) and what it records."""

    path: str
    size: int | None = None
    num_records: int | None = None
    deletion_vector: DeletionVector | None = None

    @property
    def dv_id(self) -> str | None:
        return self.deletion_vector.unique_id if self.deletion_vector else None


@dataclass
class LogActions:
    """The file actions of one commit or checkpoint file (other actions are not needed to find keys)."""

    adds: list[FileAction] = field(default_factory=list)
    removes: list[FileAction] = field(default_factory=list)
    sidecars: list[tuple[str, int | None]] = field(default_factory=list)  # (path, sizeInBytes)


@dataclass(frozen=True)
class LastCheckpoint:
    version: int
    parts: int | None = None
    v2_path: str | None = None  # a UUID-named v2 checkpoint's file name


def _bad(key: str, why: str) -> MetadataError:
    return MetadataError(f"{key!r} is not a valid Delta log object: {why}")


def z85_decode(text: str) -> bytes:
    """Z85 (the ZeroMQ base-85 variant Delta uses for deletion vector ids): 5 characters → 4 bytes."""
    if len(text) % 5:
        raise ValueError(f"Z85 text of length {len(text)} (must be a multiple of 5)")
    out = bytearray()
    for start in range(0, len(text), 5):
        value = 0
        for char in text[start:start + 5]:
            if char not in _Z85_VALUE:
                raise ValueError(f"{char!r} is not a Z85 character")
            value = value * 85 + _Z85_VALUE[char]
        if value >= 1 << 32:
            raise ValueError("Z85 group out of range")
        out += value.to_bytes(4, "big")
    return bytes(out)


def deletion_vector_path(dv: DeletionVector) -> tuple[str, bool] | None:
    """Where a deletion vector is stored: (path, is a URI to decode), or None for an inline one.

    ``u``: ``<random prefix><20 Z85 characters of a UUID>``, stored at ``<root>/<random prefix>/
    deletion_vector_<uuid>.bin`` (a plain relative path, not a URI); ``p``: an absolute path written like an add's.
    """
    if dv.storage_type == "i":
        return None
    if dv.storage_type == "p":
        return dv.path_or_inline, True
    if dv.storage_type == "u":
        text = dv.path_or_inline
        if len(text) < 20:
            raise ValueError(f"relative deletion vector id {text!r} is shorter than a Z85 UUID (20 characters)")
        prefix, encoded = text[:-20], text[-20:]
        name = f"deletion_vector_{uuid.UUID(bytes=z85_decode(encoded))}.bin"
        return (f"{prefix}/{name}" if prefix else name), False
    raise ValueError(f"unknown deletion vector storageType {dv.storage_type!r}")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num_records(stats: Any) -> int | None:
    if isinstance(stats, str):
        try:
            stats = json.loads(stats)
        except ValueError:
            return None  # unreadable statistics are not a damaged log: the row count is just unknown
    return _int(stats.get("numRecords")) if isinstance(stats, dict) else None


def _deletion_vector(key: str, value: Any) -> DeletionVector | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("storageType"), str) \
            or not isinstance(value.get("pathOrInlineDv"), str):
        raise _bad(key, f"deletionVector {value!r} lacks storageType/pathOrInlineDv")
    return DeletionVector(value["storageType"], value["pathOrInlineDv"], _int(value.get("offset")),
                          _int(value.get("cardinality")) or 0)


def _file_action(key: str, kind: str, value: Any) -> FileAction:
    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or not value["path"]:
        raise _bad(key, f"a {kind!r} action without a path")
    return FileAction(value["path"], _int(value.get("size")), _num_records(value.get("stats")),
                      _deletion_vector(key, value.get("deletionVector")))


def decode_actions_json(key: str, data: bytes) -> LogActions:
    """A commit (``N.json``) or a UUID-named v2 checkpoint in JSON: one action object per line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(key, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    actions = LogActions()
    lines = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError as exc:
            raise _bad(key, f"line {number} is not JSON ({exc})") from None
        if not isinstance(action, dict):
            raise _bad(key, f"line {number} is not a JSON object")
        lines += 1
        if "add" in action:
            actions.adds.append(_file_action(key, "add", action["add"]))
        if "remove" in action:
            actions.removes.append(_file_action(key, "remove", action["remove"]))
        if "sidecar" in action:
            sidecar = action["sidecar"]
            if not isinstance(sidecar, dict) or not isinstance(sidecar.get("path"), str):
                raise _bad(key, "a 'sidecar' action without a path")
            actions.sidecars.append((sidecar["path"], _int(sidecar.get("sizeInBytes"))))
    if not lines:
        raise _bad(key, "no action in it (empty)")
    return actions


def _column(table: pa.Table, name: str) -> pa.StructArray | None:
    """The non-null rows of a struct column of a checkpoint, or None."""
    if name not in table.column_names or table.num_rows == 0:
        return None
    column = table.column(name).combine_chunks()
    return column.filter(column.is_valid())


def _child(struct: pa.StructArray, name: str) -> list[Any]:
    if struct.type.get_field_index(name) < 0:
        return [None] * len(struct)
    return pc.struct_field(struct, name).to_pylist()


def decode_checkpoint_parquet(key: str, data: bytes) -> LogActions:
    """A checkpoint part or sidecar in Parquet: its ``add`` rows (live files) and ``sidecar`` rows. Its
    ``remove`` rows are tombstones kept for vacuum, not files the table reads."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        columns = [name for name in ("add", "sidecar") if name in parquet.schema_arrow.names]
        table = parquet.read(columns=columns, use_threads=False)
        adds, sidecars = _column(table, "add"), _column(table, "sidecar")
        add_rows = [] if adds is None else list(zip(
            _child(adds, "path"), _child(adds, "size"), _child(adds, "stats"), _child(adds, "stats_parsed"),
            _child(adds, "deletionVector"), strict=True))
        sidecar_rows = [] if sidecars is None else list(zip(
            _child(sidecars, "path"), _child(sidecars, "sizeInBytes"), strict=True))
    except Exception as exc:  # pyarrow raises several types for bytes that are not a checkpoint
        raise _bad(key, f"not a readable checkpoint Parquet file ({type(exc).__name__}: {exc})") from None
    actions = LogActions()
    for path, size, stats, stats_parsed, dv in add_rows:
        if not isinstance(path, str) or not path:
            raise _bad(key, "an 'add' row without a path")
        # Writers store statistics as JSON (stats), as a struct (stats_parsed), or both.
        records = _num_records(stats) if stats is not None else _num_records(stats_parsed)
        actions.adds.append(FileAction(path, _int(size), records, _deletion_vector(key, dv)))
    for path, size in sidecar_rows:
        if not isinstance(path, str) or not path:
            raise _bad(key, "a 'sidecar' row without a path")
        actions.sidecars.append((path, _int(size)))
    return actions


def decode_checkpoint(key: str, data: bytes) -> LogActions:
    return decode_actions_json(key, data) if key.endswith(".json") else decode_checkpoint_parquet(key, data)


def decode_last_checkpoint(key: str, data: bytes) -> LastCheckpoint:
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise _bad(key, f"not JSON ({exc})") from None
    if not isinstance(value, dict) or _int(value.get("version")) is None:
        raise _bad(key, "no integer 'version'")
    v2 = value.get("v2Checkpoint")
    v2_path = v2.get("path") if isinstance(v2, dict) and isinstance(v2.get("path"), str) else None
    return LastCheckpoint(value["version"], _int(value.get("parts")), v2_path)


def decode_history_object(key: str, data: bytes) -> bool:
    """A log object kept only as history: checked to be what its name says (JSON lines, a JSON object, or a
    Parquet file with a footer), without decoding whole checkpoints."""
    if key.endswith(".parquet"):
        try:
            pq.ParquetFile(pa.BufferReader(data)).metadata  # noqa: B018 - reading the footer is the check
        except Exception as exc:
            raise _bad(key, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    elif key.endswith(".crc"):
        try:
            if not isinstance(json.loads(data.decode("utf-8")), dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise _bad(key, f"not a JSON object ({exc})") from None
    else:
        decode_actions_json(key, data)
    return True


# log replay ------------------------------------------------------------------------------------------

class LiveFiles:
    """The table's live files: Delta's action reconciliation over checkpoint adds, then commits in order.

    A logical file is a path and a deletion vector id; a table holds at most one live add per path (an add
    replaces the entry of its path). A remove retires the logical file it names. Within one commit removes
    apply before adds, so a commit that swaps a file's deletion vector (remove old, add new) leaves the new.
    """

    def __init__(self, normalise: Callable[[str], str]) -> None:
        self.normalise = normalise
        self.files: dict[str, FileAction] = {}
        self.sources: dict[str, str] = {}  # path -> the log object whose add made it live (for error messages)

    def apply(self, actions: LogActions, source: str = "") -> None:
        for remove in actions.removes:
            path = self.normalise(remove.path)
            live = self.files.get(path)
            if live is not None and live.dv_id == remove.dv_id:
                del self.files[path]
                self.sources.pop(path, None)
        for add in actions.adds:
            path = self.normalise(add.path)
            self.files[path] = add
            self.sources[path] = source


# finding tables --------------------------------------------------------------------------------------

@dataclass
class CheckpointFiles:
    """One checkpoint of one version: its parts (one, or 1..p of a multi-part one, in order)."""

    version: int
    keys: list[str]
    kind: str  # classic | multi-part | uuid
    name: str = ""  # the file name (classic, uuid) or "" (multi-part)


@dataclass
class DeltaTableFiles:
    """One Delta table found in the listing, and its log objects (deleted ones included)."""

    root: str
    commits: dict[int, str] = field(default_factory=dict)
    checksums: dict[int, str] = field(default_factory=dict)
    checkpoints: dict[int, list[CheckpointFiles]] = field(default_factory=dict)
    sidecars: list[str] = field(default_factory=list)
    last_checkpoint: str | None = None

    @property
    def log(self) -> str:
        return self.root + LOG_DIR

    def commit_key(self, version: int) -> str:
        return self.commits.get(version) or f"{self.log}{version:020d}.json"

    @property
    def newest_version(self) -> int:
        return max([*self.commits, *self.checkpoints])


def _split_log_key(key: str) -> tuple[str, str] | None:
    """(table root, path inside ``_delta_log/``) of a key in a Delta log, else None."""
    at = 0
    while True:
        at = key.find(LOG_DIR, at)
        if at < 0:
            return None
        if at == 0 or key[at - 1] == "/":
            return key[:at], key[at + len(LOG_DIR):]
        at += 1


def find_tables(inventory: Inventory) -> list[DeltaTableFiles]:
    """Every Delta table with a commit or checkpoint key in the listing (delete markers count), by root."""
    tables: dict[str, DeltaTableFiles] = {}
    multi_parts: dict[tuple[str, int, int], dict[int, str]] = {}
    for key in inventory.keys():
        split = _split_log_key(key)
        if split is None:
            continue
        root, name = split
        table = tables.setdefault(root, DeltaTableFiles(root))
        if name.startswith(SIDECAR_DIR):
            table.sidecars.append(key)
        elif name == LAST_CHECKPOINT:
            table.last_checkpoint = key
        elif match := _COMMIT_RE.match(name):
            table.commits[int(match.group(1))] = key
        elif match := _CRC_RE.match(name):
            table.checksums[int(match.group(1))] = key
        elif match := _CLASSIC_RE.match(name):
            version = int(match.group(1))
            table.checkpoints.setdefault(version, []).append(CheckpointFiles(version, [key], "classic", name))
        elif match := _UUID_CHECKPOINT_RE.match(name):
            version = int(match.group(1))
            table.checkpoints.setdefault(version, []).append(CheckpointFiles(version, [key], "uuid", name))
        elif match := _MULTI_PART_RE.match(name):
            version, part, parts = int(match.group(1)), int(match.group(2)), int(match.group(3))
            multi_parts.setdefault((root, version, parts), {})[part] = key
    for (root, version, parts), keys in multi_parts.items():
        if parts > 1 and sorted(keys) == list(range(1, parts + 1)):  # readers ignore incomplete ones
            tables[root].checkpoints.setdefault(version, []).append(
                CheckpointFiles(version, [keys[part] for part in range(1, parts + 1)], "multi-part"))
    found = [t for t in tables.values() if t.commits or t.checkpoints]
    return sorted(found, key=lambda t: t.root)


def detect(inventory: Inventory) -> bool:
    """True when the listing holds a ``<root>/_delta_log/*.json`` key, deleted or not."""
    for key in inventory.keys():
        split = _split_log_key(key)
        if split is not None and "/" not in split[1] and split[1].endswith(".json"):
            return True
    return False


# the layout ------------------------------------------------------------------------------------------

class DeltaLayout:
    """The keys a Delta Lake table needs: its newest checkpoint, the commits after it, the live files.

    :param table_prefix: with several tables under the location, the one to restore: its root relative to the
        location (``sales/orders``) or as a key prefix (``warehouse/sales/orders/``).
    :param include_history: also restore the log objects older than the checkpoint used (commits, checkpoints,
        checksums), so ``DESCRIBE HISTORY`` and time travel over the log work again. The data files of older
        versions are not restored: a vacuum deleted them on purpose and a listing cannot tell its delete
        markers from an incident's.
    :param rollback_keys: pointer files to bring back anyway (``<root>/_delta_log/_last_checkpoint``, as a key
        or relative to the table root).
    """

    name = "delta"

    def __init__(self, *, table_prefix: str | None = None, include_history: bool = False,
                 rollback_keys: Iterable[str] = ()) -> None:
        self.table_prefix = table_prefix.strip("/") if table_prefix else None
        self.include_history = include_history
        self.rollback_keys = frozenset(rollback_keys)

    def needed(self, inventory: Inventory, reader: VersionReader) -> LayoutResult:
        found = find_tables(inventory)
        tables = self._select(found, inventory)
        scan = _Scan(inventory, MetadataReader(inventory, reader, what="a Delta log object"),
                     include_history=self.include_history, rollback_keys=self.rollback_keys)
        summaries = [scan.table(table) for table in tables]
        info: dict[str, Any] = {
            "tables_found": [table.root for table in found],
            "metadata_reads": scan.log.reads,
            "warnings": scan.warnings,
        }
        return LayoutResult(needed=list(scan.needed.values()), skipped=scan.skipped, info=info, tables=summaries)

    def _select(self, tables: list[DeltaTableFiles], inventory: Inventory) -> list[DeltaTableFiles]:
        where = f"s3://{inventory.bucket}/{inventory.prefix}"
        check_table_roots([t.root for t in tables], inventory, what="Delta",
                          how_found="no _delta_log/ commit or checkpoint key is listed there",
                          give="the table root (the folder that holds _delta_log/)")
        if self.table_prefix is None:
            return tables
        wanted = {self.table_prefix + "/", inventory.prefix + self.table_prefix + "/"}
        chosen = [t for t in tables if t.root in wanted]
        if not chosen:
            names = ", ".join(t.root[len(inventory.prefix):] or "(the location itself)" for t in tables)
            raise MetadataError(f"table_prefix {self.table_prefix!r} is not a Delta table under {where}; tables "
                                f"found: {names}")
        return chosen


class _Paths:
    """Turns paths written in one table's log into bucket keys, refusing any outside the table root."""

    def __init__(self, bucket: str, root: str) -> None:
        self.bucket = bucket
        self.root = root

    def normalise(self, path: str) -> str:
        """The identity of a file path for log replay: decoded once, relative to the root when inside it."""
        relative = self._relative(path, uri=True)
        return relative if relative is not None else path

    def key(self, path: str, source: str, what: str, *, uri: bool = True) -> str:
        relative = self._relative(path, uri=uri)
        if relative is None:
            raise MetadataError(
                f"{source!r} gives the {what} path {path!r}, which is outside the table root "
                f"s3://{self.bucket}/{self.root}: the log is damaged or was not written for this table. Nothing "
                "was written; check that log object (and restore the table from a location that holds only it)")
        return self.root + relative

    def _relative(self, path: str, *, uri: bool) -> str | None:
        match = _ABSOLUTE_RE.match(path)
        if match:
            scheme, bucket, rest = match.groups()
            if scheme.lower() not in _S3_SCHEMES or bucket != self.bucket:
                return None
            key = unquote(rest) if uri else rest
            if not key.startswith(self.root):
                return None
            relative = key[len(self.root):]
        else:
            relative = unquote(path) if uri else path
        parts = relative.split("/")
        if not relative or "\x00" in relative or any(part in ("", ".", "..") for part in parts):
            return None
        return relative


class _Scan(MetadataScan):
    """Walks each table's log and collects the needed keys (deduplicated, first one wins)."""

    def __init__(self, inventory: Inventory, log: MetadataReader, *, include_history: bool,
                 rollback_keys: frozenset[str]) -> None:
        super().__init__(inventory, log)
        self.log = log
        self.include_history = include_history
        self.rollback_keys = rollback_keys

    def _need_log(self, key: str, kind: str, read: MetadataRead, *, expected_size: int | None = None) -> None:
        self._need(NeededObject(key, kind=kind, expected_size=expected_size, bad_versions=read.bad_versions,
                                damaged_reason=read.damaged_reason))

    def _is_deleted(self, key: str) -> bool:
        history = self.inventory.history(key)
        return history is not None and history.is_deleted

    # one table ----------------------------------------------------------------------------------------
    def table(self, table: DeltaTableFiles) -> TableSummary:
        paths = _Paths(self.inventory.bucket, table.root)
        version = table.newest_version
        last = self._last_checkpoint(table)
        live = LiveFiles(paths.normalise)
        checkpoint, source = self._checkpoint(table, last, live, paths)
        start = checkpoint.version + 1 if checkpoint is not None else 0
        for commit_version in range(start, version + 1):
            key = table.commit_key(commit_version)
            read = self.log.read_newest(key, decode_actions_json)
            self._need_log(key, "log", read)
            if read.value is None:
                self.warnings.append(f"commit {commit_version} of {table.root!r} cannot be read ({read.problem}); "
                                     "the files it adds and removes are unknown, so the live files listed may be "
                                     "incomplete")
                continue
            live.apply(read.value, key)
        first_current = checkpoint.version if checkpoint is not None else 0
        for checksum_version, key in sorted(table.checksums.items()):
            # Version checksums are optional (readers work without them): restored when a good version is left.
            if checksum_version >= first_current and self._has_data(key):
                read = self.log.read_newest(key, decode_history_object)
                if read.value is not None:
                    self._need_log(key, "log", read)
                else:
                    self.warnings.append(f"version checksum left alone: {read.problem}")
        data_files, dv_files, deleted_rows = self._need_files(table, live, paths)
        history = self._history(table, first_current)
        self._pointer(table)
        rows = [add.num_records for add in live.files.values()]
        summary: dict[str, Any] = {
            "table_root": table.root,
            "version": version,
            "checkpoint_version": checkpoint.version if checkpoint is not None else None,
            "checkpoint_source": source,
            "checkpoint_parts": len(checkpoint.keys) if checkpoint is not None else 0,
            "commits_replayed": version + 1 - start,
            "row_count": sum(r for r in rows if r is not None) if all(r is not None for r in rows) else None,
            "data_files": data_files,
            "deletion_vector_files": dv_files,
            "rows_deleted_by_deletion_vectors": deleted_rows,
            "log_files": sum(1 for o in self.needed.values() if o.key.startswith(table.log)),
        }
        if self.include_history:
            summary["history_log_files"] = history
        return TableSummary.from_facts("delta", summary,
                                       state="version", source="checkpoint_source", files="data_files")

    # the checkpoint -----------------------------------------------------------------------------------
    def _last_checkpoint(self, table: DeltaTableFiles) -> LastCheckpoint | None:
        if table.last_checkpoint is None:
            return None
        try:
            return self.log.newest_only(table.last_checkpoint, decode_last_checkpoint)
        except MetadataError as exc:
            self.warnings.append(f"_last_checkpoint unusable, ignored (the checkpoint is found by listing): {exc}")
            return None

    def _candidates(self, table: DeltaTableFiles, last: LastCheckpoint | None) -> list[CheckpointFiles]:
        """Checkpoints newest first; at one version, the one _last_checkpoint describes first."""
        def preference(files: CheckpointFiles) -> tuple[int, int]:
            named = last is not None and last.version == files.version and (
                (last.v2_path is not None and files.name == last.v2_path.rsplit("/", 1)[-1])
                or (last.v2_path is None and (last.parts or 1) == len(files.keys)))
            order = {"classic": 1, "uuid": 2, "multi-part": 3}[files.kind]
            return (-files.version, 0 if named else order)

        return sorted((files for sets in table.checkpoints.values() for files in sets), key=preference)

    def _checkpoint(self, table: DeltaTableFiles, last: LastCheckpoint | None, live: LiveFiles,
                    paths: _Paths) -> tuple[CheckpointFiles | None, str]:
        """The newest checkpoint whose every part has a version that decodes; its adds go into ``live``."""
        if last is not None and last.version not in table.checkpoints:
            self.warnings.append(f"_last_checkpoint of {table.root!r} names version {last.version}, whose checkpoint "
                                 "is not listed; the newest listed checkpoint is used")
        for candidate in self._candidates(table, last):
            if not all(self._has_data(key) for key in candidate.keys):
                continue  # deleted for good (metadata cleanup, lifecycle): not a candidate, not reported
            reads = [self.log.read_newest(key, decode_checkpoint) for key in candidate.keys]
            unreadable = [(key, read) for key, read in zip(candidate.keys, reads, strict=True) if read.value is None]
            if unreadable:
                self._unusable_checkpoint(table, candidate, unreadable)
                continue
            for key, read in zip(candidate.keys, reads, strict=True):
                self._need_log(key, "checkpoint", read)
                live.apply(LogActions(adds=read.value.adds), key)
                for sidecar_path, size in read.value.sidecars:
                    self._sidecar(table, key, sidecar_path, size, live, paths)
            named = last is not None and last.version == candidate.version
            return candidate, "_last_checkpoint" if named else "listing"
        if table.checkpoints:
            self.warnings.append(f"no checkpoint of {table.root!r} can be read: the log is replayed from version 0")
        return None, "the commit log, no checkpoint"

    def _unusable_checkpoint(self, table: DeltaTableFiles, candidate: CheckpointFiles,
                             unreadable: list[tuple[str, MetadataRead]]) -> None:
        problems = "; ".join(read.problem for _, read in unreadable)
        self.warnings.append(f"checkpoint {candidate.version} of {table.root!r} is unusable ({problems}); an older "
                             "checkpoint is used")
        for key, read in unreadable:
            if self._is_deleted(key):
                self.skipped.append(SkippedKey(key, f"damaged checkpoint, left deleted: no version decodes "
                                                    f"({read.problem}); readers use an older checkpoint",
                                               kind="checkpoint"))
            else:  # live and damaged: readers would pick it and fail; the plan says so (unrecoverable)
                self._need_log(key, "checkpoint", read)

    def _sidecar(self, table: DeltaTableFiles, checkpoint_key: str, path: str, size: int | None,
                 live: LiveFiles, paths: _Paths) -> None:
        # Sidecars live in _delta_log/_sidecars/; the log usually stores only the file name.
        if _ABSOLUTE_RE.match(path):
            key = paths.key(path, checkpoint_key, "sidecar")
        else:
            key = paths.key(LOG_DIR + SIDECAR_DIR + path, checkpoint_key, "sidecar")
        read = self.log.read_newest(key, decode_checkpoint_parquet)
        self._need_log(key, "checkpoint", read, expected_size=size)
        if read.value is None:
            self.warnings.append(f"sidecar of {checkpoint_key!r} cannot be read ({read.problem}); the live files "
                                 "listed may be incomplete")
            return
        live.apply(LogActions(adds=read.value.adds), key)

    # what the current version reads -------------------------------------------------------------------
    def _need_files(self, table: DeltaTableFiles, live: LiveFiles, paths: _Paths) -> tuple[int, int, int]:
        dv_keys: set[str] = set()
        deleted_rows = 0
        for path, add in live.files.items():
            source = live.sources.get(path) or table.log
            self._need(NeededObject(paths.key(add.path, source, "data file"), kind="data_file",
                                    expected_size=add.size, row_count=add.num_records, parquet=True))
            if add.deletion_vector is None:
                continue
            deleted_rows += add.deletion_vector.cardinality
            try:
                location = deletion_vector_path(add.deletion_vector)
            except ValueError as exc:
                raise MetadataError(f"the deletion vector of {add.path!r} in {table.log!r} cannot be located: {exc}"
                                    ) from None
            if location is not None:
                dv_key = paths.key(location[0], source, "deletion vector", uri=location[1])
                dv_keys.add(dv_key)
                self._need(NeededObject(dv_key, kind="deletion_vector"))
        return len(live.files), len(dv_keys), deleted_rows

    # history and pointers -----------------------------------------------------------------------------
    def _history_keys(self, table: DeltaTableFiles, first_current: int) -> list[str]:
        keys = [key for version, key in table.commits.items() if version <= first_current]
        keys += [key for version, key in table.checksums.items() if version < first_current]
        keys += [key for version, sets in table.checkpoints.items() if version <= first_current
                 for files in sets for key in files.keys]
        keys += table.sidecars
        handled = {skipped.key for skipped in self.skipped}
        return sorted(key for key in keys if key not in self.needed and key not in handled)

    def _history(self, table: DeltaTableFiles, first_current: int) -> int:
        """Log objects older than the checkpoint used: needed with include_history, else reported when deleted."""
        count = 0
        for key in self._history_keys(table, first_current):
            if not self.include_history:
                if self._is_deleted(key) and self._has_data(key):
                    self.skipped.append(SkippedKey(key, HISTORY_REASON.format(version=first_current), kind="log"))
                continue
            if not self._has_data(key):
                continue  # deleted for good (metadata cleanup, lifecycle): that history is gone
            read = self.log.read_newest(key, decode_history_object)
            if read.value is None:
                self.warnings.append(f"history log object left alone: {read.problem}")
                continue
            self._need_log(key, "checkpoint" if ".checkpoint." in key or SIDECAR_DIR in key else "log", read)
            count += 1
        return count

    def _pointer(self, table: DeltaTableFiles) -> None:
        key = table.last_checkpoint
        if key is None:
            return
        if key in self.rollback_keys or key[len(table.root):] in self.rollback_keys:
            self._need_log(key, "log", self.log.read_newest(key, decode_last_checkpoint))
        elif self._is_deleted(key):
            self.skipped.append(SkippedKey(key, POINTER_REASON, kind="log"))


def _build(layout_options: Any, times: Any) -> DeltaLayout:  # noqa: ARG001 - times do not apply to Delta tables
    return DeltaLayout(table_prefix=layout_options.get("table_prefix"),
                       include_history=bool(layout_options.get("include_history")),
                       rollback_keys=layout_options.get("rollback_keys") or ())


FORMAT = TableFormat(
    name="delta",
    title="Delta Lake",
    build=_build,
    detect=detect,
    options={"table_prefix": "only this table (its root relative to the location) when several are under it",
             "include_history": "also restore the log older than the checkpoint used (commits, checkpoints)",
             "rollback_keys": "pointer files to bring back anyway (_delta_log/_last_checkpoint)"},
    row_kinds=frozenset({"data_file"}),
)
