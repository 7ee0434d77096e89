"""Plan: what to do for each key the table needs. A plan is data: saved, reviewed, loaded, applied later.

Statuses: ``present`` (the live version is good), ``restore`` (a deleted key comes back), ``damaged`` (the
live version fails the metadata's checks; an older good version is copied over it), ``unrecoverable``
(no version holding good data is left, with the reason) and ``skipped`` (left alone on purpose, with
the reason). For ``restore`` the action is ``undelete`` (remove the delete markers above the newest
data version; the plan lists their version ids: the undo manifest) or ``copy`` (server-side copy of
the chosen version onto the key, keeping all history).

A saved plan carries a digest (sha256) over everything it holds: the table, the listing facts and every
row, computed canonically so the JSON and Parquet forms of one plan have the same digest. Loading checks
the type and value of every field and the digest before anything is written: a plan edited by hand, cut
short or damaged in transit is refused. The digest is not a signature (anyone who can write the file can
recompute it): ``FuseAmendOperator(plan_digest=...)`` and ``amend --plan-digest`` pin the digest the scan
reported, so the plan applied is the plan reviewed. ``open_plan`` adds the checks that a plan applies
here and now: made for the table given, recent enough (``max_plan_age``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, get_args, overload

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_fuse import json_columns, plan_checks, plan_columns, plan_digest
from airflow_fuse.documents import read_document, write_document
from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import Inventory, KeyHistory
from airflow_fuse.layouts.base import LayoutResult, NeededObject, TableSummary
from airflow_fuse.location import TableLocation
from airflow_fuse.memory import release_memory
from airflow_fuse.parquet import ROW_GROUP, write_parquet
from airflow_fuse.times import isoformat, parse_time

PLAN_FORMAT = "airflow-fuse-plan/1"
Status = Literal["present", "restore", "damaged", "unrecoverable", "skipped"]
Action = Literal["undelete", "copy", ""]  # "": nothing to do
STATUSES: tuple[Status, ...] = get_args(Status)
ACTIONS: tuple[Action, ...] = ("undelete", "copy")
RESCAN = "scan again to make a new plan"
DEFAULT_MAX_PLAN_AGE = timedelta(hours=24)
# A plan whose listing is dated this far in the future is refused (clocks of workers differ a little).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(slots=True)
class PlanItem:
    key: str
    status: Status
    kind: str = "object"
    action: Action = ""
    version_id: str = ""  # the version that comes back
    size: int = 0  # bytes of that version
    etag: str = ""  # of that version (a copy made by a concurrent run has the same)
    reason: str = ""
    current_version_id: str = ""  # the key's current entry when scanned (re-checked before writing)
    current_is_delete_marker: bool = False
    # A version id "null" is not an identity (while versioning is Suspended each write replaces the 'null'
    # version): the re-check compares these too.
    current_etag: str = ""
    current_size: int = 0
    current_last_modified: str = ""
    last_modified: str = ""  # of the version that comes back
    delete_markers: list[str] = field(default_factory=list)  # marker version ids above version_id
    expected_size: int | None = None
    row_count: int | None = None

    @property
    def actionable(self) -> bool:
        return self.status in ("restore", "damaged")


class PlanRows(Sequence[PlanItem]):
    """A plan's rows held as Arrow columns (``PLAN_SCHEMA``, one row per key): what a plan of millions of keys
    is kept as. ``PlanItem`` objects are made when asked for, a batch at a time while iterating; each knows its
    row (``row``). Read-only: an item changed in memory does not change the plan (build a ``Plan`` from a list of
    items for that)."""

    def __init__(self, table: pa.Table, rows: pa.Array | None = None) -> None:
        # Held as given when its columns are the plan's fields (plain, or compact: ``plan_columns``).
        if table.column_names != list(ITEM_FIELDS):
            table = table.select(list(ITEM_FIELDS)).cast(PLAN_SCHEMA)
        self.table = table.replace_schema_metadata(None)
        # The plan rows these are (a subset of a plan: its actionable rows); None: rows 0..n-1.
        self.rows = rows
        self._digest_state: Any = None

    @classmethod
    def from_items(cls, items: Iterable[PlanItem]) -> PlanRows:
        parts: list[pa.Table] = []
        rows: list[dict[str, Any]] = []
        for item in items:
            rows.append({name: getattr(item, name) for name in ITEM_FIELDS})
            if len(rows) >= _PART:
                parts.append(plan_columns.encoded(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)))
                rows = []
        if rows or not parts:
            parts.append(plan_columns.encoded(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)))
        return cls(plan_columns.joined(parts, PLAN_SCHEMA))

    def plain_table(self) -> pa.Table:
        """The rows as ``PLAN_SCHEMA`` columns (what is saved), made from the compact ones."""
        return plan_columns.decoded(self.table, PLAN_SCHEMA)

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, index: int) -> PlanItem: ...

    @overload
    def __getitem__(self, index: slice) -> list[PlanItem]: ...

    def __getitem__(self, index: int | slice) -> PlanItem | list[PlanItem]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return list(self._items(start, max(0, stop - start)))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return next(self._items(index, 1))

    def __iter__(self) -> Iterator[PlanItem]:
        return self._items(0, len(self))

    def _items(self, start: int, length: int) -> Iterator[PlanItem]:
        for first in range(start, start + length, _ROW_BATCH):
            n = min(_ROW_BATCH, start + length - first)
            batch = plan_columns.decoded(self.table.slice(first, n), PLAN_SCHEMA)
            columns = [batch.column(name).to_pylist() for name in ITEM_FIELDS]
            rows = range(first, first + n) if self.rows is None else self.rows.slice(first, n).to_pylist()
            for row, values in zip(rows, zip(*columns, strict=True), strict=True):
                item = RowItem(*values)
                item.row = row
                yield item

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PlanRows):
            return self.plain_table().equals(other.plain_table())
        if isinstance(other, list):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PlanRows({len(self)} rows)"

    def column(self, name: str) -> pa.ChunkedArray:
        """A column's values (the status, kind and action dictionary-encoded; the others as ``PLAN_SCHEMA``)."""
        column = self.table.column(name)
        if column.type == PLAN_SCHEMA.field(name).type or column.type == plan_columns.SMALL_TEXT:
            return column
        return self.plain_table().column(name)

    def where(self, mask: pa.ChunkedArray | pa.Array) -> PlanRows:
        """The rows where ``mask`` is true, each still knowing its row in the plan."""
        rows = pc.indices_nonzero(mask if isinstance(mask, pa.Array) else mask.combine_chunks())
        if len(rows) == len(self):  # every row: the same columns, not a copy of them
            return self
        if self.rows is not None:
            rows = self.rows.take(rows)
        return PlanRows(self.table.filter(mask), rows.cast(pa.int64()))

    def actionable_mask(self) -> pa.ChunkedArray:
        return pc.is_in(self.column("status"), value_set=pa.array(["restore", "damaged"]))

    def plain_batches(self, size: int) -> Iterator[pa.Table]:
        """The rows as ``PLAN_SCHEMA`` columns, ``size`` rows at a time (the compact columns decoded a batch at a
        time, not all at once)."""
        for start in range(0, len(self), size):
            yield plan_columns.decoded(self.table.slice(start, size), PLAN_SCHEMA)

    def value_lists(self) -> Iterator[list[Any]]:
        """Each row as the list of its values in ``ITEM_FIELDS`` order (what the digest hashes)."""
        for start in range(0, len(self), _ROW_BATCH):
            batch = plan_columns.decoded(self.table.slice(start, _ROW_BATCH), PLAN_SCHEMA)
            yield from (list(values) for values in zip(*(c.to_pylist() for c in batch.columns), strict=True))


class RowItem(PlanItem):
    """A PlanItem made from a row of a ``PlanRows``; ``row`` is its row in the plan (not a field of it)."""

    __slots__ = ("row",)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlanItem):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in ITEM_FIELDS)

    __hash__ = None  # type: ignore[assignment]


def _as_rows(items: Sequence[PlanItem]) -> PlanRows | None:
    return items if isinstance(items, PlanRows) else None


@dataclass
class Plan:
    bucket: str
    prefix: str
    table_format: str
    # A list of PlanItem, or PlanRows (Arrow columns: how scans hold plans of millions of keys).
    items: Sequence[PlanItem]
    created_at: str = ""
    listed_at: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    tables: list[TableSummary] = field(default_factory=list)
    keys_listed: int = 0
    versions_listed: int = 0
    listing_pages: int = 0

    def __post_init__(self) -> None:
        self.tables = [t if isinstance(t, TableSummary) else TableSummary.from_dict(t) for t in self.tables]

    @classmethod
    def from_table(cls, table: pa.Table, **header: Any) -> Plan:
        """A plan whose rows are an Arrow table (columns named as PlanItem's fields; ``PLAN_SCHEMA``)."""
        return cls(items=PlanRows(table), **header)

    @property
    def location(self) -> TableLocation:
        return TableLocation(self.bucket, self.prefix)

    def rows_table(self) -> pa.Table:
        """The rows as an Arrow table (``PLAN_SCHEMA``): the plan's own for a plan held as columns."""
        rows = _as_rows(self.items)
        return (rows if rows is not None else PlanRows.from_items(self.items)).plain_table()

    def counts(self) -> dict[str, int]:
        rows = _as_rows(self.items)
        if rows is not None:
            found = pc.value_counts(rows.column("status")).to_pylist() if len(rows) else []
            counter: Counter[str] = Counter({c["values"]: c["counts"] for c in found})
        else:
            counter = Counter(item.status for item in self.items)
        return {status: counter.get(status, 0) for status in STATUSES}

    def actionable(self) -> list[PlanItem]:
        return [item for item in self.items if item.actionable]

    def actionable_items(self) -> Sequence[PlanItem]:
        """The rows to act on (restore, damaged), without making objects of the others: a ``PlanRows`` for a
        plan held as columns (its items know their ``row``), else a list."""
        rows = _as_rows(self.items)
        return rows.where(rows.actionable_mask()) if rows is not None else self.actionable()

    def actionable_count(self) -> int:
        counts = self.counts()
        return counts["restore"] + counts["damaged"]

    def bytes_to_restore(self) -> int:
        rows = _as_rows(self.items)
        if rows is not None:
            total = pc.sum(pc.if_else(rows.actionable_mask(), rows.column("size"), 0)).as_py() if len(rows) else 0
            return int(total or 0)
        return sum(item.size for item in self.actionable())

    def _action_counts(self) -> dict[str, int]:
        rows = _as_rows(self.items)
        if rows is not None:
            actions = rows.column("action").filter(rows.actionable_mask())
            return {c["values"]: c["counts"] for c in pc.value_counts(actions).to_pylist()} if len(actions) else {}
        return dict(Counter(item.action for item in self.actionable()))

    def summary(self) -> dict[str, Any]:
        actions = self._action_counts()
        counts = self.counts()
        return {
            "table": self.location.uri,
            "table_format": self.table_format,
            "keys_listed": self.keys_listed,
            "versions_listed": self.versions_listed,
            "needed": len(self.items) - counts["skipped"],
            **counts,
            "to_undelete": actions.get("undelete", 0),
            "to_copy": actions.get("copy", 0),
            "bytes_to_restore": self.bytes_to_restore(),
            "plan_digest": self.digest,  # pin it: FuseAmendOperator(plan_digest=...), amend --plan-digest
        }

    # serialisation --------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """Every field of the plan but its rows (and the digest, which covers them all)."""
        return {
            "format": PLAN_FORMAT,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "table_format": self.table_format,
            "created_at": self.created_at,
            "listed_at": self.listed_at,
            "options": self.options,
            "info": self.info,
            "tables": [table.as_dict() for table in self.tables],
            "keys_listed": self.keys_listed,
            "versions_listed": self.versions_listed,
            "listing_pages": self.listing_pages,
        }

    def meta(self) -> dict[str, Any]:
        """The header as saved: with the digest."""
        return {**self.header(), "digest": self.digest}

    @property
    def digest(self) -> str:
        """sha256 (hex) of the plan's canonical form: the same for the JSON and the Parquet file of a plan.

        Canonical form: compact JSON with sorted keys and ASCII escapes of ``{"plan": header, "fields":
        row field names, "items": each row as the list of its values}``; the header passes through JSON once
        first, so a value saved as its string (``default=str``) hashes as that string. Hashed as a stream, the
        rows a batch at a time; a plan held as columns hashes its rows once (they cannot change).
        """
        rows = _as_rows(self.items)
        state = rows._digest_state if rows is not None else None
        if state is None:
            state = hashlib.sha256()
            state.update(b'{"fields":' + _canonical(list(ITEM_FIELDS)) + b',"items":[')
            if rows is not None:  # the same bytes, made on the columns
                plan_digest.hash_rows(state, rows.plain_batches(plan_digest.BATCH))
                rows._digest_state = state.copy()
            else:
                _hash_items(state, self.items)
        else:
            state = state.copy()
        header = json.loads(json.dumps(self.header(), default=str))
        state.update(b'],"plan":' + _canonical(header) + b"}")
        return state.hexdigest()

    def to_json(self) -> str:
        return self.json_bytes().decode("ascii")

    def json_bytes(self) -> bytes:
        """The plan as saved in JSON (``json.dumps({**meta, "items": rows}, indent=1)``, ASCII): for a plan held as
        columns, the rows' text made on the columns a batch at a time (``json_columns``), not a dict per row."""
        rows = _as_rows(self.items)
        if rows is None:
            return json.dumps({**self.meta(), "items": [asdict(i) for i in self.items]}, indent=1,
                              default=str).encode("ascii")
        head = json.dumps({**self.meta(), "items": []}, indent=1, default=str).encode("ascii")
        body = list(json_columns.joined_rows(rows.plain_batches(plan_digest.BATCH), "indented", level=2))
        if not body:
            return head
        return b"".join([head[:-len(b"[]\n}")], b"[\n", *body, b"\n ]\n}"])

    def to_parquet(self) -> bytes:
        """The plan as saved in Parquet: its rows (``PLAN_SCHEMA``) with the header in the schema's metadata, written
        a row group at a time from the compact columns (the bytes ``pq.write_table`` writes for the whole table)."""
        rows = _as_rows(self.items)
        source = rows if rows is not None else PlanRows.from_items(self.items)
        schema = PLAN_SCHEMA.with_metadata({"airflow_fuse.plan": json.dumps(self.meta(), default=str)})
        return write_parquet(schema, source.plain_batches(ROW_GROUP))

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> Plan:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadInputError(f"{source} is not an airflow-fuse plan (not JSON: {exc}); {RESCAN}") from None
        if not isinstance(data, dict):
            raise BadInputError(f"{source} is not an airflow-fuse plan (not a JSON object); {RESCAN}")
        rows = data.pop("items", None)
        return cls._checked(data, rows, source)

    @classmethod
    def from_parquet(cls, data: bytes, *, source: str = "plan") -> Plan:
        try:
            file = pq.ParquetFile(pa.BufferReader(data))
            schema = file.schema_arrow
            meta = json.loads((schema.metadata or {})[b"airflow_fuse.plan"])
            # Every row checked on the columns and held compact a batch at a time (the file's plain columns
            # are never all in memory); only a plan that may fail a check is read row by row (to name it).
            rows: Any = None
            if (isinstance(meta, dict) and isinstance(meta.get("prefix"), str)
                    and schema.remove_metadata() == PLAN_SCHEMA
                    and plan_checks.keys_unique(file.read(columns=["key"], use_threads=False).column("key"))):
                rows = _compact_batches(file, meta["prefix"])
            if rows is None:
                rows = file.read(use_threads=False).to_pylist()
        except Exception as exc:
            raise BadInputError(f"{source} is not an airflow-fuse plan ({type(exc).__name__}: {exc}); "
                                f"{RESCAN}") from None
        return cls._checked(meta, rows, source)

    @classmethod
    def _checked(cls, meta: Any, rows: Any, source: str) -> Plan:
        """A plan from its saved header and rows, every field checked, then the digest."""
        if not isinstance(meta, dict) or meta.get("format") != PLAN_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise BadInputError(f"{source} is not an airflow-fuse plan (format {found!r}, expected "
                                f"{PLAN_FORMAT!r}); {RESCAN}")
        _check_header(meta, source, saved=True)
        items: Sequence[PlanItem]
        if isinstance(rows, PlanRows):  # checked on its columns (rows_pass)
            items = rows
        elif not isinstance(rows, list):
            raise _refused(source, "field 'items'", f"must be a list of rows, not {_show(rows)}")
        else:
            _check_rows(rows, meta["prefix"], source)
            items = _rows_of_dicts(rows)
        stored = meta["digest"]
        plan = cls(items=items, **{k: v for k, v in meta.items() if k not in ("format", "digest")})
        computed = plan.digest
        if not hmac.compare_digest(stored, computed):
            raise BadInputError(
                f"plan {source} does not match its digest (saved {stored[:16]}…, its contents give "
                f"{computed[:16]}…): it was changed after the scan, or damaged; it is not applied. {RESCAN}")
        return plan

    def validate(self, *, source: str = "plan") -> None:
        """Check every field of a plan built or changed in memory, as loading a saved one does."""
        _check_header(self.header(), source, saved=False)
        rows = _as_rows(self.items)
        if rows is not None and plan_checks.keys_unique(rows.table.column("key")) and all(
                plan_checks.rows_pass(batch, self.prefix, unique_keys=False) for batch in rows.plain_batches(_PART)):
            return  # every row passes, checked on the columns
        _check_rows([{name: getattr(item, name) for name in ITEM_FIELDS} for item in self.items], self.prefix,
                    source)


ITEM_FIELDS = tuple(f.name for f in fields(PlanItem))
PLAN_SCHEMA = pa.schema(
    [("key", pa.string()), ("status", pa.string()), ("kind", pa.string()), ("action", pa.string()),
     ("version_id", pa.string()), ("size", pa.int64()), ("etag", pa.string()), ("reason", pa.string()),
     ("current_version_id", pa.string()), ("current_is_delete_marker", pa.bool_()),
     ("current_etag", pa.string()), ("current_size", pa.int64()), ("current_last_modified", pa.string()),
     ("last_modified", pa.string()),
     ("delete_markers", pa.list_(pa.string())), ("expected_size", pa.int64()), ("row_count", pa.int64())])
assert tuple(PLAN_SCHEMA.names) == ITEM_FIELDS
_ROW_BATCH = 1024  # rows made into objects (or hashed) at a time
_PART = 65_536  # rows of items made into compact columns at a time


def _hash_items(state: Any, items: Iterable[PlanItem]) -> None:
    """The rows of a plan held as objects into the digest, as ``plan_digest.hash_rows`` does for columns."""
    first = True
    batch: list[list[Any]] = []
    for item in items:
        batch.append([getattr(item, name) for name in ITEM_FIELDS])
        if len(batch) >= _ROW_BATCH:
            state.update((b"" if first else b",") + _canonical(batch)[1:-1])
            first, batch = False, []
    if batch:
        state.update((b"" if first else b",") + _canonical(batch)[1:-1])


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode("ascii")

_ITEM_FIELD_SET = frozenset(ITEM_FIELDS)
_HEADER_FIELDS = ("format", "bucket", "prefix", "table_format", "created_at", "listed_at", "options", "info",
                  "tables", "keys_listed", "versions_listed", "listing_pages")
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


# checks of a saved plan ---------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:60] + '…' if len(text) > 60 else text} ({type(value).__name__})"


def _refused(source: str, where: str, problem: str) -> BadInputError:
    return BadInputError(f"plan {source} is refused: {where} {problem}; {RESCAN}")


def _text(value: Any, *, required: bool = False) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, not {_show(value)}"
    if required and not value:
        return "must not be empty"
    return None


def _count(value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer{' or null' if optional else ''}, not {_show(value)}"
    if value < 0:
        return f"must be >= 0, not {value}"
    return None


def _time(value: Any) -> str | None:
    problem = _text(value)
    if problem is None and value:
        try:
            parse_time(value, name="it", allow_future=True)
        except BadInputError:
            return f"must be an ISO 8601 time with a zone (or empty), not {_show(value)}"
    return problem


def _check_header(meta: dict[str, Any], source: str, *, saved: bool) -> None:
    wanted = set(_HEADER_FIELDS) | ({"digest"} if saved else set())
    unknown = sorted(set(meta) - wanted, key=str)
    if unknown:
        raise _refused(source, f"field {unknown[0]!r}", "is not a field of a plan")
    missing = [name for name in (*_HEADER_FIELDS, "digest") if name in wanted and name not in meta]
    if missing == ["digest"]:
        raise _refused(source, "field 'digest'",
                       "is missing: the plan was made by an older airflow-fuse or edited by hand")
    if missing:
        raise _refused(source, f"field {missing[0]!r}", "is missing")
    checks: dict[str, Any] = {
        "bucket": lambda v: _text(v, required=True),
        "prefix": _text,
        "table_format": lambda v: _text(v, required=True),
        "created_at": _time,
        "listed_at": _time,
        "options": lambda v: None if isinstance(v, dict) else f"must be an object, not {_show(v)}",
        "info": lambda v: None if isinstance(v, dict) else f"must be an object, not {_show(v)}",
        "tables": lambda v: (None if isinstance(v, list) and all(isinstance(t, dict) for t in v)
                             else f"must be a list of objects, not {_show(v)}"),
        "keys_listed": _count,
        "versions_listed": _count,
        "listing_pages": _count,
    }
    if saved:
        checks["digest"] = lambda v: (None if isinstance(v, str) and _DIGEST_RE.match(v)
                                      else f"must be 64 lowercase hex digits (sha256), not {_show(v)}")
    for name, check in checks.items():
        problem = check(meta[name])
        if problem:
            raise _refused(source, f"field {name!r}", problem)
    bucket, prefix = meta["bucket"], meta["prefix"]
    if "/" in bucket or bucket != bucket.strip():
        raise _refused(source, "field 'bucket'", f"is not a bucket name: {bucket!r}")
    segments = prefix.split("/")[:-1]
    if prefix and (not prefix.endswith("/") or any(part in ("", ".", "..") for part in segments)):
        raise _refused(source, "field 'prefix'", f"is not a table prefix (empty, or ending with '/' without empty, "
                                                 f"'.' or '..' segments): {prefix!r}")


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, not {_show(value)}"


def _markers(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(m, str) and m for m in value):
        return None
    return f"must be a list of delete marker version ids, not {_show(value)}"


def _optional_count(value: Any) -> str | None:
    return _count(value, optional=True)


# Checks of the row fields that do not depend on the others (key, status, action, version_id are checked
# in _check_row); in the order of ITEM_FIELDS, so the first bad field named is the first in the row.
_ROW_CHECKS: dict[str, Any] = {
    "kind": lambda v: _text(v, required=True),
    "size": _count,
    "etag": _text,
    "reason": _text,
    "current_version_id": _text,
    "current_is_delete_marker": _flag,
    "current_etag": _text,
    "current_size": _count,
    "current_last_modified": _time,
    "last_modified": _time,
    "delete_markers": _markers,
    "expected_size": _optional_count,
    "row_count": _optional_count,
}
# Every field of a row is checked: a field added to PlanItem needs its check here.
assert list(_ROW_CHECKS) == [f for f in ITEM_FIELDS if f not in ("key", "status", "action", "version_id")]


def _check_row(row: Any, prefix: str) -> tuple[str, str] | None:
    """(field, problem) for the first thing wrong with one row, or None."""
    if not isinstance(row, dict):
        return "", f"must be an object with the fields {', '.join(ITEM_FIELDS)}, not {_show(row)}"
    if len(row) != len(ITEM_FIELDS) or row.keys() != _ITEM_FIELD_SET:
        unknown = sorted(set(row) - _ITEM_FIELD_SET, key=str)
        if unknown:
            return str(unknown[0]), "is not a field of a plan row"
        return next(name for name in ITEM_FIELDS if name not in row), "is missing"
    key, status, action, version_id = row["key"], row["status"], row["action"], row["version_id"]
    problem = _text(key, required=True)
    if problem:
        return "key", problem
    if not key.startswith(prefix):
        return "key", f"{key!r} is outside the table's prefix {prefix!r}"
    if not isinstance(status, str) or status not in STATUSES:
        return "status", f"must be one of {', '.join(STATUSES)}, not {_show(status)}"
    problem = _ROW_CHECKS["kind"](row["kind"])
    if problem:
        return "kind", problem
    actionable = status in ("restore", "damaged")
    if actionable and (not isinstance(action, str) or action not in ACTIONS):
        return "action", f"must be undelete or copy for a row with status {status}, not {_show(action)}"
    if not actionable and action != "":
        return "action", f"must be empty for a row with status {status}, not {_show(action)}"
    if status == "damaged" and action != "copy":
        return "action", f"must be copy for a damaged row (an older version is copied over it), not {action!r}"
    problem = _text(version_id, required=actionable)
    if problem:
        return "version_id", problem
    for name, check in _ROW_CHECKS.items():
        if name != "kind" and (problem := check(row[name])):
            return name, problem
    markers = row["delete_markers"]
    if markers:
        if action != "undelete":
            return "delete_markers", f"must be empty for a row whose action is {action or 'none'!r}"
        if version_id in markers:
            return "delete_markers", f"lists the wanted version {version_id!r}, which holds data"
        current = row["current_version_id"]
        if not row["current_is_delete_marker"] and current and current in markers:
            return "delete_markers", f"lists the current version {current!r}, which holds data"
    return None


def _compact_batches(file: pq.ParquetFile, prefix: str) -> PlanRows | None:
    """A saved plan's rows, checked (``plan_checks.rows_pass``) and held compact a batch at a time as they are read;
    None when a row may fail a check (then it is read row by row, to name the row)."""
    parts: list[pa.Table] = []
    for batch in file.iter_batches(batch_size=_PART, use_threads=False):
        rows = pa.Table.from_batches([batch]).replace_schema_metadata(None)
        if not plan_checks.rows_pass(rows, prefix, unique_keys=False):
            return None
        try:
            parts.append(plan_columns.encoded(rows))
        except pa.ArrowInvalid:  # e.g. more kinds than a compact column holds: kept as read
            return PlanRows(file.read(use_threads=False))
    return PlanRows(plan_columns.joined(parts, PLAN_SCHEMA))


def _rows_of_dicts(rows: list[Any]) -> Sequence[PlanItem]:
    """Checked rows (dicts of ``ITEM_FIELDS``) as Arrow columns, a part at a time, each dict let go once in its
    part; objects (``PlanItem``) from the first value the columns do not hold (an integer beyond 64 bits)."""
    parts: list[pa.Table] = []
    for start in range(0, len(rows), _PART):
        part = rows[start:start + _PART]
        try:
            parts.append(plan_columns.encoded(pa.Table.from_pylist(part, schema=PLAN_SCHEMA)))
        except (pa.ArrowInvalid, OverflowError):
            held = list(PlanRows(plan_columns.joined(parts, PLAN_SCHEMA))) if parts else []
            return held + [PlanItem(**row) for row in rows[start:]]
        rows[start:start + len(part)] = [None] * len(part)
    return PlanRows(plan_columns.joined(parts, PLAN_SCHEMA))


def _check_rows(rows: list[Any], prefix: str, source: str) -> None:
    first_row: dict[str, int] = {}

    def where(index: int, row: Any) -> str:
        key = row.get("key") if isinstance(row, dict) else None
        return f"items[{index}]" + (f" (key {key!r})" if isinstance(key, str) else "")

    for index, row in enumerate(rows):
        found = _check_row(row, prefix)
        if found is not None:
            name, problem = found
            raise _refused(source, f"{where(index, row)}, field {name!r}," if name else where(index, row), problem)
        key = row["key"]
        if key in first_row:
            raise _refused(source, where(index, row), f"repeats the key of items[{first_row[key]}]: a key is "
                                                      "planned once")
        first_row[key] = index


# checks that a plan applies here and now ----------------------------------------------------------

def parse_max_plan_age(value: Any) -> timedelta | None:
    """``max_plan_age`` as given: hours (a number), a duration (``90m``, ``24h``, ``2d``, ``30s``), a timedelta,
    or ``None``/``"none"`` for no limit. ``0`` is refused: it would refuse every plan."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, timedelta):
        age = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        age = timedelta(hours=value)
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value.lower())):
        number, unit = float(match.group(1)), match.group(2) or "h"
        age = timedelta(seconds=number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
    else:
        raise BadInputError(f"max_plan_age={value!r} is not a duration: give hours (36), or 90m, 24h, 2d; "
                            "'none' applies a plan whatever its age")
    if age <= timedelta(0):
        raise BadInputError(f"max_plan_age={value!r} would refuse every plan: give a duration such as 24h, or "
                            "'none' to apply a plan whatever its age")
    return age


def parse_plan_digest(value: Any) -> str | None:
    """A pinned digest: ``None`` pins nothing; anything else must be a sha256 in hex."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:"):]
    if not _DIGEST_RE.match(text):
        raise BadInputError(f"plan_digest={value!r} is not a sha256 digest (64 hex digits): pin the "
                            "plan_digest the scan reported")
    return text


def human_age(age: timedelta) -> str:
    seconds = age.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def check_plan_applies(plan: Plan, *, source: str, table: TableLocation | None = None,
                       max_age: timedelta | None = DEFAULT_MAX_PLAN_AGE, digest: str | None = None,
                       now: datetime | None = None) -> None:
    """Refuse a plan that is not the pinned one, not for ``table``, or older than ``max_age``."""
    if digest is not None and not hmac.compare_digest(plan.digest, digest):
        raise BadInputError(f"plan {source} has digest {plan.digest}, not the pinned {digest}: it is not the plan "
                            f"that was scanned and reviewed; nothing was written. {RESCAN}, or pin its digest")
    if table is not None and (plan.bucket, plan.prefix) != (table.bucket, table.prefix):
        raise BadInputError(f"plan {source} is for {plan.location.uri}, not {table.uri}: scan this table again")
    if max_age is None:
        return
    stamp = plan.listed_at or plan.created_at
    override = ("--max-plan-age 72h or max_plan_age='72h' to allow older plans, or none for any age")
    if not stamp:
        raise BadInputError(f"plan {source} does not say when its listing was taken, so its age is unknown: "
                            f"{RESCAN}, or apply it anyway with {override}")
    listed = parse_time(stamp, name="listed_at", allow_future=True)
    assert listed is not None
    age = (now or datetime.now(timezone.utc)) - listed
    if age < -CLOCK_SKEW:
        raise BadInputError(f"plan {source} says its listing was taken at {stamp}, {human_age(-age)} in the "
                            f"future: check the clocks; {RESCAN}, or apply it anyway with --max-plan-age none")
    if age > max_age:
        raise BadInputError(f"plan {source} was made from a listing taken {human_age(age)} ago ({stamp}), more "
                            f"than max_plan_age ({human_age(max_age)}): the table may have changed since. "
                            f"{RESCAN}, or apply it anyway with {override}")


def open_plan(plan: str | Plan, *, client: Any = None, table: TableLocation | None = None,
              max_age: timedelta | None = DEFAULT_MAX_PLAN_AGE, digest: str | None = None,
              now: datetime | None = None) -> Plan:
    """A saved plan (a location) or a plan in memory, checked: well formed, its digest, its table, its age."""
    if isinstance(plan, Plan):
        source = "given"
        plan.validate(source=source)
    else:
        source = plan
        plan = load_plan(plan, client=client)
    check_plan_applies(plan, source=source, table=table, max_age=max_age, digest=digest, now=now)
    return plan


# planning ---------------------------------------------------------------------------------------

ONLY_MARKERS_LEFT = ("only delete markers are left: the versions holding data were permanently deleted or expired "
                     "by a lifecycle rule (NoncurrentVersionExpiration)")


def _unrecoverable_reason(history: KeyHistory | None, obj: NeededObject) -> str:
    if history is None:
        return ("no version of this key is listed: it was never written, or every version was permanently "
                "deleted or expired by a lifecycle rule")
    data = history.data_versions
    if obj.as_of is not None:
        return f"no version holding data was current at as_of ({isoformat(obj.as_of)})"
    if data:
        sizes = sorted({v.size for v in data})
        if obj.expected_size is not None and obj.expected_size not in sizes:
            return (f"no version has the size the metadata records ({obj.expected_size} bytes; versions have "
                    f"{sizes}): every version is damaged")
        return "every version holding data failed the metadata checks (damaged)"
    if any(e.version_id == "null" for e in history.entries):
        return ("only a 'null' delete marker is left: the data was written or deleted while versioning was "
                "Suspended, which replaces the 'null' version, so no older version exists")
    return ONLY_MARKERS_LEFT


def plan_object(obj: NeededObject, history: KeyHistory | None) -> PlanItem:
    """Decide one key: present, restore (undelete or copy), damaged (copy) or unrecoverable."""
    item = PlanItem(key=obj.key, status="unrecoverable", kind=obj.kind, expected_size=obj.expected_size,
                    row_count=obj.row_count)
    if history is None:
        item.reason = _unrecoverable_reason(None, obj)
        return item
    current = history.current
    item.current_version_id = current.version_id
    item.current_is_delete_marker = current.is_delete_marker
    item.current_etag, item.current_size = current.etag, current.size
    item.current_last_modified = isoformat(current.last_modified) or ""

    def good(entry: Any) -> bool:
        return (not entry.is_delete_marker and entry.version_id not in obj.bad_versions
                and (obj.expected_size is None or entry.size == obj.expected_size))

    if obj.as_of is not None:
        then = history.at(obj.as_of)
        candidates = [then] if then is not None and good(then) else []
    else:
        candidates = [v for v in history.data_versions if good(v)]

    if candidates and (current.version_id == candidates[0].version_id or _same_data(current, candidates[0])):
        # The wanted version is current, or a copy of it is (a restore ran before): nothing to do.
        item.status, item.version_id, item.size = "present", current.version_id, current.size
        return item
    damaged = not current.is_delete_marker and not good(current)
    if not candidates:
        item.reason = _unrecoverable_reason(history, obj)
        if damaged:
            item.reason = f"live version is damaged ({_damage(obj, current.size)}); " + item.reason
        return item
    wanted = candidates[0]
    item.version_id, item.size, item.etag = wanted.version_id, wanted.size, wanted.etag
    item.last_modified = isoformat(wanted.last_modified) or ""
    above = history.above(wanted.version_id)
    if damaged:
        item.status, item.action = "damaged", "copy"
        item.reason = f"live version {current.version_id} is damaged ({_damage(obj, current.size)})"
    elif not current.is_delete_marker:
        item.status, item.action = "restore", "copy"
        item.reason = f"rolled back to the version current at {isoformat(obj.as_of)}"
    elif all(e.is_delete_marker for e in above):
        item.status, item.action = "restore", "undelete"
        item.delete_markers = [e.version_id for e in above]
        item.reason = f"deleted at {isoformat(current.last_modified)}"
    else:
        item.status, item.action = "restore", "copy"
        item.reason = (f"deleted at {isoformat(current.last_modified)}; the good version is not the newest "
                       "data version, so it is copied")
    return item


def _same_data(current: Any, wanted: Any) -> bool:
    """A live version holding the wanted version's bytes: same size and the same single-part ETag (an MD5 of the
    bytes). A multipart ETag ("…-N") is not a digest of the bytes, so it proves nothing."""
    return (not current.is_delete_marker and bool(wanted.etag) and "-" not in wanted.etag
            and current.etag == wanted.etag and current.size == wanted.size)


def _damage(obj: NeededObject, size: int) -> str:
    if obj.damaged_reason:
        return obj.damaged_reason
    if obj.expected_size is not None and size != obj.expected_size:
        return f"{size} bytes, the metadata says {obj.expected_size}"
    return "fails the metadata checks"


def build_plan(inventory: Inventory, layout_result: LayoutResult, *, table_format: str,
               options: dict[str, Any] | None = None, release: bool = False) -> Plan:
    """The plan of every key the layout needs, then of the keys it skipped; held as Arrow columns (``PlanRows``).

    A layout that asks for the deleted keys (``LayoutResult.deleted``) has them planned on the inventory's columns
    (``airflow_fuse.deleted_plan``), in key order, with no Python object per key; with ``release`` the inventory's
    rows are given back as they are planned, so the plan grows while the listing shrinks (the inventory is spent
    afterwards: ``Inventory.release_batches``; it answers ``history`` for the keys planned as copies only)."""
    if layout_result.deleted is not None:
        rows = _deleted_rows(inventory, layout_result, release)
    else:
        items: list[PlanItem] = []
        seen: set[str] = set()
        for obj in layout_result.needed:
            if obj.key in seen:
                continue
            seen.add(obj.key)
            items.append(plan_object(obj, inventory.history(obj.key)))
        for skipped in layout_result.skipped:
            if skipped.key not in seen:
                seen.add(skipped.key)
                items.append(PlanItem(key=skipped.key, status="skipped", kind=skipped.kind, reason=skipped.reason))
        rows = PlanRows.from_items(items)
    return Plan(
        bucket=inventory.bucket,
        prefix=inventory.prefix,
        table_format=table_format,
        items=rows,
        created_at=isoformat(datetime.now(timezone.utc)) or "",
        listed_at=isoformat(inventory.listed_at) or "",
        options=options or {},
        info=layout_result.info,
        tables=layout_result.tables,
        keys_listed=inventory.key_count,
        versions_listed=len(inventory),
        listing_pages=inventory.pages,
    )


def _deleted_rows(inventory: Inventory, layout_result: LayoutResult, release: bool) -> PlanRows:
    """The deleted keys' rows (computed on the columns; the odd histories by ``plan_object``) in key order, then
    the rows of the deleted keys outside the window (skipped). With ``release``, the inventory's rows are given
    back as they are planned (it keeps the histories of the keys planned as copies only)."""
    from airflow_fuse.deleted_plan import plan_deleted  # it builds on this module's schema

    if layout_result.needed or layout_result.skipped:
        raise ValueError("a layout result gives its keys as objects or as the deleted keys, not both")
    assert layout_result.deleted is not None
    needed: list[pa.Table] = []
    skipped: list[pa.Table] = []
    for part in plan_deleted(inventory, layout_result.deleted, release=release):
        rows = part.needed.drop_columns(["_index"])
        if part.slow:
            items = [plan_object(NeededObject(history.key), history) for history in part.histories]
            for item, history in zip(items, part.histories, strict=True):
                if item.action == "copy":
                    inventory.keep(history)  # a copy is re-checked on its history (engine: history_of)
            odd = PlanRows.from_items(items).table
            index = pa.concat_arrays([part.needed.column("_index").combine_chunks(), pa.array(part.slow, pa.int64())])
            rows = plan_columns.joined([rows, odd], PLAN_SCHEMA).take(pc.sort_indices(index))
        needed.append(rows)
        if part.skipped.num_rows:
            skipped.append(plan_columns.encoded(part.skipped))
        del part, rows
        release_memory()  # the batch's temporary columns, before the next batch's
    return PlanRows(plan_columns.joined(needed + skipped, PLAN_SCHEMA))


# storage of plans and reports ------------------------------------------------------------------

def save_plan(plan: Plan, uri: str, *, client: Any = None) -> str:
    data = plan.to_parquet() if uri.endswith(".parquet") else plan.json_bytes()
    return write_document(uri, data, client=client, table=plan.location)


def load_plan(uri: str, *, client: Any = None) -> Plan:
    data = read_document(uri, client=client, what="plan")
    if uri.endswith(".parquet"):
        return Plan.from_parquet(data, source=uri)
    return Plan.from_json(data.decode("utf-8", errors="replace"), source=uri)
