"""Undo: put back what a restore changed, from the report it saved, without ever removing data that existed before.

A restore changes a key in one of two ways, and its report says which (``result``):

``undeleted``
    it removed the delete markers above ``version_id``. Undo puts one delete marker back (a DeleteObjects
    entry without a version id) — only if ``version_id`` is still the key's current version. A marker hides,
    it removes nothing: every version stays.
``copied``
    it copied ``version_id`` (the source) onto the key, making a new version (``new_version_id``). Undo
    deletes exactly that new version — only if it is still the current version and holds the same bytes as
    the source, which stays: so the bytes it holds are never lost, and no version that existed before the
    restore is touched.

Same bytes: equal size and equal ETag, from the listing. A multipart copy (objects above the multipart
threshold) has a different ETag from its source even when the bytes are equal (a multipart ETag is the MD5 of
the parts' MD5s, and the copy's parts are cut differently); the same holds for SSE-KMS, whose ETags are not an
MD5 of the data. Then, when the sizes are equal, the two versions are read as two streams and compared chunk by
chunk (stopping at the first difference). Part checksums were the other choice; they are not comparable across
different part layouts, and exist only if the writer asked for them, so they cannot decide the common case.

When ``new_version_id`` is empty (Ceph's CopyObject does not return one; boto3's managed multipart copy does
not report it), the new version is recognised only with proof: the key's current version holds the source's
bytes, is not the source itself, and is the *only* version holding data written since the scan the restore
applied (the plan's ``listed_at``, minus :data:`CLOCK_MARGIN` for servers whose timestamps are whole seconds
or whose clock lags). Anything else — no scan time in the report (Parquet reports carry none today), a second
version written since, another current version — leaves the key alone, with the reason.

Writes happen only while bucket versioning is Enabled (suspended versioning would make the marker a ``null``
version that replaces a ``null`` version holding data). Each key is decided from a fresh listing; keys that
got a marker are listed once more afterwards, and if a writer's version slipped in under the new marker (written
between the listing and the marker), that marker is removed again so the writer's data stays live.

Running it twice changes nothing the second time: every key reports ``already undone``.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from airflow_fuse.documents import read_document, write_document
from airflow_fuse.errors import BadInputError, PreconditionError
from airflow_fuse.inventory import KeyHistory, iter_histories
from airflow_fuse.listing import VersionEntry, iter_object_versions
from airflow_fuse.location import TableLocation, parse_table_uri
from airflow_fuse.parquet import read_parquet
from airflow_fuse.plan import PLAN_FORMAT
from airflow_fuse.s3 import RequestCounter, error_code, explain
from airflow_fuse.times import isoformat, parse_time
from airflow_fuse.versioning import ENABLE_HINT, get_versioning_status

log = logging.getLogger(__name__)

UNDO_FORMAT = "airflow-fuse-undo-report/1"
PUT_MARKER = "put delete marker"
DELETE_COPY = "delete restored copy"
# results
UNDONE, WOULD_UNDO, ALREADY_UNDONE, LEFT_ALONE, FAILED = "undone", "would undo", "already undone", "left alone", \
    "failed"
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 entries
# A version counts as "written since the scan" if its LastModified is no earlier than the scan's listing time
# minus this: moto's timestamps are whole seconds (rounded down), and a server clock may lag the scanning
# machine's. A larger margin only makes more keys "left alone" (it can only add versions to those written
# since the scan, and a key is touched only when exactly one such version exists).
CLOCK_MARGIN = timedelta(seconds=5)
COMPARE_CHUNK = 8 * 1024**2
ALREADY_GONE_CODES = {"NoSuchVersion", "NoSuchKey"}


# the restore report, as undo reads it ----------------------------------------------------------------

@dataclass(slots=True)
class RestoredKey:
    """One key a restore changed, from its report row."""

    key: str
    result: str  # undeleted | copied
    version_id: str  # the version the restore brought back (undeleted), or copied from (copied)
    size: int = 0
    markers_removed: list[str] = field(default_factory=list)
    new_version_id: str = ""  # copied: the version the copy created ("" if the server did not say)


@dataclass
class RestoreReport:
    """What undo needs from a saved restore report."""

    source: str
    location: TableLocation
    strategy: str
    keys: list[RestoredKey]
    listed_at: datetime | None = None  # the scan the restore applied listed the table at this time
    rows_not_changed: int = 0  # rows the restore did not change (present, failed, already restored, ...)


def _refuse(source: str, why: str) -> BadInputError:
    return BadInputError(f"{source} {why}")


_NOT_A_REPORT = ("is not an airflow-fuse report ({}); undo needs the report a restore saved "
                 "(`airflow-fuse amend --report FILE`, FuseAmendOperator report_uri)")


def parse_report(data: bytes, *, source: str = "report") -> RestoreReport:
    """A restore report (``Report.save``: ``.json`` or ``.parquet``), checked; refuses anything else."""
    if data[:4] == b"PAR1":
        summary, plan_meta, rows = _parquet_parts(data, source)
    else:
        summary, plan_meta, rows = _json_parts(data, source)
    if not isinstance(summary, dict) or "table" not in summary:
        raise _refuse(source, _NOT_A_REPORT.format("it has no report summary"))
    if "dry_run" not in summary:
        raise _refuse(source, "is the report of a scan: it restored nothing, so there is nothing to undo")
    if summary.get("dry_run"):
        raise _refuse(source, "is the report of a dry run: it changed nothing, so there is nothing to undo; "
                              "give the report of the run that restored")
    if plan_meta:
        location = TableLocation(str(plan_meta.get("bucket")), str(plan_meta.get("prefix", "")))
    else:
        location = parse_table_uri(str(summary["table"]), allow_bucket_root=True)
    listed_at = None
    for value in (plan_meta.get("listed_at"), summary.get("listed_at")):
        if value:
            try:
                listed_at = parse_time(value, name="listed_at", allow_future=True)
                break
            except BadInputError:
                pass
    keys: list[RestoredKey] = []
    unchanged = 0
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            raise _refuse(source, f"is malformed: row {row!r} has no key")
        key, result = row["key"], row.get("result")
        if result not in ("undeleted", "copied"):
            unchanged += 1
            continue
        if not key.startswith(location.prefix):
            raise _refuse(source, f"is malformed: key {key!r} is not inside the table {location.uri}")
        version = str(row.get("version_id") or "")
        if not version:
            raise _refuse(source, f"is malformed: key {key!r} ({result}) has no version_id")
        new_version = str(row.get("new_version_id") or "")
        if result == "copied" and new_version == version:
            raise _refuse(source, f"is malformed: key {key!r} names its source version {version} as the copy")
        keys.append(RestoredKey(key=key, result=result, version_id=version, size=int(row.get("size") or 0),
                                markers_removed=[str(m) for m in row.get("delete_markers_removed") or []],
                                new_version_id=new_version))
    return RestoreReport(source=source, location=location, strategy=str(summary.get("strategy", "")), keys=keys,
                         listed_at=listed_at, rows_not_changed=unchanged)


def _json_parts(data: bytes, source: str) -> tuple[Any, dict, list]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(source, _NOT_A_REPORT.format(f"not JSON or Parquet: {exc}")) from None
    if not isinstance(document, dict):
        raise _refuse(source, _NOT_A_REPORT.format("not a JSON object"))
    if document.get("format") == UNDO_FORMAT:
        raise _refuse(source, "is the report of an undo: to bring those keys back, amend the table again")
    if document.get("format") == PLAN_FORMAT:
        raise _refuse(source, "is a plan, not a report: undo needs the report the restore saved (--report)")
    plan_meta = document.get("plan")
    if not isinstance(plan_meta, dict) or plan_meta.get("format") != PLAN_FORMAT:
        raise _refuse(source, _NOT_A_REPORT.format("no airflow-fuse plan header"))
    rows = document.get("rows")
    if not isinstance(rows, list):
        raise _refuse(source, _NOT_A_REPORT.format("no rows"))
    return document.get("summary"), plan_meta, rows


def _parquet_parts(data: bytes, source: str) -> tuple[Any, dict, list]:
    try:
        table = read_parquet(data)
    except Exception as exc:
        raise _refuse(source, _NOT_A_REPORT.format(f"unreadable Parquet: {exc}")) from None
    metadata = table.schema.metadata or {}
    if b"airflow_fuse.undo_report" in metadata:
        raise _refuse(source, "is the report of an undo: to bring those keys back, amend the table again")
    if b"airflow_fuse.plan" in metadata:
        raise _refuse(source, "is a plan, not a report: undo needs the report the restore saved (--report)")
    if b"airflow_fuse.report" not in metadata:
        raise _refuse(source, _NOT_A_REPORT.format("a Parquet file without the airflow_fuse.report header"))
    try:
        summary = json.loads(metadata[b"airflow_fuse.report"])
    except ValueError as exc:
        raise _refuse(source, _NOT_A_REPORT.format(f"unreadable header: {exc}")) from None
    return summary, {}, table.to_pylist()


def load_report(uri: str, *, client: Any = None) -> RestoreReport:
    return parse_report(read_document(uri, client=client, what="report"), source=uri)


# decisions (pure: a key's history in, what to do out) -------------------------------------------------

@dataclass(slots=True)
class Decision:
    """What to do with one key: ``undo`` (then ``action`` on ``target``), ``already undone`` or ``left alone``."""

    result: str
    action: str
    detail: str
    target: str = ""  # the version to delete (copies); the restored version under the new marker (undeletes)
    compare: tuple[VersionEntry, VersionEntry] | None = None  # (copy, source): bytes still to compare


def _describe(entry: VersionEntry) -> str:
    kind = "a delete marker" if entry.is_delete_marker else f"data, {entry.size} bytes"
    return f"{entry.version_id} ({kind}, {isoformat(entry.last_modified)})"


def decide_undelete(item: RestoredKey, history: KeyHistory | None) -> Decision:
    """Put a delete marker back, only on top of the very version the restore brought back."""
    if history is None:
        return Decision(LEFT_ALONE, PUT_MARKER, "no version of the key is listed any more")
    current = history.current
    if current.is_delete_marker:
        return Decision(ALREADY_UNDONE, PUT_MARKER, f"the key is deleted (current entry {_describe(current)})")
    if current.version_id != item.version_id:
        return Decision(LEFT_ALONE, PUT_MARKER, f"written since the restore: the current version is "
                        f"{_describe(current)}, not the restored {item.version_id}; its data stays live")
    if current.version_id == "null" and item.size and current.size != item.size:
        # A 'null' id is no identity: another object may have replaced it while versioning was suspended.
        return Decision(LEFT_ALONE, PUT_MARKER, f"the current 'null' version has {current.size} bytes, the "
                        f"restored one had {item.size}: it was replaced since the restore")
    return Decision("undo", PUT_MARKER, f"{item.version_id} is still current", target=item.version_id)


def same_listing_bytes(a: VersionEntry, b: VersionEntry) -> bool | None:
    """True/False when the listing decides (size and ETag); None when only reading the bytes can."""
    if a.size != b.size:
        return False
    if a.etag and a.etag == b.etag:
        return True
    return None


def decide_copy(item: RestoredKey, history: KeyHistory | None, since: datetime | None) -> Decision:
    """Delete the restore's copy: only the current version, proven made by the restore, holding the source's bytes.

    ``since``: versions with a LastModified at or after this were written after the scan (None: unknown).
    """
    if history is None:
        return Decision(LEFT_ALONE, DELETE_COPY, "no version of the key is listed any more")
    by_id = {e.version_id: e for e in history.entries}
    source = by_id.get(item.version_id)
    current = history.current
    if item.new_version_id:
        copy = by_id.get(item.new_version_id)
        if copy is None:
            return Decision(ALREADY_UNDONE, DELETE_COPY, f"the restored copy {item.new_version_id} no longer exists")
        if copy.is_delete_marker:
            return Decision(LEFT_ALONE, DELETE_COPY, f"{item.new_version_id} is a delete marker, not a copy: the "
                            "report does not match the bucket")
        if current.version_id != copy.version_id:
            return Decision(LEFT_ALONE, DELETE_COPY, f"the restored copy {copy.version_id} is no longer current "
                            f"(current entry {_describe(current)}, written since the restore); nothing removed")
        return _delete_if_same(copy, source, item, f"the restored copy {copy.version_id} is still current")
    # The server did not say which version the copy made: prove it.
    if since is None:
        return Decision(LEFT_ALONE, DELETE_COPY, "the report has no new_version_id for this copy and no scan time "
                        "to recognise it by (a JSON report records the scan time); nothing removed")
    written_since = [e for e in history.data_versions if e.last_modified >= since and e.version_id != item.version_id]
    looks_like_copy = not current.is_delete_marker and current.version_id != item.version_id and (
        source is None or same_listing_bytes(current, source) is not False)
    if not looks_like_copy:
        if not written_since:
            return Decision(ALREADY_UNDONE, DELETE_COPY, "no version written since the scan remains (current entry "
                            f"{_describe(current)})")
        return Decision(LEFT_ALONE, DELETE_COPY, f"the current entry {_describe(current)} is not a copy of "
                        f"{item.version_id}; {len(written_since)} version(s) written since the scan stay")
    if [e.version_id for e in written_since] != [current.version_id]:
        why = ("it was written before the scan, as far as the timestamps show" if current not in written_since
               else f"{len(written_since)} versions were written since the scan, so which one the restore made "
                    "is not provable")
        return Decision(LEFT_ALONE, DELETE_COPY, f"the report has no new_version_id and the current version "
                        f"{current.version_id} cannot be proven to be the restore's copy: {why}; nothing removed")
    return _delete_if_same(current, source, item, f"the current version {current.version_id} is the only version "
                           f"written since the scan")


def _delete_if_same(copy: VersionEntry, source: VersionEntry | None, item: RestoredKey, why: str) -> Decision:
    if source is None or source.is_delete_marker:
        return Decision(LEFT_ALONE, DELETE_COPY, f"the source version {item.version_id} is no longer listed: the "
                        f"copy {copy.version_id} may hold the only copy of those bytes; nothing removed")
    same = same_listing_bytes(copy, source)
    if same is False:
        return Decision(LEFT_ALONE, DELETE_COPY, f"{copy.version_id} has {copy.size} bytes, the source "
                        f"{source.version_id} has {source.size}: not the restore's copy; nothing removed")
    decision = Decision("undo", DELETE_COPY, f"{why} and holds the bytes of {source.version_id}",
                        target=copy.version_id)
    if same is None:
        decision.compare = (copy, source)
        decision.detail = f"{why}; equal size, ETags differ (multipart copy): bytes compared"
    return decision


# outcomes and the undo report --------------------------------------------------------------------------

@dataclass(slots=True)
class UndoOutcome:
    key: str
    restored: str  # what the restore did: undeleted | copied
    action: str
    result: str  # undone | would undo | already undone | left alone | failed
    detail: str = ""
    version_id: str = ""  # the version the restore brought back, or copied from
    new_version_id: str = ""  # copies: the version deleted (or that would be)
    marker_version_id: str = ""  # undeletes: the delete marker put back


@dataclass
class UndoResult:
    table: str
    source_report: str
    dry_run: bool
    outcomes: list[UndoOutcome] = field(default_factory=list)
    rows_not_changed: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    location: str | None = None

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def failed(self) -> list[UndoOutcome]:
        return [o for o in self.outcomes if o.result == FAILED]

    def summary(self) -> dict[str, Any]:
        """Small and free of secrets: for XCom and --json."""
        results = Counter(o.result for o in self.outcomes)
        return {
            "format": UNDO_FORMAT, "table": self.table, "source_report": self.source_report,
            "dry_run": self.dry_run, "keys": len(self.outcomes), "results": dict(sorted(results.items())),
            "undone": results.get(UNDONE, 0), "would_undo": results.get(WOULD_UNDO, 0),
            "already_undone": results.get(ALREADY_UNDONE, 0), "left_alone": results.get(LEFT_ALONE, 0),
            "failed": results.get(FAILED, 0), "rows_not_changed_by_restore": self.rows_not_changed,
            "first_left_alone": [{"key": o.key, "detail": o.detail[:300]}
                                 for o in self.outcomes if o.result == LEFT_ALONE][:5],
            "first_failures": [{"key": o.key, "detail": o.detail[:300]} for o in self.failed[:5]],
            "requests": dict(sorted(self.requests.items())), "requests_total": sum(self.requests.values()),
            "seconds": round(self.seconds, 3), "report": self.location,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(o) for o in self.outcomes]

    def render(self, *, max_rows: int = 40) -> str:
        s = self.summary()
        verb = "dry run of the undo" if self.dry_run else "undo"
        lines = [f"airflow-fuse {verb} of {self.table} from {self.source_report}",
                 f"  {len(self.outcomes)} keys the restore changed: "
                 + (", ".join(f"{k} {v}" for k, v in s["results"].items()) or "none")]
        shown = [o for o in self.outcomes if o.result != ALREADY_UNDONE] or self.outcomes
        if shown:
            width = min(max(len(o.key) for o in shown[:max_rows]), 60)
            lines.append(f"  {'key':<{width}}  {'action':<20} {'result':<14} detail")
            for o in shown[:max_rows]:
                key = o.key if len(o.key) <= width else "…" + o.key[-(width - 1):]
                lines.append(f"  {key:<{width}}  {o.action:<20} {o.result:<14} {o.detail[:200]}")
            if len(shown) > max_rows:
                lines.append(f"  … and {len(shown) - max_rows} more rows in the full undo report")
        if s["left_alone"]:
            lines.append(f"  {s['left_alone']} keys left alone: they changed since the restore, or the restore's "
                         "part in them cannot be proven; see each key's detail")
        if s["failed"]:
            lines.append(f"  FAILED: {s['failed']} keys; running the undo again is safe")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"format": UNDO_FORMAT, "summary": self.summary(), "rows": self.rows()}, indent=1,
                          default=str)

    def to_parquet(self) -> bytes:
        schema = pa.schema([(name, pa.string()) for name in UndoOutcome.__slots__],
                           metadata={"airflow_fuse.undo_report": json.dumps(self.summary(), default=str)})
        table = pa.Table.from_pylist(self.rows(), schema=schema)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    def save(self, uri: str, *, client: Any = None, table: TableLocation | None = None) -> str:
        self.location = uri
        data = self.to_parquet() if uri.endswith(".parquet") else self.to_json().encode()
        return write_document(uri, data, client=client, table=table)


# the undo itself ---------------------------------------------------------------------------------------

def require_versioning_enabled(client: Any, location: TableLocation, *, conn_id: str | None = None) -> None:
    try:
        status = get_versioning_status(client, location.bucket)
    except Exception as exc:
        raise explain(exc, bucket=location.bucket, client=client, conn_id=conn_id,
                      action="read the versioning status of") from None
    if status != "Enabled":
        raise PreconditionError(
            f"versioning of bucket {location.bucket!r} is {status}: undo writes delete markers and deletes "
            "versions only while versioning is Enabled (otherwise a marker becomes a 'null' version that can "
            f"replace data); nothing was changed. {ENABLE_HINT.format(bucket=location.bucket)}")


def streams_equal(client: Any, bucket: str, key: str, a: str, b: str, *, chunk: int = COMPARE_CHUNK) -> bool:
    """Read versions ``a`` and ``b`` of ``key`` side by side; False at the first differing chunk."""
    body_a = client.get_object(Bucket=bucket, Key=key, VersionId=a)["Body"]
    body_b = client.get_object(Bucket=bucket, Key=key, VersionId=b)["Body"]
    try:
        while True:
            left, right = _read_full(body_a, chunk), _read_full(body_b, chunk)
            if left != right:
                return False
            if not left:
                return True
    finally:
        body_a.close()
        body_b.close()


def _read_full(body: Any, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        part = body.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


@dataclass
class _Pending:
    item: RestoredKey
    decision: Decision


class Undoer:
    """Undo one restore report against the bucket, with a bounded pool for DeleteObjects and byte comparisons."""

    def __init__(self, client: Any, report: RestoreReport, *, max_workers: int = 16,
                 on_page: Callable[[int], None] | None = None) -> None:
        if not 1 <= int(max_workers) <= 256:
            raise BadInputError(f"max_workers={max_workers} must be between 1 and 256")
        self.client = client
        self.report = report
        self.max_workers = int(max_workers)
        self.on_page = on_page
        self.since = None if report.listed_at is None else report.listed_at - CLOCK_MARGIN

    def run(self, *, dry_run: bool = False) -> UndoResult:
        location = self.report.location
        result = UndoResult(table=location.uri, source_report=self.report.source, dry_run=dry_run,
                            rows_not_changed=self.report.rows_not_changed)
        if not self.report.keys:
            return result
        pending: list[_Pending] = []
        for item, history in self._histories():
            decision = (decide_undelete(item, history) if item.result == "undeleted"
                        else decide_copy(item, history, self.since))
            if decision.result == "undo":
                pending.append(_Pending(item, decision))
            else:
                result.outcomes.append(self._outcome(item, decision, decision.result))
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="fuse-undo") as pool:
            to_compare = [p for p in pending if p.decision.compare is not None]
            refused = set()
            for p, outcome in zip(to_compare, pool.map(self._compare, to_compare), strict=True):
                if outcome is not None:
                    result.outcomes.append(outcome)
                    refused.add(p.item.key)
            pending = [p for p in pending if p.item.key not in refused]
            if dry_run:
                result.outcomes += [self._outcome(p.item, p.decision, WOULD_UNDO) for p in pending]
            else:
                batches = [pending[i:i + DELETE_BATCH] for i in range(0, len(pending), DELETE_BATCH)]
                done: list[UndoOutcome] = [o for batch in pool.map(self._delete_batch, batches) for o in batch]
                marked = {o.key: o for o in done if o.result == UNDONE and o.action == PUT_MARKER}
                if marked:
                    self._confirm_markers(marked)
                result.outcomes += done
        result.outcomes.sort(key=lambda o: o.key)
        return result

    # listing -------------------------------------------------------------------------------------------
    def _histories(self) -> Iterator[tuple[RestoredKey, KeyHistory | None]]:
        """Each key of the report with its history from a fresh listing, as the pages come back."""
        by_key = {item.key: item for item in self.report.keys}
        for history in self._listing(by_key):
            item = by_key.pop(history.key, None)
            if item is not None:
                yield item, history
        for item in by_key.values():
            yield item, None

    def _listing(self, wanted: Iterable[str]) -> Iterator[KeyHistory]:
        location = self.report.location
        keys = set(wanted)
        try:
            for history in iter_histories(iter_object_versions(self.client, location.bucket, location.prefix,
                                                               on_page=self.on_page)):
                if history.key in keys:
                    yield history
        except ClientError as exc:
            raise explain(exc, bucket=location.bucket, client=self.client,
                          action=f"list the versions under {location.prefix!r} in") from None

    # S3 work -------------------------------------------------------------------------------------------
    @staticmethod
    def _outcome(item: RestoredKey, decision: Decision, result: str, detail: str | None = None) -> UndoOutcome:
        return UndoOutcome(key=item.key, restored=item.result, action=decision.action, result=result,
                           detail=decision.detail if detail is None else detail, version_id=item.version_id,
                           new_version_id=decision.target if decision.action == DELETE_COPY else "")

    def _compare(self, pending: _Pending) -> UndoOutcome | None:
        """None when the copy holds the source's bytes; else the outcome that leaves the key alone."""
        assert pending.decision.compare is not None
        copy, source = pending.decision.compare
        try:
            if streams_equal(self.client, self.report.location.bucket, pending.item.key, copy.version_id,
                             source.version_id):
                return None
        except ClientError as exc:
            return self._outcome(pending.item, pending.decision, FAILED,
                                 f"could not read versions to compare their bytes: {error_code(exc)}: {exc}")
        return self._outcome(pending.item, pending.decision, LEFT_ALONE,
                             f"{copy.version_id} does not hold the bytes of {source.version_id}: not the "
                             "restore's copy; nothing removed")

    def _delete_batch(self, batch: list[_Pending]) -> list[UndoOutcome]:
        # An entry without VersionId puts a delete marker on the key; one with VersionId deletes that version.
        objects = [{"Key": p.item.key} if p.decision.action == PUT_MARKER
                   else {"Key": p.item.key, "VersionId": p.decision.target} for p in batch]
        try:
            response = self.client.delete_objects(Bucket=self.report.location.bucket,
                                                  Delete={"Objects": objects, "Quiet": False})
        except ClientError as exc:
            response = {"Errors": [{**o, "Code": error_code(exc), "Message": str(exc)} for o in objects]}
        deleted = {d.get("Key"): d for d in response.get("Deleted") or []}
        errors = {e.get("Key"): e for e in response.get("Errors") or []}
        out = []
        for p in batch:
            error = errors.get(p.item.key)
            if error is None:
                outcome = self._outcome(p.item, p.decision, UNDONE)
                if p.decision.action == PUT_MARKER:
                    outcome.marker_version_id = str((deleted.get(p.item.key) or {}).get("DeleteMarkerVersionId")
                                                    or "")
                    outcome.detail += f"; delete marker {outcome.marker_version_id or '(id not returned)'} put on top"
                else:
                    outcome.detail += f"; {p.decision.target} deleted"
                out.append(outcome)
            elif p.decision.action == DELETE_COPY and error.get("Code") in ALREADY_GONE_CODES:
                out.append(self._outcome(p.item, p.decision, ALREADY_UNDONE,
                                         f"the restored copy {p.decision.target} no longer exists"))
            else:
                out.append(self._outcome(p.item, p.decision, FAILED,
                                         f"DeleteObjects refused: {error.get('Code')}: {error.get('Message', '')} "
                                         "(undo needs s3:DeleteObject and s3:DeleteObjectVersion)"))
        return out

    def _confirm_markers(self, marked: dict[str, UndoOutcome]) -> None:
        """List again: a writer's version that slipped in under a new marker gets that marker removed again."""
        hidden: list[tuple[UndoOutcome, VersionEntry]] = []
        for history in self._listing(marked):
            outcome = marked[history.key]
            try:
                above = history.above(outcome.version_id)
            except KeyError:
                continue  # the restored version is gone (expired): nothing of ours to confirm
            if all(e.is_delete_marker for e in above):
                continue  # only markers on top of the restored version: deleted, as intended
            ids = [e.version_id for e in above]
            ours = outcome.marker_version_id
            if ours not in ids:
                if history.current.is_delete_marker:
                    outcome.result = FAILED
                    outcome.detail = ("a version was written while the undo ran and a delete marker lies on top "
                                      "of it, but the server did not say which marker the undo put: check the "
                                      "key; amend brings the writer's version back if it is hidden")
                continue
            hidden_data = [e for e in above[ids.index(ours) + 1:] if not e.is_delete_marker]
            if not hidden_data:
                continue  # written after our marker: the writer's data is on top, live
            if history.current.version_id == ours:
                hidden.append((outcome, hidden_data[0]))
            else:
                outcome.detail += (f"; {hidden_data[0].version_id} was written while the undo ran, and newer "
                                   "entries lie on top of it")
        for i in range(0, len(hidden), DELETE_BATCH):
            batch = hidden[i:i + DELETE_BATCH]
            # Only a version id the listing showed as a delete marker: the one this undo put.
            try:
                response = self.client.delete_objects(
                    Bucket=self.report.location.bucket,
                    Delete={"Objects": [{"Key": o.key, "VersionId": o.marker_version_id} for o, _ in batch],
                            "Quiet": False})
            except ClientError as exc:
                response = {"Errors": [{"Key": o.key, "Code": error_code(exc)} for o, _ in batch]}
            errors = {e.get("Key"): e for e in response.get("Errors") or []}
            for outcome, writer in batch:
                if outcome.key in errors:
                    outcome.result = FAILED
                    outcome.detail = (f"version {writer.version_id} was written while the undo ran and the marker "
                                      f"{outcome.marker_version_id} put on top hides it; removing that marker "
                                      f"failed ({errors[outcome.key].get('Code')}): run amend for this key")
                else:
                    outcome.result = LEFT_ALONE
                    outcome.detail = (f"version {writer.version_id} was written while the undo ran: the marker "
                                      "the undo put on top was removed again, the writer's data stays live")
                    outcome.marker_version_id = ""


def undo(client: Any, report: str | RestoreReport, *, dry_run: bool = False, max_workers: int = 16,
         report_uri: str | None = None, conn_id: str | None = None,
         on_page: Callable[[int], None] | None = None) -> UndoResult:
    """Load the restore report, check versioning is Enabled, undo (or say what would be undone), save the result."""
    counter = RequestCounter().attach(client)
    started = time.monotonic()
    try:
        restore_report = load_report(report, client=client) if isinstance(report, str) else report
        require_versioning_enabled(client, restore_report.location, conn_id=conn_id)
        result = Undoer(client, restore_report, max_workers=max_workers, on_page=on_page).run(dry_run=dry_run)
        result.requests = dict(counter.by_operation)
        result.seconds = time.monotonic() - started
        log.info("Undo of %s: %s", restore_report.source, result.summary()["results"])
        if report_uri:
            result.save(report_uri, client=client, table=restore_report.location)
        return result
    finally:
        counter.detach(client)
