"""Plan: what to do for each key the table needs. A plan is data: saved, reviewed, loaded, applied later.

Statuses: ``present`` (the live version is good), ``restore`` (a deleted key comes back), ``damaged`` (the
live version fails the metadata's checks; an older good version is copied over it), ``unrecoverable``
(no version holding good data is left, with the reason) and ``skipped`` (left alone on purpose, with
the reason). For ``restore`` the action is ``undelete`` (remove the delete markers above the newest
data version; the plan lists their version ids: the undo manifest) or ``copy`` (server-side copy of
the chosen version onto the key, keeping all history).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import Inventory, KeyHistory
from airflow_fuse.layouts.base import LayoutResult, NeededObject
from airflow_fuse.location import TableLocation, parse_table_uri
from airflow_fuse.parquet import read_parquet
from airflow_fuse.s3 import explain
from airflow_fuse.times import isoformat

PLAN_FORMAT = "airflow-fuse-plan/1"
STATUSES = ("present", "restore", "damaged", "unrecoverable", "skipped")


@dataclass(slots=True)
class PlanItem:
    key: str
    status: str
    kind: str = "object"
    action: str = ""  # undelete | copy | "" (nothing to do)
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


@dataclass
class Plan:
    bucket: str
    prefix: str
    table_format: str
    items: list[PlanItem]
    created_at: str = ""
    listed_at: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    keys_listed: int = 0
    versions_listed: int = 0
    listing_pages: int = 0

    @property
    def location(self) -> TableLocation:
        return TableLocation(self.bucket, self.prefix)

    def counts(self) -> dict[str, int]:
        counter = Counter(item.status for item in self.items)
        return {status: counter.get(status, 0) for status in STATUSES}

    def actionable(self) -> list[PlanItem]:
        return [item for item in self.items if item.actionable]

    def bytes_to_restore(self) -> int:
        return sum(item.size for item in self.actionable())

    def summary(self) -> dict[str, Any]:
        actions = Counter(item.action for item in self.actionable())
        return {
            "table": self.location.uri,
            "table_format": self.table_format,
            "keys_listed": self.keys_listed,
            "versions_listed": self.versions_listed,
            "needed": sum(1 for i in self.items if i.status != "skipped"),
            **self.counts(),
            "to_undelete": actions.get("undelete", 0),
            "to_copy": actions.get("copy", 0),
            "bytes_to_restore": self.bytes_to_restore(),
        }

    # serialisation --------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "table_format": self.table_format,
            "created_at": self.created_at,
            "listed_at": self.listed_at,
            "options": self.options,
            "info": self.info,
            "tables": self.tables,
            "keys_listed": self.keys_listed,
            "versions_listed": self.versions_listed,
            "listing_pages": self.listing_pages,
        }

    def to_json(self) -> str:
        return json.dumps({**self.meta(), "items": [asdict(i) for i in self.items]}, indent=1, default=str)

    def to_parquet(self) -> bytes:
        rows = [asdict(i) for i in self.items]
        schema = pa.schema(
            [("key", pa.string()), ("status", pa.string()), ("kind", pa.string()), ("action", pa.string()),
             ("version_id", pa.string()), ("size", pa.int64()), ("etag", pa.string()), ("reason", pa.string()),
             ("current_version_id", pa.string()), ("current_is_delete_marker", pa.bool_()),
             ("current_etag", pa.string()), ("current_size", pa.int64()), ("current_last_modified", pa.string()),
             ("last_modified", pa.string()),
             ("delete_markers", pa.list_(pa.string())), ("expected_size", pa.int64()), ("row_count", pa.int64())],
            metadata={"airflow_fuse.plan": json.dumps(self.meta(), default=str)},
        )
        table = pa.Table.from_pylist(rows, schema=schema)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> Plan:
        try:
            data = json.loads(text)
            items = [PlanItem(**item) for item in data.pop("items")]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadInputError(f"{source} is not an airflow-fuse plan ({exc}); create one with a scan") from None
        return cls._from_meta(data, items, source)

    @classmethod
    def from_parquet(cls, data: bytes, *, source: str = "plan") -> Plan:
        try:
            table = read_parquet(data)
            meta = json.loads(table.schema.metadata[b"airflow_fuse.plan"])
            items = [PlanItem(**row) for row in table.to_pylist()]
        except Exception as exc:
            raise BadInputError(f"{source} is not an airflow-fuse plan ({exc}); create one with a scan") from None
        return cls._from_meta(meta, items, source)

    @classmethod
    def _from_meta(cls, meta: dict[str, Any], items: list[PlanItem], source: str) -> Plan:
        if not isinstance(meta, dict) or meta.get("format") != PLAN_FORMAT:
            raise BadInputError(f"{source} is not an airflow-fuse plan (format {meta.get('format')!r}, "
                                f"expected {PLAN_FORMAT!r}); create one with a scan")
        for item in items:
            if item.status not in STATUSES or not item.key.startswith(meta["prefix"]):
                raise BadInputError(f"{source} is malformed: item {item.key!r} ({item.status}) is not a valid "
                                    f"plan row for prefix {meta['prefix']!r}")
            if item.actionable and item.action not in ("undelete", "copy"):
                raise BadInputError(f"{source} is malformed: item {item.key!r} has action {item.action!r}")
        meta = {k: v for k, v in meta.items() if k != "format"}
        return cls(items=items, **meta)


# planning ---------------------------------------------------------------------------------------

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
    return ("only delete markers are left: the versions holding data were permanently deleted or expired by a "
            "lifecycle rule (NoncurrentVersionExpiration)")


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
               options: dict[str, Any] | None = None) -> Plan:
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
    return Plan(
        bucket=inventory.bucket,
        prefix=inventory.prefix,
        table_format=table_format,
        items=items,
        created_at=isoformat(datetime.now(timezone.utc)) or "",
        listed_at=isoformat(inventory.listed_at) or "",
        options=options or {},
        info=layout_result.info,
        tables=layout_result.tables,
        keys_listed=inventory.key_count,
        versions_listed=len(inventory),
        listing_pages=inventory.pages,
    )


# storage of plans and reports ------------------------------------------------------------------

def write_document(uri: str, data: bytes, *, client: Any = None, table: TableLocation | None = None) -> str:
    """Write bytes to a local path or ``s3://bucket/key``; never inside the table being restored."""
    if uri.startswith("s3://"):
        target = parse_table_uri(uri.rstrip("/") + "/", allow_bucket_root=True)
        key = target.prefix.rstrip("/")
        if table is not None and target.bucket == table.bucket and key.startswith(table.prefix):
            raise BadInputError(f"{uri} is inside the table {table.uri}: writing there would add an object to "
                                "the table; choose a location outside its prefix")
        if client is None:
            raise BadInputError(f"an S3 client is needed to write {uri}")
        try:
            client.put_object(Bucket=target.bucket, Key=key, Body=data)
        except Exception as exc:
            raise explain(exc, bucket=target.bucket, client=client, action=f"write {uri} to", key=key) from None
        return uri
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def read_document(uri: str, *, client: Any = None) -> bytes:
    if uri.startswith("s3://"):
        target = parse_table_uri(uri.rstrip("/") + "/", allow_bucket_root=True)
        if client is None:
            raise BadInputError(f"an S3 client is needed to read {uri}")
        try:
            return client.get_object(Bucket=target.bucket, Key=target.prefix.rstrip("/"))["Body"].read()
        except Exception as exc:
            key = target.prefix.rstrip("/")
            raise BadInputError(f"cannot read plan {uri}: " + str(explain(
                exc, bucket=target.bucket, client=client, action="read", key=key, versioned=False))) from None
    try:
        return Path(uri).read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read plan {uri}: {exc.strerror}") from None


def save_plan(plan: Plan, uri: str, *, client: Any = None) -> str:
    data = plan.to_parquet() if uri.endswith(".parquet") else plan.to_json().encode()
    return write_document(uri, data, client=client, table=plan.location)


def load_plan(uri: str, *, client: Any = None) -> Plan:
    data = read_document(uri, client=client)
    if uri.endswith(".parquet"):
        return Plan.from_parquet(data, source=uri)
    return Plan.from_json(data.decode("utf-8", errors="replace"), source=uri)
