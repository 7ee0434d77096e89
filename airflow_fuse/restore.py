"""Restore: apply a plan with server-side operations only (no data flows through the client).

Safety rules, in the order they are applied:
0. Nothing is written unless the bucket's versioning is *Enabled*, checked just before the first write: while
   Suspended, a write replaces the key's ``null`` version instead of adding one.
1. Before a key is written its current entry is checked again: by a fresh listing that streams into the
   worker pool (a saved plan), or, for a plan made moments ago in the same call, on the listing that made it
   (as a bare list-then-write loop does). A key whose current entry is no longer the one the plan saw is
   skipped as ``changed since scan`` (a key that already holds the wanted data is ``already restored``): a
   second run, or two at once, converge. A version id ``null`` is never taken as an identity: ETag, size and
   LastModified are compared too. After the copies, a listing of the copied keys (range by range as their
   copies finish) finds any write that landed between that check and the copy: the copy is withdrawn.
2. Only version ids that a listing showed as *delete markers* are ever passed to DeleteObjects, and only
   the removals its answer confirms (``Deleted``) are counted. A version holding data is never deleted.
3. A copy writes a new version on top; every older version stays. Copies are never retried blindly: after
   an error or a lost response the key is looked at again, and the copy is retried only if it did not land
   (``UnconfirmedWrite``). Where the server honours them (AWS), conditional headers make a copy land only on
   the entry the plan saw.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, overload

import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import BotoCoreError, ClientError

from airflow_fuse.delete_request import write_delete_requests_fast
from airflow_fuse.delete_result import read_delete_results_fast
from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import KeyHistory, iter_histories
from airflow_fuse.listing import (
    VersionEntry,
    iter_object_versions,
    iter_range_versions,
)
from airflow_fuse.plan import Plan, PlanItem, PlanRows
from airflow_fuse.s3 import describe_error, error_code, refusal_hint
from airflow_fuse.shards import shard_range
from airflow_fuse.times import isoformat
from airflow_fuse.versioning import check_versioning

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "undelete", "copy")
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 entries
MULTIPART_THRESHOLD = 5 * 1024**3  # CopyObject copies at most 5 GiB in one request
# Codes meaning "you may not remove this marker" (bucket policy, Object Lock): copy instead under auto.
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "InvalidRequest", "MethodNotAllowed", "ObjectLocked"}
ALREADY_GONE_CODES = {"NoSuchVersion", "NoSuchKey"}
RECHECKS = ("listing", "per-key", "auto", "scan")
COPIES_PER_LISTING_PAGE = 100  # fresh plans: above this many copies per page of the table, re-check by listing
# Copied keys whose copies are checked by one listing of their key range as soon as they are all done, while later
# copies run (three entries a key after the copy: about one page of 1000 entries).
SETTLE_SEGMENT = 300
COPY_ATTEMPTS = 4  # a copy whose outcome is unknown is looked at, then tried again, at most this many times
PART_ATTEMPTS = 4
# A multipart copy carries the version it copies in this user-metadata key (x-amz-meta-airflow-fuse-copy-of): a
# second run then knows the live version already holds the wanted bytes. Single-part copies keep the source's
# metadata untouched (their ETag is the bytes' MD5, which proves it).
COPY_OF_METADATA = "airflow-fuse-copy-of"
_COPIED_HEADERS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage",
                   "Expires", "WebsiteRedirectLocation")
# Writes that add a version when they succeed: botocore must never repeat them on its own.
# CreateMultipartUpload makes no version, but a repeat after a lost answer leaves an orphan upload behind.
NON_IDEMPOTENT = ("CopyObject", "UploadPartCopy", "CreateMultipartUpload", "CompleteMultipartUpload")
# Answers after which the server may or may not have done the work (botocore would retry them).
_UNSURE_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
                 "ThrottlingException", "RequestTimeTooSkewed", "ConditionalRequestConflict"}

Result = Literal["undeleted", "copied", "already restored", "changed since scan", "failed", "would undelete",
                 "would copy"]
RESTORED: tuple[Result, ...] = ("undeleted", "copied")
NOT_DONE: tuple[Result, ...] = ("failed", "changed since scan")


@dataclass(slots=True)
class Outcome:
    """What happened to one key of the plan."""

    key: str
    result: Result
    action: str = ""
    version_id: str = ""
    size: int = 0
    detail: str = ""
    markers_removed: list[str] = field(default_factory=list)
    new_version_id: str = ""  # the version a copy created (undo deletes exactly this one)
    seen_versions: tuple[str, ...] = ()  # a copy: the key's version ids when it was re-checked (not reported)


# Outcomes that are exactly what their plan row says, kept as (row, code): (result, action), and whether the plan
# row's delete markers were the ones removed (or would be).
_PLAIN: dict[int, tuple[Result, str, bool]] = {1: ("undeleted", "undelete", True),
                                               2: ("would undelete", "undelete", True),
                                               3: ("would copy", "copy", False)}
_PLAIN_CODES = {(result, action): code for code, (result, action, _) in _PLAIN.items()}
_BATCH = 8192
_FEED_ROWS = 8192  # plan rows read from the columns at a time for plain marker removals


def _plain_detail(code: int, markers: int) -> str:
    return f"removed {markers} delete marker(s)" if code == 1 else ""


def plain_outcome(code: int, item: PlanItem) -> Outcome:
    """The outcome a plain code stands for, for its plan row."""
    result, action, removed = _PLAIN[code]
    return Outcome(item.key, result, action, item.version_id, item.size, _plain_detail(code, len(item.delete_markers)),
                   markers_removed=list(item.delete_markers) if removed else [])


class Outcomes(Sequence[Outcome]):
    """The outcomes of a restore in the order recorded, in memory that does not grow with the keys restored.

    An outcome that is exactly what its plan row says (the key was undeleted by removing the plan's delete markers,
    or would be; a copy that would be made) is kept as its plan row and a code, 5 bytes; any other (failed, changed
    since scan, copied, ...) as its ``Outcome`` object, which stays the same object (``_settle_copies`` updates
    copies in place). Iterating makes the plain ones back into ``Outcome`` objects, a batch at a time.
    """

    def __init__(self, outcomes: Iterable[Outcome] = (), plan_rows: PlanRows | None = None) -> None:
        self._codes = bytearray()  # per outcome: 0 an object, else a _PLAIN code
        self._rows = array("i")  # the plan row of each plain outcome
        self._plain_codes = bytearray()  # and its code
        self._objects: list[Outcome] = []
        self._plan = plan_rows
        for outcome in outcomes:
            self.append(outcome)

    def append(self, outcome: Outcome, item: PlanItem | None = None) -> None:
        row = getattr(item, "row", None)
        code = _PLAIN_CODES.get((outcome.result, outcome.action), 0)
        if (code and row is not None and self._plan is not None and item is not None and outcome.key == item.key
                and outcome.version_id == item.version_id and outcome.size == item.size
                and not outcome.new_version_id and not outcome.seen_versions
                and outcome.markers_removed == (item.delete_markers if _PLAIN[code][2] else [])
                and outcome.detail == _plain_detail(code, len(item.delete_markers))):
            self._codes.append(code)
            self._rows.append(row)
            self._plain_codes.append(code)
            return
        self._codes.append(0)
        self._objects.append(outcome)

    def add_plain(self, rows: Sequence[int], code: int) -> None:
        """Keep plain outcomes of this code for these plan rows (each exactly what its row says), in bulk."""
        assert self._plan is not None and code in _PLAIN
        self._codes.extend(bytes((code,)) * len(rows))
        self._rows.extend(rows)
        self._plain_codes.extend(bytes((code,)) * len(rows))

    def objects(self) -> list[Outcome]:
        """The outcomes kept as objects: every one that is not plainly what the plan said (failed, changed since
        scan, already restored, copied)."""
        return self._objects

    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter(o.result for o in self._objects)
        for code, (result, _, _) in _PLAIN.items():
            if n := self._plain_codes.count(code):
                counts[result] += n
        return counts

    def plain_rows(self, code: int) -> pa.Array:
        """The plan rows of the plain outcomes with this code."""
        codes = pa.array(self._plain_codes, pa.uint8())
        return pa.array(self._rows, pa.int32()).filter(pc.equal(codes, code))

    def codes_by_row(self, rows: int) -> bytearray:
        """Per plan row, the code of its plain outcome (0: none); ``plain_outcome(code, item)`` makes it."""
        codes = bytearray(rows)
        for row, code in zip(self._rows, self._plain_codes, strict=True):
            codes[row] = code
        return codes

    def bytes_of(self, results: tuple[str, ...]) -> int:
        """Bytes of the outcomes with these results."""
        total = sum(o.size for o in self._objects if o.result in results)
        for code, (result, _, _) in _PLAIN.items():
            if result in results and self._plan is not None and code in self._plain_codes:
                total += int(pc.sum(self._plan.column("size").take(self.plain_rows(code))).as_py() or 0)
        return total

    def __len__(self) -> int:
        return len(self._codes)

    def __iter__(self) -> Iterator[Outcome]:
        objects = iter(self._objects)
        plain = 0
        for start in range(0, len(self._codes), _BATCH):
            codes = self._codes[start:start + _BATCH]
            n_plain = len(codes) - codes.count(0)
            made = iter(self._plain(plain, n_plain))
            plain += n_plain
            for code in codes:
                yield next(objects) if code == 0 else next(made)

    def _plain(self, first: int, n: int) -> list[Outcome]:
        """The plain outcomes ``first`` to ``first + n`` (in the order recorded) as objects."""
        if not n:
            return []
        assert self._plan is not None
        rows = pa.array(self._rows[first:first + n], pa.int32())
        taken = self._plan.table.select(["key", "version_id", "size", "delete_markers"]).take(rows).to_pydict()
        return [plain_outcome(code, PlanItem(key, "restore", version_id=version_id, size=size,
                                             delete_markers=markers))
                for key, version_id, size, markers, code in zip(
                    taken["key"], taken["version_id"], taken["size"], taken["delete_markers"],
                    self._plain_codes[first:first + n], strict=True)]

    @overload
    def __getitem__(self, index: int) -> Outcome: ...

    @overload
    def __getitem__(self, index: slice) -> list[Outcome]: ...

    def __getitem__(self, index: int | slice) -> Outcome | list[Outcome]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        objects_before = self._codes.count(0, 0, index)
        if self._codes[index] == 0:
            return self._objects[objects_before]
        return self._plain(index - objects_before, 1)[0]

    def __repr__(self) -> str:
        return f"Outcomes({len(self)}: {dict(self.counts())})"


@dataclass
class RestoreResult:
    strategy: str
    dry_run: bool
    outcomes: Outcomes = field(default_factory=Outcomes)  # a list of Outcome is taken too
    seconds: float = 0.0
    relist_pages: int = 0
    started_at: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.outcomes, Outcomes):
            self.outcomes = Outcomes(self.outcomes)

    def record(self, outcome: Outcome, item: PlanItem | None = None) -> None:
        """Keep one key's outcome (``item``: its plan row, which lets a plain outcome be kept in 5 bytes)."""
        self.outcomes.append(outcome, item)

    def counts(self) -> Counter[str]:
        return self.outcomes.counts()

    def count(self, result: Result) -> int:
        return self.counts().get(result, 0)

    def bytes_restored(self) -> int:
        return self.outcomes.bytes_of(RESTORED)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.objects() if o.result == "failed"]

    @property
    def not_done(self) -> list[Outcome]:
        """Keys this run did not bring back: failed, or changed since the scan (scan again)."""
        return [o for o in self.outcomes.objects() if o.result in NOT_DONE]


@dataclass(frozen=True, slots=True)
class Step:
    """What to do with one key: record an outcome now, remove these delete markers, or copy the version."""

    kind: Literal["record", "undelete", "copy"]
    item: PlanItem
    outcome: Outcome | None = None
    markers: tuple[str, ...] = ()
    note: str = ""
    checked: bool = False  # the key's current entry was re-checked by a listing just now
    seen: tuple[str, ...] = ()  # the version ids that listing showed (what a copy may land on top of)


@dataclass(slots=True)
class _MarkerRows:
    """Plain marker removals taken straight from the plan's columns (no ``PlanItem`` per key): each key with its
    delete markers (``counts[i]`` of ``markers``, in order), its plan row and its size."""

    keys: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def extend(self, other: _MarkerRows) -> None:
        self.keys += other.keys
        self.markers += other.markers
        self.counts += other.counts
        self.rows += other.rows
        self.sizes += other.sizes

    def cut(self, limit: int) -> tuple[_MarkerRows, _MarkerRows]:
        """The first keys holding at most ``limit`` markers (at least one key), and the rest."""
        keys = markers = 0
        for count in self.counts:
            if keys and markers + count > limit:
                break
            keys, markers = keys + 1, markers + count
        head = _MarkerRows(self.keys[:keys], self.markers[:markers], self.counts[:keys], self.rows[:keys],
                           self.sizes[:keys])
        tail = _MarkerRows(self.keys[keys:], self.markers[markers:], self.counts[keys:], self.rows[keys:],
                           self.sizes[keys:])
        return head, tail

    def objects(self) -> list[dict[str, str]]:
        """DeleteObjects' ``Objects``: each marker of each key."""
        if len(self.markers) == len(self.keys):
            return [{"Key": key, "VersionId": marker} for key, marker in zip(self.keys, self.markers, strict=True)]
        return [{"Key": key, "VersionId": marker} for key, markers in self.pairs() for marker in markers]

    def pairs(self) -> Iterator[tuple[str, list[str]]]:
        """Each key with its markers."""
        if len(self.markers) == len(self.keys):  # one marker a key (the usual case)
            for key, marker in zip(self.keys, self.markers, strict=True):
                yield key, [marker]
            return
        at = 0
        for key, count in zip(self.keys, self.counts, strict=True):
            yield key, self.markers[at:at + count]
            at += count


@dataclass(slots=True)
class _Removed:
    """What a batch of ``_MarkerRows`` gives back: the plan rows undeleted exactly as planned (every marker's removal
    confirmed), their bytes, and the outcomes (or copy steps) of the other keys."""

    rows: array
    size: int
    others: list[Outcome | Step]


ProgressCallback = Callable[[int, int, int], None]  # (keys done, keys total, bytes done)


class UnconfirmedWrite(Exception):
    """A write whose outcome is unknown (an error or a lost response): look at the key before trying again."""

    def __init__(self, operation: str, cause: str) -> None:
        super().__init__(f"{operation}: {cause}")
        self.operation = operation
        self.cause = cause


def _refuse_blind_retry(response: Any = None, caught_exception: Any = None, operation: Any = None,
                        **_: Any) -> None:
    """``needs-retry`` handler for writes that add a version: raise instead of letting botocore repeat them."""
    name = getattr(operation, "name", "write")
    if caught_exception is not None:
        raise UnconfirmedWrite(name, f"{type(caught_exception).__name__}: {caught_exception}")
    if response is not None:
        http, parsed = response
        status = getattr(http, "status_code", 200) or 200
        code = ((parsed or {}).get("Error") or {}).get("Code", "")
        if status >= 500 or code in _UNSURE_CODES:
            raise UnconfirmedWrite(name, f"HTTP {status} {code}".strip())
    return None


class guard_writes:  # noqa: N801 - used as a context manager, like a function
    """While in the block, ``client`` raises :class:`UnconfirmedWrite` instead of retrying a copy or a multipart
    step. Counted per client, so concurrent restores sharing one client keep the guard until the last leaves; the
    client retries as before once every restore is done (it may be a hook's client that other code uses too)."""

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self.client = client

    def __enter__(self) -> None:
        with self._lock:
            users = getattr(self.client, "_airflow_fuse_guards", 0)
            if users == 0:
                for operation in NON_IDEMPOTENT:
                    self.client.meta.events.register(f"needs-retry.s3.{operation}", _refuse_blind_retry,
                                                     unique_id=f"airflow-fuse-no-blind-retry-{operation}")
            self.client._airflow_fuse_guards = users + 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            users = getattr(self.client, "_airflow_fuse_guards", 1) - 1
            self.client._airflow_fuse_guards = users
            if users == 0:
                for operation in NON_IDEMPOTENT:
                    self.client.meta.events.unregister(f"needs-retry.s3.{operation}",
                                                       unique_id=f"airflow-fuse-no-blind-retry-{operation}")


# pure decisions ---------------------------------------------------------------------------------------

def same_entry(entry: VersionEntry, version_id: str, is_delete_marker: bool, etag: str, size: int,
               last_modified: str) -> bool:
    """Is ``entry`` the entry described? Version ids decide, except ``null``, which is not an identity."""
    if entry.version_id != version_id or entry.is_delete_marker != is_delete_marker:
        return False
    if version_id != "null":
        return True
    return (entry.etag == etag and entry.size == size
            and (not last_modified or isoformat(entry.last_modified) == last_modified))


def holds_wanted_data(entry: VersionEntry, item: PlanItem) -> bool:
    """The entry is a data version with the wanted version's ETag and size (the wanted one, or a copy of it)."""
    return (not entry.is_delete_marker and bool(item.etag) and entry.etag == item.etag
            and entry.size == item.size)


def recheck(item: PlanItem, history: KeyHistory | None) -> Outcome | None:
    """Is the key still as the plan saw it? None: go ahead; else the outcome (already restored, changed)."""
    if history is None:
        return Outcome(item.key, "changed since scan", item.action, item.version_id, 0,
                       "the key is no longer listed (versions removed since the scan); scan again")
    current = history.current
    if same_entry(current, item.version_id, False, item.etag, item.size, item.last_modified) or (
        holds_wanted_data(current, item)
        and not same_entry(current, item.current_version_id, item.current_is_delete_marker, item.current_etag,
                           item.current_size, item.current_last_modified)
    ):
        return Outcome(item.key, "already restored", item.action, item.version_id, 0,
                       "the key already holds the wanted data")
    if not same_entry(current, item.current_version_id, item.current_is_delete_marker, item.current_etag,
                      item.current_size, item.current_last_modified):
        what = "delete marker" if current.is_delete_marker else "data"
        return Outcome(item.key, "changed since scan", item.action, item.version_id, 0,
                       f"current entry is now {current.version_id} ({what}, {isoformat(current.last_modified)}), "
                       f"the plan saw {item.current_version_id}: written or deleted since the scan; left alone, "
                       "scan again")
    if not any(same_entry(e, item.version_id, False, item.etag, item.size, item.last_modified)
               for e in history.entries):
        return Outcome(item.key, "changed since scan", item.action, item.version_id, 0,
                       f"version {item.version_id} is no longer listed (expired?); scan again")
    return None


def action_for(strategy: str, item: PlanItem) -> str:
    """The action a strategy takes for a planned key ("" when the strategy cannot restore it)."""
    if strategy == "copy":
        return "copy"
    if strategy == "undelete" and item.action != "undelete":
        return ""
    return item.action


def copy_count(strategy: str, work: Sequence[PlanItem]) -> int:
    """How many of these keys the strategy copies (on the columns for a plan held as columns)."""
    if isinstance(work, PlanRows):
        if strategy != "auto":
            return len(work) if strategy == "copy" else 0
        return int(pc.sum(pc.equal(work.column("action"), "copy")).as_py() or 0)
    return sum(1 for item in work if action_for(strategy, item) == "copy")


def undelete_refusal(item: PlanItem) -> str:
    return (f"strategy 'undelete' cannot restore this key: {item.reason or 'it needs a copy'} "
            "(the wanted version is not the newest data version); use strategy 'auto' or 'copy'")


def decide(strategy: str, item: PlanItem, history: KeyHistory | None, checked: bool) -> Step:
    """What to do with one key, given its fresh history when ``checked`` (else the plan's view)."""
    if checked:
        changed = recheck(item, history)
        if changed is not None:
            return Step("record", item, outcome=changed)
    action = action_for(strategy, item)
    if not action:
        return Step("record", item, outcome=Outcome(item.key, "failed", item.action, item.version_id, item.size,
                                                    undelete_refusal(item)))
    seen = tuple(e.version_id for e in history.entries) if checked and history is not None else ()
    if action == "copy":
        return Step("copy", item, checked=checked, seen=seen)
    # Rule 2: only ids a listing showed as delete markers (a version id never changes kind).
    if history is None or not checked:
        return Step("undelete", item, markers=tuple(item.delete_markers))
    above = history.above(item.version_id)
    if above and all(e.is_delete_marker for e in above):
        return Step("undelete", item, markers=tuple(e.version_id for e in above))
    if strategy == "auto":
        return Step("copy", item, checked=checked, seen=seen)
    return Step("record", item, outcome=Outcome(
        item.key, "failed", "undelete", item.version_id, item.size,
        "the entries above the wanted version are not all delete markers any more; scan again"))


def copy_landed(item: PlanItem, history: KeyHistory | None, *, multipart: bool) -> VersionEntry | None:
    """After an unconfirmed copy: the new current version that copy made, if it landed."""
    if history is None:
        return None
    current = history.current
    if current.is_delete_marker or current.size != item.size:
        return None
    if same_entry(current, item.current_version_id, item.current_is_delete_marker, item.current_etag,
                  item.current_size, item.current_last_modified):
        return None
    if same_entry(current, item.version_id, False, item.etag, item.size, item.last_modified):
        return None
    # A multipart copy's ETag is not the source's; its size is.
    return current if multipart or current.etag == item.etag else None


def buried_under(item: PlanItem, history: KeyHistory, new_version_id: str,
                 seen: tuple[str, ...] = ()) -> VersionEntry | None:
    """An entry that landed under the copy (a write or deletion between the re-check and the copy, on a server
    that ignores conditional headers); None when the copy sits where it should, or is no longer current.

    With the version ids the re-check listed (``seen``), any other entry under the copy landed in between: this
    holds whatever order the listing gives entries of the same second (moto's is not the true one). Without
    them, the entry right under the copy must be the one the plan saw.
    """
    ids = [e.version_id for e in history.entries]
    if new_version_id not in ids or new_version_id == "null":
        return None
    position = ids.index(new_version_id)
    if position != 0:
        return None  # written over since the copy: the newer write is current anyway
    if seen:
        return next((e for e in history.entries[1:] if e.version_id not in seen), None)
    below = history.entries[1] if len(history.entries) > 1 else None
    if below is None or same_entry(below, item.current_version_id, item.current_is_delete_marker, item.current_etag,
                                   item.current_size, item.current_last_modified):
        return None
    return below


def needs_key_listing(item: PlanItem) -> bool:
    """A key whose plan involves a ``null`` version id cannot be re-checked by version id alone."""
    return "null" in (item.version_id, item.current_version_id, *item.delete_markers)


# machinery ---------------------------------------------------------------------------------------------

def _in_key_order(work: Sequence[PlanItem]) -> Sequence[PlanItem]:
    """The work sorted by key as S3 lists keys (UTF-8 byte order, which is Python's order of str)."""
    if isinstance(work, PlanRows):
        keys = work.column("key")
        if len(keys) < 2 or pc.all(pc.less(keys.slice(0, len(keys) - 1), keys.slice(1))).as_py():
            return work
        order = pc.sort_indices(keys)
        rows = work.rows if work.rows is not None else pa.array(range(len(work)), pa.int64())
        return PlanRows(work.table.take(order), rows.take(order))
    return sorted(work, key=lambda item: item.key)


class _Progress:
    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self.bytes, self.callback = total, 0, 0, callback
        self.lock = threading.Lock()

    def add(self, keys: int, size: int) -> None:
        with self.lock:
            self.done += keys
            self.bytes += size
            if self.callback is not None:
                self.callback(self.done, self.total, self.bytes)


class _Pipeline:
    """A thread pool with a bounded number of tasks in flight and a queue of their results.

    ``submit`` blocks while the window is full (back-pressure on the listing that feeds it);
    ``finished`` hands back results in the submitting thread, so outcomes are recorded without locks.
    """

    def __init__(self, max_workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fuse-restore")
        # Listings that check finished copies: their own thread, not queued behind every copy still to make.
        self.side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse-restore-check")
        # Room for two listing pages of keys: the listing that feeds the pool never waits for it to drain.
        self.slots = threading.BoundedSemaphore(max(4 * max_workers, 2048))
        self.results: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self.outstanding = 0

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
        self.side.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def _done(self, future: Future) -> None:
        self.results.put(future)
        self.slots.release()

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        self.slots.acquire()
        self.outstanding += 1
        self.pool.submit(function, *args).add_done_callback(self._done)

    def submit_aside(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function`` on the side thread, ahead of the tasks queued in the pool; its result comes back with
        theirs."""
        self.slots.acquire()
        self.outstanding += 1
        self.side.submit(function, *args).add_done_callback(self._done)

    def finished(self, *, block: bool) -> Iterator[Any]:
        """Results of finished tasks: all that are ready (and at least one when ``block``)."""
        while self.outstanding:
            try:
                future = self.results.get(block=block)
            except queue.Empty:
                return
            self.outstanding -= 1
            block = False
            yield future.result()


@dataclass
class _Settled:
    """What a listing of copied keys' range gives back: where it stopped, and the copied keys it did not see."""

    cursor: tuple[str, str | None]  # (last key checked, its oldest listed version id): the next range starts after
    unseen: set[str]


class _Segments:
    """The copies' post-copy check, range after range in key order, each listed as soon as its copies are done.

    A segment is a run of copied keys in key order. When every copy of the next segments is done (any outcome),
    their range is listed from where the previous range's listing stopped (a key marker *and* a version id marker,
    so servers that read a key marker alone differently all agree), while later copies run. One range is listed
    at a time. Used in the submitting thread only (``Restorer._apply`` records outcomes there), so no lock.
    """

    def __init__(self, segments: list[list[str]]) -> None:
        self.of: dict[str, int] = {key: i for i, keys in enumerate(segments) for key in keys}
        self.remaining = [len(keys) for keys in segments]
        self.lasts = [keys[-1] for keys in segments]
        self.copied: dict[str, Outcome] = {}
        self.next = 0  # the first segment not yet listed
        self.cursor: tuple[str, str | None] | None = None
        self.listing = False

    def done(self, outcome: Outcome) -> None:
        """Count a key's final outcome."""
        index = self.of.pop(outcome.key, None)
        if index is None:
            return
        if outcome.result == "copied":
            self.copied[outcome.key] = outcome
        self.remaining[index] -= 1

    def ready(self) -> tuple[tuple[str, str | None] | None, str, dict[str, Outcome]] | None:
        """The next range to list (after the cursor, up to a last key, its copied outcomes), if one is ready."""
        if self.listing:
            return None
        stop = self.next
        while stop < len(self.remaining) and not self.remaining[stop]:
            stop += 1
        if stop == self.next:
            return None
        last = self.lasts[stop - 1]
        self.next = stop
        copied = {key: outcome for key, outcome in self.copied.items() if key <= last}
        for key in copied:
            del self.copied[key]
        if not copied:  # nothing was copied in these segments: nothing to look at (the next range starts later)
            return self.ready()
        self.listing = True
        return self.cursor, last, copied

    def listed(self, settled: _Settled) -> None:
        self.cursor, self.listing = settled.cursor, False


class Restorer:
    """Applies one plan with a bounded thread pool."""

    def __init__(self, client: Any, plan: Plan, *, strategy: str = "auto", max_workers: int = 16,
                 multipart_threshold: int = MULTIPART_THRESHOLD, multipart_chunksize: int = 512 * 1024**2,
                 progress: ProgressCallback | None = None, conditional_writes: bool = True,
                 conn_id: str | None = None) -> None:
        if strategy not in STRATEGIES:
            raise BadInputError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not 1 <= int(max_workers) <= 256:
            raise BadInputError(f"max_workers={max_workers} must be between 1 and 256")
        if multipart_threshold < 5 * 1024**2:
            raise BadInputError(f"multipart_threshold={multipart_threshold} must be at least 5 MiB (S3's smallest "
                                "part)")
        self.client = client
        self.plan = plan
        self.strategy = strategy
        self.max_workers = int(max_workers)
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = max(5 * 1024**2, min(multipart_chunksize, multipart_threshold))
        self.progress_callback = progress
        self.conditional_writes = conditional_writes
        self.conn_id = conn_id
        self.check_before_copy = False
        # A shard (airflow_fuse.shards) re-checks only its key range; one with a row outside it is refused here.
        self.key_range = shard_range(plan)
        self.listed: Callable[[str], KeyHistory | None] | None = None
        self._items: dict[str, PlanItem] = {}  # the plan's rows of the keys copied (found when they are checked)
        self._settled: set[str] = set()  # copied keys whose copies a listing of their range checked already

    # public ---------------------------------------------------------------------------------------
    def dry_run(self) -> RestoreResult:
        """What a restore would do. Makes no request at all."""
        result = self._result(dry_run=True)
        for item in self.plan.actionable_items():
            action = action_for(self.strategy, item)
            result.record(Outcome(item.key, f"would {action}" if action else "failed",  # type: ignore[arg-type]
                                  action, item.version_id, item.size, "" if action else undelete_refusal(item),
                                  markers_removed=list(item.delete_markers) if action == "undelete" else []), item)
        return result

    def _result(self, *, dry_run: bool) -> RestoreResult:
        rows = self.plan.items if isinstance(self.plan.items, PlanRows) else None
        return RestoreResult(self.strategy, dry_run=dry_run, outcomes=Outcomes(plan_rows=rows),
                             started_at="" if dry_run else isoformat(datetime.now(timezone.utc)) or "")

    def run(self, *, recheck: str = "listing",
            listed: Callable[[str], KeyHistory | None] | None = None) -> RestoreResult:
        """Apply the plan.

        ``recheck="listing"`` (any plan: it may be hours old) lists the table again and sets aside every
        key whose current entry is no longer the one the plan saw. The listing streams: a key's restore
        is handed to the pool as soon as its page is back, so the second sweep overlaps the writes
        instead of coming before them. ``recheck="per-key"`` is for a plan made moments ago in the same
        call: marker removal needs no re-check (it deletes only the delete-marker version ids the scan
        listed: whatever was written since stays on top of them), and each copy is preceded by a
        HeadObject of its key; keys whose plan involves a ``null`` version id are listed one by one instead.
        ``recheck="auto"`` (fresh plans) takes the listing when copies outnumber
        ``COPIES_PER_LISTING_PAGE`` per page of the table (one page re-checks up to 1000 keys in one
        request, and overlaps the copies), else per key.
        ``recheck="scan"`` is for a plan made moments ago in the same call from the listing ``listed`` (key →
        its history then): that listing is the re-check, as for a bare list-then-write loop. Marker removal
        needs none (see per-key); a copy lands on top of the version ids that listing showed, and the listing
        after the copies (``_settle_copies``) withdraws a copy under which anything else landed since.
        """
        if recheck not in RECHECKS:
            raise BadInputError(f"recheck={recheck!r} must be one of {', '.join(RECHECKS)}")
        if (recheck == "scan") != (listed is not None):
            raise BadInputError("recheck='scan' re-checks on the listing that made the plan: give listed= with it "
                                "(and only with it)")
        self.listed = listed
        self._settled = set()
        started = time.monotonic()
        result = self._result(dry_run=False)
        work = self.plan.actionable_items()
        if not work:
            return result
        self._items = {}  # filled by _copy: undelete-only plans keep no object per key
        # Rule 0, just before the first write, whatever the plan's origin.
        check_versioning(self.client, self.plan.bucket, where=self.plan.location.uri, conn_id=self.conn_id,
                         for_write=True)
        if recheck == "auto":
            recheck = "listing" if self._listing_pays(self._copies(work)) else "per-key"
        self.check_before_copy = recheck == "per-key"
        multipart_keys = self._multipart_keys(work)
        read_delete_results_fast(self.client)  # DeleteObjects answers' Deleted and Errors, read in one pass
        write_delete_requests_fast(self.client)  # and their request bodies written in one
        with guard_writes(self.client):
            self._abort_uploads(multipart_keys, "left by an earlier run that was killed")
            self._apply(work, recheck == "listing", result)
            self._settle_copies(result)
            # A CreateMultipartUpload whose answer was lost started an upload nobody will complete.
            self._abort_uploads(multipart_keys, "orphaned by a lost CreateMultipartUpload answer")
        result.seconds = time.monotonic() - started
        return result

    def _copies(self, work: Sequence[PlanItem]) -> int:
        return copy_count(self.strategy, work)

    def _multipart_keys(self, work: Sequence[PlanItem]) -> list[str]:
        """The keys this plan copies in parts (their unfinished uploads are aborted before and after)."""
        if isinstance(work, PlanRows):
            big = pc.greater_equal(work.column("size"), self.multipart_threshold)
            if self.strategy == "undelete":
                big = pc.and_(big, pc.equal(work.column("action"), "undelete"))
            return sorted(set(work.column("key").filter(big).to_pylist()))
        return sorted({item.key for item in work if item.size >= self.multipart_threshold
                       and action_for(self.strategy, item)})

    def _listing_pays(self, keys: int) -> bool:
        """Is one sweep of the table (a shard: of its key range) cheaper than one request per key? (a page answers for
        up to 1000 keys)"""
        return keys > COPIES_PER_LISTING_PAGE * max(1.0, self._listing_pages())

    def _listing_pages(self) -> float:
        """Pages of the listing a re-check takes: the plan's; a shard's share of them (its rows of the keys listed)."""
        pages = self.plan.listing_pages
        if self.key_range is not None and self.plan.keys_listed:
            return pages * min(1.0, len(self.plan.items) / self.plan.keys_listed)
        return pages

    # the loop -------------------------------------------------------------------------------------
    def _relisted(self, work: Sequence[PlanItem],
                  result: RestoreResult) -> Iterator[tuple[PlanItem, KeyHistory | None]]:
        """The plan's keys with their histories from a fresh listing, as the pages come back.

        The plan's keys, in key order, are walked alongside the listing (which S3 gives in key order): no map of
        every key is built. A key the listing passed without showing is held aside (a server that lists out of
        order still finds it there) and, if it never shows, has no history: it is not listed any more.
        """

        def page(_: int) -> None:
            result.relist_pages += 1

        items = iter(_in_key_order(work))
        pending = next(items, None)
        passed: dict[str, PlanItem] = {}
        for history in iter_histories(self._table_versions(on_page=page)):
            while pending is not None and pending.key < history.key:
                passed[pending.key] = pending
                pending = next(items, None)
            if pending is not None and pending.key == history.key:
                yield pending, history
                pending = next(items, None)
            elif history.key in passed:
                yield passed.pop(history.key), history
        while pending is not None:
            passed[pending.key] = pending
            pending = next(items, None)
        for item in passed.values():  # not listed any more
            yield item, None

    def _pairs(self, work: Sequence[PlanItem], relist: bool,
               result: RestoreResult) -> Iterable[tuple[PlanItem, KeyHistory | None, bool]]:
        if relist:
            for item, history in self._relisted(work, result):
                yield item, history, True
            return
        for item in work:
            if needs_key_listing(item):
                yield item, self.key_history(item.key), True
            elif self.listed is not None and action_for(self.strategy, item) == "copy":
                # The scan's listing, moments ago, is the copy's re-check: the version ids it showed are what the
                # copy may land on (anything else found under it afterwards landed since: the copy is withdrawn).
                yield item, self.listed(item.key), True
            else:
                yield item, None, False

    def _feed(self, work: Sequence[PlanItem], relist: bool,
              result: RestoreResult) -> Iterator[_MarkerRows | tuple[PlanItem, KeyHistory | None, bool]]:
        """``_pairs``, but a plan held as columns and not re-checked by a fresh listing gives its plain marker
        removals as ``_MarkerRows``, a chunk of rows at a time, without a ``PlanItem`` per key: rows to undelete
        whose version ids are not ``null`` (those are listed key by key) and with at most ``DELETE_BATCH`` markers.
        Exactly the rows ``decide`` would make ``Step("undelete", item, markers=item.delete_markers)`` of,
        unchecked; every other row goes through ``_pairs``."""
        if relist or not isinstance(work, PlanRows) or self.strategy == "copy":
            yield from self._pairs(work, relist, result)
            return
        for start in range(0, len(work), _FEED_ROWS):
            n = min(_FEED_ROWS, len(work) - start)
            chunk = PlanRows(work.table.slice(start, n))
            rows = work.rows.slice(start, n) if work.rows is not None else pa.array(range(start, start + n),
                                                                                     pa.int64())
            markers = chunk.column("delete_markers")
            counts = pc.list_value_length(markers)
            plain = pc.and_(pc.and_(pc.equal(chunk.column("action"), "undelete"),
                                    pc.and_(pc.not_equal(chunk.column("version_id"), "null"),
                                            pc.not_equal(chunk.column("current_version_id"), "null"))),
                            pc.and_(pc.greater_equal(counts, 1), pc.less_equal(counts, DELETE_BATCH)))
            plain = pc.fill_null(plain, False).combine_chunks()
            if pc.any(pc.equal(pc.list_flatten(markers), "null")).as_py():
                plain = pc.and_(plain, False)  # a null marker id in this chunk (rare): every row key by key
            if pc.any(plain).as_py():
                yield _MarkerRows(chunk.column("key").filter(plain).to_pylist(),
                                  pc.list_flatten(markers.filter(plain)).to_pylist(),
                                  counts.filter(plain).to_pylist(), rows.filter(plain).to_pylist(),
                                  chunk.column("size").filter(plain).to_pylist())
            others = pc.invert(plain)
            if pc.any(others).as_py():
                yield from self._pairs(PlanRows(chunk.table.filter(others), rows.filter(others)), False, result)

    def _apply(self, work: Sequence[PlanItem], relist: bool, result: RestoreResult) -> None:
        progress = _Progress(len(work), self.progress_callback)
        pipeline = _Pipeline(self.max_workers)
        in_flight: dict[str, PlanItem] = {}  # keys handed to the pool (bounded by its window), for their plan row
        segments = _Segments(self._segment_plan(work))

        def settle_next() -> None:
            ready = segments.ready()
            if ready is not None:  # every copy of a key range is done: check them while later copies run
                cursor, last, copied = ready
                self._settled.update(copied)
                pipeline.submit_aside(self._settle_range, cursor, last, copied)

        def record(outcome: Outcome, item: PlanItem | None = None) -> None:
            result.record(outcome, item if item is not None else in_flight.pop(outcome.key, None))
            progress.add(1, outcome.size if outcome.result in RESTORED else 0)
            segments.done(outcome)
            settle_next()

        # Marker removals in flight (each up to DELETE_BATCH keys): the pipeline's window counts tasks, so without
        # this bound a feed faster than the requests queues millions of keys' steps (a 5 M-key restore's RSS rose by
        # 2.7 GiB, then drained).
        batches = [0]

        def harvest(block: bool) -> None:
            for value in pipeline.finished(block=block):
                if isinstance(value, _Settled):
                    # keys the range's listing did not show (or could not list) are checked after the copies
                    self._settled.difference_update(value.unseen)
                    segments.listed(value)
                    settle_next()
                    continue
                if isinstance(value, (list, _Removed)):
                    batches[0] -= 1
                if isinstance(value, _Removed):
                    result.outcomes.add_plain(value.rows, 1)
                    progress.add(len(value.rows), value.size)
                    value = value.others
                for entry in value if isinstance(value, list) else [value]:
                    if isinstance(entry, Step):  # marker removal denied: copy instead
                        pipeline.submit(self._copy, entry)
                    else:
                        record(entry)

        def submit_batch(steps: list[Step] | _MarkerRows) -> None:
            while batches[0] >= 2 * self.max_workers:
                harvest(block=True)
            pipeline.submit(self._undelete_rows if isinstance(steps, _MarkerRows) else self._undelete_batch, steps)
            batches[0] += 1

        batch: list[Step] = []
        batch_markers = 0
        plain = _MarkerRows()  # plain marker removals waiting for a full request
        with pipeline:
            for pair in self._feed(work, relist, result):
                if isinstance(pair, _MarkerRows):
                    plain.extend(pair)
                    while len(plain.markers) >= DELETE_BATCH:
                        full, plain = plain.cut(DELETE_BATCH)
                        submit_batch(full)
                    harvest(block=False)
                    continue
                item, history, checked = pair
                step = decide(self.strategy, item, history, checked)
                if step.kind == "record":
                    assert step.outcome is not None
                    record(step.outcome, item)
                    harvest(block=False)
                    continue
                in_flight[item.key] = item
                if step.kind == "copy":
                    pipeline.submit(self._copy, step)
                else:
                    if batch and batch_markers + len(step.markers) > DELETE_BATCH:
                        submit_batch(batch)
                        batch, batch_markers = [], 0
                    batch.append(step)
                    batch_markers += len(step.markers)
                harvest(block=False)
            if batch:
                submit_batch(batch)
            while plain.keys:
                full, plain = plain.cut(DELETE_BATCH)
                submit_batch(full)
            while pipeline.outstanding:
                harvest(block=True)

    def _table_versions(self, on_page: Callable[[int], None] | None = None) -> Iterator[VersionEntry]:
        """A fresh listing of the plan's keys: the whole prefix, or only a shard's key range."""
        if self.key_range is None:
            return iter_object_versions(self.client, self.plan.bucket, self.plan.prefix, on_page=on_page)
        return iter_range_versions(self.client, self.plan.bucket, self.plan.prefix, after=self.key_range.after,
                                   end=self.key_range.end, on_page=on_page)

    def _segment_plan(self, work: Sequence[PlanItem]) -> list[list[str]]:
        """The keys to copy, ascending, in segments checked by one listing each as soon as their copies are done
        (none: too few copies for listings to pay; they are checked after all copies, key by key)."""
        if not self._listing_pays(copy_count(self.strategy, work)):
            return []
        if isinstance(work, PlanRows):  # without an object per key
            copied = work.column("key") if self.strategy == "copy" else work.column("key").filter(
                pc.equal(work.column("action"), "copy"))
            keys = sorted(copied.to_pylist())
        else:
            keys = sorted(item.key for item in work if action_for(self.strategy, item) == "copy")
        return [keys[i:i + SETTLE_SEGMENT] for i in range(0, len(keys), SETTLE_SEGMENT)]

    def _settle_range(self, cursor: tuple[str, str | None] | None, last: str,
                      copied: dict[str, Outcome]) -> _Settled:
        """``_settle_copies`` for the copied keys after ``cursor`` up to ``last``: one listing of that range, from
        a worker while later copies run. Keys it does not show are left to the check after the copies."""
        unseen = set(copied)
        at = cursor
        try:
            for history in self._range_histories(cursor, last):
                unseen.discard(history.key)
                at = (history.key, history.entries[-1].version_id)
                self._settle([history], copied)
        except (ClientError, BotoCoreError, RuntimeError) as exc:
            log.warning("Could not list the keys up to %r to check their copies (%s); they are checked after the "
                        "copies", last, exc)
        return _Settled(at or ("", None), unseen)

    def _range_histories(self, cursor: tuple[str, str | None] | None, last: str) -> Iterator[KeyHistory]:
        """The complete histories of the keys after ``cursor`` up to ``last``, listed from the cursor on."""
        if cursor is None and self.key_range is not None and self.key_range.after:
            cursor = (self.key_range.after, None)  # a shard: its range starts after this key
        after, after_version = cursor if cursor is not None and cursor[0] else (None, None)
        # Entries of keys ≤ after (the rest of the cursor's key, or a server listing the marker key again) and past
        # last are left out by the range listing.
        return iter_histories(iter_range_versions(self.client, self.plan.bucket, self.plan.prefix, after=after,
                                                  end=last, after_version=after_version))

    # looking at one key -----------------------------------------------------------------------------
    def key_history(self, key: str) -> KeyHistory | None:
        """One key's entries from a listing of just that key (None: no entry is listed)."""
        for history in iter_histories(iter_object_versions(self.client, self.plan.bucket, key, page_size=100)):
            if history.key == key:
                return history
            if history.key > key:
                break
        return None

    # marker removal ---------------------------------------------------------------------------------
    def _undelete_batch(self, batch: list[Step]) -> list[Outcome | Step]:
        objects = [{"Key": step.item.key, "VersionId": marker} for step in batch for marker in step.markers]
        return self._step_outcomes(batch, *self._remove_markers(objects))

    def _undelete_rows(self, batch: _MarkerRows) -> _Removed:
        """``_undelete_batch`` for plain marker removals: the keys whose every marker's removal is confirmed are
        counted by their plan rows; ``PlanItem`` objects are made only for the others."""
        confirmed, errors_by_key, unsure = self._remove_markers(batch.objects())
        done = array("i")
        size = 0
        others: list[int] = []
        for i, (key, markers) in enumerate(batch.pairs()):
            if key in errors_by_key or key in unsure or any((key, marker) not in confirmed for marker in markers):
                others.append(i)
            else:
                done.append(batch.rows[i])
                size += batch.sizes[i]
        if not others:
            return _Removed(done, size, [])
        plan = self.plan.items
        assert isinstance(plan, PlanRows)  # the rows are this plan's
        rows = pa.array([batch.rows[i] for i in others], pa.int64())
        steps = [Step("undelete", item, markers=tuple(item.delete_markers))
                 for item in PlanRows(plan.table.take(rows), rows)]
        return _Removed(done, size, self._step_outcomes(steps, confirmed, errors_by_key, unsure))

    def _remove_markers(self, objects: list[dict[str, str]]
                        ) -> tuple[set[tuple[str, str]], dict[str, list[dict]], set[str]]:
        """DeleteObjects of these (key, marker version id): the removals confirmed (or already gone), the errors by
        key, and the keys of requests that got no answer."""
        confirmed: set[tuple[str, str]] = set()
        errors_by_key: dict[str, list[dict]] = {}
        unsure: set[str] = set()
        # A key under more than 1000 markers spans requests: each request takes at most DELETE_BATCH entries.
        for start in range(0, len(objects), DELETE_BATCH):
            chunk = objects[start:start + DELETE_BATCH]
            try:
                response = self.client.delete_objects(Bucket=self.plan.bucket,
                                                      Delete={"Objects": chunk, "Quiet": False})
            except ClientError as exc:
                response = {"Errors": [{**o, "Code": error_code(exc), "Message": str(exc)} for o in chunk]}
            except (BotoCoreError, UnconfirmedWrite) as exc:  # no answer: look at these keys
                log.warning("DeleteObjects got no answer (%s); looking at %d keys again", exc, len(chunk))
                unsure.update(o["Key"] for o in chunk)
                continue
            for deleted in response.get("Deleted") or []:
                confirmed.add((deleted.get("Key", ""), str(deleted.get("VersionId") or "null")))
            for error in response.get("Errors") or []:
                if error.get("Code") in ALREADY_GONE_CODES:  # removed before (a concurrent run): gone is gone
                    confirmed.add((error.get("Key", ""), str(error.get("VersionId") or "null")))
                else:
                    errors_by_key.setdefault(error.get("Key", ""), []).append(error)
        return confirmed, errors_by_key, unsure

    def _step_outcomes(self, batch: list[Step], confirmed: set[tuple[str, str]], errors_by_key: dict[str, list[dict]],
                       unsure: set[str]) -> list[Outcome | Step]:
        """Each step's outcome from what its DeleteObjects requests answered (``_remove_markers``)."""
        out: list[Outcome | Step] = []
        for step in batch:
            item = step.item
            errors = errors_by_key.get(item.key, [])
            if errors:
                codes = sorted({str(e.get("Code")) for e in errors})
                if self.strategy == "auto" and set(codes) <= DENIED_CODES:
                    out.append(Step("copy", item, note="marker removal denied; copied instead"))
                    continue
                hint = (f" ({refusal_hint('DeleteObjects', codes, bucket=self.plan.bucket, key=item.key)})"
                        if set(codes) <= DENIED_CODES else "")
                out.append(Outcome(item.key, "failed", "undelete", item.version_id, item.size,
                                   f"DeleteObjects refused: {', '.join(codes)}: {errors[0].get('Message', '')}{hint}"))
                continue
            removed = [m for m in step.markers if (item.key, m) in confirmed]
            if len(removed) == len(step.markers) and item.key not in unsure:
                out.append(Outcome(item.key, "undeleted", "undelete", item.version_id, item.size,
                                   f"removed {len(removed)} delete marker(s)", markers_removed=removed))
                continue
            out.append(self._confirm_undelete(step, removed))
        return out

    def _confirm_undelete(self, step: Step, removed: list[str]) -> Outcome:
        """DeleteObjects did not confirm every marker: the key's listing says whether the version is back."""
        item = step.item
        try:
            history = self.key_history(item.key)
        except Exception as exc:  # noqa: BLE001 - reported per key
            history, why = None, f"and the key could not be listed ({type(exc).__name__})"
        else:
            why = "and the key's listing does not show the wanted version current"
        if history is not None and same_entry(history.current, item.version_id, False, item.etag, item.size,
                                              item.last_modified):
            gone = [m for m in step.markers if not any(e.version_id == m for e in history.entries)]
            return Outcome(item.key, "undeleted", "undelete", item.version_id, item.size,
                           f"removed {len(gone)} delete marker(s) (confirmed by listing)", markers_removed=gone)
        return Outcome(item.key, "failed", "undelete", item.version_id, item.size,
                       f"DeleteObjects confirmed {len(removed)} of {len(step.markers)} marker removal(s) {why}; "
                       "run again (it re-checks every key)", markers_removed=removed)

    # copies ---------------------------------------------------------------------------------------
    def _head_check(self, item: PlanItem) -> Outcome | None:
        """Per-key re-check before a copy over a live key: is its current version still the one the plan saw?"""
        try:
            head = self.client.head_object(Bucket=self.plan.bucket, Key=item.key)
        except ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
            return Outcome(item.key, "changed since scan", "copy", item.version_id, 0,
                           "the key was deleted after the scan; left alone, scan again")
        version = str(head.get("VersionId") or "null")
        etag = str(head.get("ETag", "")).strip('"')
        if not item.current_is_delete_marker and version == item.current_version_id and version != "null":
            return None
        if item.etag and etag == item.etag and head.get("ContentLength") == item.size:
            return Outcome(item.key, "already restored", "copy", item.version_id, 0,
                           "the key already holds the wanted data")
        return Outcome(item.key, "changed since scan", "copy", item.version_id, 0,
                       f"current version is now {version}, the plan saw {item.current_version_id}; "
                       "left alone, scan again")

    def _copy(self, step: Step) -> Outcome:
        item = step.item
        self._items[item.key] = item  # its copy is checked after it lands (_settle)
        multipart = item.size >= self.multipart_threshold
        seen = step.seen
        try:
            if self.check_before_copy and not step.checked:
                # A deleted key is listed (a 404 does not tell whether a newer marker was added since the scan,
                # and that is a change); a live one (damaged, rolled back) is checked with a HeadObject.
                if item.current_is_delete_marker:
                    history = self.key_history(item.key)
                    changed = recheck(item, history)
                    seen = tuple(e.version_id for e in history.entries) if history is not None else ()
                else:
                    changed = self._head_check(item)
                if changed is not None:
                    return changed
            if multipart and not item.current_is_delete_marker and self._is_our_copy(item):
                return Outcome(item.key, "already restored", "copy", item.version_id, 0,
                               "the live version is an earlier airflow-fuse copy of the wanted version")
        except (ClientError, BotoCoreError) as exc:
            why = describe_error(exc, bucket=self.plan.bucket, key=item.key) if isinstance(exc, ClientError) else exc
            return Outcome(item.key, "failed", "copy", item.version_id, item.size,
                           f"could not re-check the key before copying: {why}; run again")
        cause = ""
        conditional = self.conditional_writes
        for attempt in range(1, COPY_ATTEMPTS + 1):
            try:
                new_version = self._multipart_copy(item) if multipart else self._copy_object(item, conditional)
                return Outcome(item.key, "copied", "copy", item.version_id, item.size, step.note,
                               new_version_id=new_version, seen_versions=seen)
            except ClientError as exc:
                code = error_code(exc)
                if code not in ("PreconditionFailed", "412"):
                    return Outcome(item.key, "failed", "copy", item.version_id, item.size,
                                   f"copy of version {item.version_id}: "
                                   f"{describe_error(exc, bucket=self.plan.bucket, key=item.key)}")
                # Looked at below; if the key is as the plan saw it, the server reads the condition
                # differently: the next attempt goes without it (the listing just re-checked the key).
                cause, conditional = "the server refused the copy's precondition", False
            except (UnconfirmedWrite, BotoCoreError) as exc:
                cause = str(exc)
            # The outcome is unknown: look at the key before anything else.
            try:
                history = self.key_history(item.key)
            except Exception as exc:  # noqa: BLE001 - reported per key
                return Outcome(item.key, "failed", "copy", item.version_id, item.size,
                               f"copy not confirmed ({cause}) and the key could not be listed ({exc}); "
                               "run again (it re-checks every key)")
            landed = copy_landed(item, history, multipart=multipart)
            if landed is not None:
                return Outcome(item.key, "copied", "copy", item.version_id, item.size,
                               f"confirmed by listing after: {cause}"[:300], new_version_id=landed.version_id,
                               seen_versions=seen)
            changed = recheck(item, history)
            if changed is not None:
                return changed
            log.info("Copy of %s not done (%s); trying again (%d/%d)", item.key, cause, attempt, COPY_ATTEMPTS)
            time.sleep(min(0.1 * 2**attempt, 2.0))
        return Outcome(item.key, "failed", "copy", item.version_id, item.size,
                       f"copy not done after {COPY_ATTEMPTS} attempts: {cause}; run again (it re-checks every key)")

    @staticmethod
    def _conditions(item: PlanItem) -> dict[str, str]:
        """Destination conditions (AWS honours them; servers that ignore them rely on the re-check)."""
        if item.current_is_delete_marker:
            return {"IfNoneMatch": "*"}
        return {"IfMatch": f'"{item.current_etag}"'} if item.current_etag else {}

    def _copy_object(self, item: PlanItem, conditional: bool) -> str:
        source = {"Bucket": self.plan.bucket, "Key": item.key, "VersionId": item.version_id}
        response = self.client.copy_object(Bucket=self.plan.bucket, Key=item.key, CopySource=source,
                                           **(self._conditions(item) if conditional else {}))
        return str(response.get("VersionId") or "")  # Ceph does not return it: filled in afterwards

    def _multipart_copy(self, item: PlanItem) -> str:
        """UploadPartCopy in parts, then CompleteMultipartUpload; the upload is aborted if anything fails.

        A part copied twice replaces the first copy (no version is made before the completion), so parts are
        retried; the completion is not (an unconfirmed completion is looked at by the caller).
        """
        bucket, key = self.plan.bucket, item.key
        # UploadPartCopy copies bytes only: the object's headers and metadata come from CreateMultipartUpload.
        head = self.client.head_object(Bucket=bucket, Key=key, VersionId=item.version_id)
        headers = {name: head[name] for name in _COPIED_HEADERS if head.get(name)}
        metadata = {**(head.get("Metadata") or {}), COPY_OF_METADATA: item.version_id}
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata,
                                                        **headers)["UploadId"]
        chunk = self.multipart_chunksize
        ranges = [(start, min(item.size, start + chunk) - 1) for start in range(0, item.size, chunk)]
        source = {"Bucket": bucket, "Key": key, "VersionId": item.version_id}

        def part(number: int) -> dict[str, Any]:
            first, last = ranges[number - 1]
            for attempt in range(1, PART_ATTEMPTS + 1):
                try:
                    response = self.client.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id,
                                                            PartNumber=number, CopySource=source,
                                                            CopySourceRange=f"bytes={first}-{last}")
                    return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}
                except (UnconfirmedWrite, BotoCoreError):
                    if attempt == PART_ATTEMPTS:
                        raise
                    time.sleep(min(0.1 * 2**attempt, 2.0))
            raise AssertionError("unreachable")

        try:
            with ThreadPoolExecutor(max_workers=min(4, len(ranges)), thread_name_prefix="fuse-part") as pool:
                parts = list(pool.map(part, range(1, len(ranges) + 1)))
            response = self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                             MultipartUpload={"Parts": parts})
            return str(response.get("VersionId") or "")
        except BaseException:
            # Aborting cannot undo a completed upload; it frees the parts of one that did not complete.
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception as exc:  # noqa: BLE001 - the original error matters more
                log.warning("Could not abort the multipart upload %s of %s: %s", upload_id, key, exc)
            raise

    def _is_our_copy(self, item: PlanItem) -> bool:
        """The live version is a multipart copy airflow-fuse made of the wanted version (its ETag is no digest of
        the bytes, so a second run would otherwise copy it again)."""
        if not item.current_version_id or item.current_size != item.size:
            return False
        try:
            head = self.client.head_object(Bucket=self.plan.bucket, Key=item.key, VersionId=item.current_version_id)
        except (ClientError, BotoCoreError):
            return False
        return (head.get("Metadata") or {}).get(COPY_OF_METADATA) == item.version_id

    def _abort_uploads(self, keys: list[str], why: str) -> None:
        """Abort the unfinished multipart uploads on exactly these keys (the ones this plan copies in parts).

        An unfinished upload is parts, not a version: aborting it loses no data. Uploads are left by a run killed
        between its parts and its completion, or by a CreateMultipartUpload whose answer was lost. A writer's own
        multipart upload to a key being restored would be aborted too (its completion then fails and it retries);
        an AbortIncompleteMultipartUpload lifecycle rule is the server-side safety net.
        """
        for key in keys:
            try:
                uploads = self.client.list_multipart_uploads(Bucket=self.plan.bucket, Prefix=key).get("Uploads") or []
            except (ClientError, BotoCoreError) as exc:
                log.warning("Could not list unfinished multipart uploads of %s (%s): uploads %s, if any, stay "
                            "(an AbortIncompleteMultipartUpload lifecycle rule removes them)", key, exc, why)
                continue
            for upload in uploads:
                if upload.get("Key") != key:
                    continue
                log.info("Aborting unfinished multipart upload %s of %s (%s)", upload["UploadId"], key, why)
                try:
                    self.client.abort_multipart_upload(Bucket=self.plan.bucket, Key=key, UploadId=upload["UploadId"])
                except (ClientError, BotoCoreError) as exc:
                    log.warning("Could not abort upload %s of %s: %s", upload["UploadId"], key, exc)

    def _settle_copies(self, result: RestoreResult) -> None:
        """After the copies: record each new version id, and withdraw a copy that buried a concurrent write.

        Servers that ignore conditional headers (moto, Ceph) let a write that lands between the re-check and the
        CopyObject end up *under* the copy. The key's listing shows it: the entry below the copy is not the one the
        plan saw. The copy, a duplicate of a version that stays, is then deleted, so the write is current again and
        the key is reported ``changed since scan``. The only data version a restore ever deletes is such a
        duplicate that it made itself moments before. One listing sweep when copies are many, else one listing of
        each copied key.
        """
        copied = {o.key: o for o in result.outcomes.objects()  # copies are never plain
                  if o.result == "copied" and o.key not in self._settled}
        if not copied:
            return
        if self._listing_pays(len(copied)):
            histories: Iterable[KeyHistory] = (h for h in iter_histories(self._table_versions()) if h.key in copied)
        else:
            histories = (h for h in (self.key_history(key) for key in copied) if h is not None)
        self._settle(histories, copied)

    def _settle(self, histories: Iterable[KeyHistory], copied: dict[str, Outcome]) -> None:
        """The check of ``_settle_copies`` on these histories of copied keys (others are passed over)."""
        for history in histories:
            outcome, item = copied.get(history.key), self._items.get(history.key)
            if outcome is None or item is None:
                continue
            if not outcome.new_version_id:
                landed = copy_landed(item, history, multipart=item.size >= self.multipart_threshold)
                if landed is None:
                    continue  # written over since: the copy is history now, and not ours to judge
                outcome.new_version_id = landed.version_id
            below = buried_under(item, history, outcome.new_version_id, outcome.seen_versions)
            if below is None:
                continue
            try:
                self.client.delete_object(Bucket=self.plan.bucket, Key=item.key, VersionId=outcome.new_version_id)
            except (ClientError, BotoCoreError) as exc:
                outcome.detail = (f"a write landed during the copy and is now under it ({below.version_id}); the "
                                  f"copy could not be withdrawn ({exc}): remove version {outcome.new_version_id}")
                outcome.result = "failed"
                continue
            if holds_wanted_data(below, item):  # another restore of the same plan copied it first
                outcome.result, outcome.size = "already restored", 0
                outcome.detail = (f"a concurrent restore copied it first ({below.version_id}); this run's duplicate "
                                  "copy was withdrawn")
            else:
                outcome.result = "changed since scan"
                outcome.detail = (f"{'a deletion' if below.is_delete_marker else 'a write'} landed during the copy "
                                  f"({below.version_id}); the copy was withdrawn so it stays current; scan again")
            outcome.new_version_id = ""
