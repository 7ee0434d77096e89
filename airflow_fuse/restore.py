"""Restore: apply a plan with server-side operations only (no data flows through the client).

Safety rules, in the order they are applied:
1. Before a key is written its current entry is checked again: by a fresh listing that streams into the
   worker pool, or (a plan made moments ago, few copies) by a HeadObject before each copy. A key whose
   current entry is no longer the one the plan saw is skipped as ``changed since scan`` (a key that
   already holds the wanted data is ``already restored``): a second run, or two at once, converge.
2. Only version ids that a listing showed as *delete markers* are ever passed to
   DeleteObjects. A version holding data is never deleted.
3. A copy writes a new version on top; every older version stays.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import KeyHistory, iter_histories
from airflow_fuse.listing import iter_object_versions
from airflow_fuse.plan import Plan, PlanItem
from airflow_fuse.s3 import error_code

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "undelete", "copy")
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 entries
MULTIPART_THRESHOLD = 5 * 1024**3  # CopyObject copies at most 5 GiB in one request
# Codes meaning "you may not remove this marker" (bucket policy, Object Lock): copy instead under auto.
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "InvalidRequest", "MethodNotAllowed", "ObjectLocked"}
ALREADY_GONE_CODES = {"NoSuchVersion", "NoSuchKey"}
RECHECKS = ("listing", "per-key", "auto")
COPIES_PER_LISTING_PAGE = 100  # fresh plans: above this many copies per page of the table, re-check by listing


@dataclass(slots=True)
class Outcome:
    """What happened to one key of the plan."""

    key: str
    result: str  # undeleted | copied | already restored | changed since scan | failed | would undelete | would copy
    action: str = ""
    version_id: str = ""
    size: int = 0
    detail: str = ""
    markers_removed: list[str] = field(default_factory=list)
    new_version_id: str = ""


@dataclass
class RestoreResult:
    strategy: str
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    relist_pages: int = 0

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "failed"]


ProgressCallback = Callable[[int, int, int], None]  # (keys done, keys total, bytes done)


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
        # Room for two listing pages of keys: the listing that feeds the pool never waits for it to drain.
        self.slots = threading.BoundedSemaphore(max(4 * max_workers, 2048))
        self.results: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self.outstanding = 0

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def _done(self, future: Future) -> None:
        self.results.put(future)
        self.slots.release()

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        self.slots.acquire()
        self.outstanding += 1
        self.pool.submit(function, *args).add_done_callback(self._done)

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


class Restorer:
    """Applies one plan with a bounded thread pool."""

    def __init__(self, client: Any, plan: Plan, *, strategy: str = "auto", max_workers: int = 16,
                 multipart_threshold: int = MULTIPART_THRESHOLD, multipart_chunksize: int = 512 * 1024**2,
                 progress: ProgressCallback | None = None) -> None:
        if strategy not in STRATEGIES:
            raise BadInputError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not 1 <= int(max_workers) <= 256:
            raise BadInputError(f"max_workers={max_workers} must be between 1 and 256")
        self.client = client
        self.plan = plan
        self.strategy = strategy
        self.max_workers = int(max_workers)
        self.transfer_config = TransferConfig(multipart_threshold=multipart_threshold,
                                              multipart_chunksize=min(multipart_chunksize, multipart_threshold),
                                              max_concurrency=4, use_threads=True)
        self.progress_callback = progress
        self.check_before_copy = False

    # public ---------------------------------------------------------------------------------------
    def dry_run(self) -> RestoreResult:
        """What a restore would do. Makes no request at all."""
        result = RestoreResult(self.strategy, dry_run=True)
        for item in self.plan.actionable():
            action = self._action_for(item)
            result.outcomes.append(Outcome(item.key, f"would {action}" if action else "failed", action,
                                           item.version_id, item.size,
                                           "" if action else self._undelete_refusal(item),
                                           markers_removed=list(item.delete_markers) if action == "undelete"
                                           else []))
        return result

    def run(self, *, recheck: str = "listing") -> RestoreResult:
        """Apply the plan.

        ``recheck="listing"`` (any plan: it may be hours old) lists the table again and sets aside every
        key whose current entry is no longer the one the plan saw. The listing streams: a key's restore
        is handed to the pool as soon as its page is back, so the second sweep overlaps the writes
        instead of coming before them. ``recheck="per-key"`` is for a plan made moments ago in the same
        call: marker removal needs no re-check (it deletes only the delete-marker version ids the scan
        listed: whatever was written since stays on top of them), and each copy is preceded by a
        HeadObject of its key. ``recheck="auto"`` (fresh plans) takes the listing when copies outnumber
        ``COPIES_PER_LISTING_PAGE`` per page of the table (one page re-checks up to 1000 keys in one
        request, and overlaps the copies), else per key.
        """
        if recheck not in RECHECKS:
            raise BadInputError(f"recheck={recheck!r} must be one of {', '.join(RECHECKS)}")
        started = time.monotonic()
        result = RestoreResult(self.strategy, dry_run=False)
        work = self.plan.actionable()
        if recheck == "auto":
            copies = sum(1 for item in work if self._action_for(item) == "copy")
            recheck = "listing" if copies > COPIES_PER_LISTING_PAGE * max(1, self.plan.listing_pages) else "per-key"
        self.check_before_copy = recheck == "per-key"
        if work:
            self._apply(work, recheck == "listing", result)
        result.seconds = time.monotonic() - started
        return result

    def _relisted(self, work: list[PlanItem], result: RestoreResult) -> Iterator[tuple[PlanItem, KeyHistory | None]]:
        """The plan's keys with their histories from a fresh listing, as the pages come back."""
        by_key = {item.key: item for item in work}

        def page(_: int) -> None:
            result.relist_pages += 1

        entries = iter_object_versions(self.client, self.plan.bucket, self.plan.prefix, on_page=page)
        for history in iter_histories(entries):
            item = by_key.pop(history.key, None)
            if item is not None:
                yield item, history
        for item in by_key.values():  # not listed any more
            yield item, None

    def _apply(self, work: list[PlanItem], relist: bool, result: RestoreResult) -> None:
        progress = _Progress(len(work), self.progress_callback)
        pipeline = _Pipeline(self.max_workers)

        def record(outcome: Outcome) -> None:
            result.outcomes.append(outcome)
            progress.add(1, outcome.size if outcome.result in ("undeleted", "copied") else 0)

        def harvest(block: bool) -> None:
            for value in pipeline.finished(block=block):
                for entry in value if isinstance(value, list) else [value]:
                    if isinstance(entry, PlanItem):  # marker removal denied: copy instead
                        pipeline.submit(self._copy, entry, "marker removal denied; copied instead")
                    else:
                        record(entry)

        batch: list[tuple[PlanItem, list[str]]] = []
        batch_markers = 0
        pairs: Iterable[tuple[PlanItem, KeyHistory | None]] = (
            self._relisted(work, result) if relist else ((item, None) for item in work))
        with pipeline:
            for item, history in pairs:
                decision = self._decide(item, history, relist)
                if isinstance(decision, Outcome):
                    record(decision)
                elif decision is None:
                    pipeline.submit(self._copy, item)
                else:
                    if batch and batch_markers + len(decision) > DELETE_BATCH:
                        pipeline.submit(self._undelete_batch, batch)
                        batch, batch_markers = [], 0
                    batch.append((item, decision))
                    batch_markers += len(decision)
                harvest(block=False)
            if batch:
                pipeline.submit(self._undelete_batch, batch)
            while pipeline.outstanding:
                harvest(block=True)

    def _decide(self, item: PlanItem, history: KeyHistory | None, relisted: bool) -> Outcome | list[str] | None:
        """What to do with one key: an outcome now, the marker ids to remove, or None for a copy."""
        if relisted:
            changed = self._recheck(item, history)
            if changed is not None:
                return changed
        action = self._action_for(item)
        if not action:
            return Outcome(item.key, "failed", item.action, item.version_id, item.size, self._undelete_refusal(item))
        if action == "copy":
            return None
        # Rule 2: only ids a listing showed as delete markers (a version id never changes kind).
        if history is None:
            return list(item.delete_markers)
        above = history.above(item.version_id)
        if above and all(e.is_delete_marker for e in above):
            return [e.version_id for e in above]
        if self.strategy == "auto":
            return None
        return Outcome(item.key, "failed", "undelete", item.version_id, item.size,
                       "the entries above the wanted version are not all delete markers any more; scan again")

    # decisions ------------------------------------------------------------------------------------
    def _action_for(self, item: PlanItem) -> str:
        if self.strategy == "copy":
            return "copy"
        if self.strategy == "undelete" and item.action != "undelete":
            return ""
        return item.action

    def _undelete_refusal(self, item: PlanItem) -> str:
        return (f"strategy 'undelete' cannot restore this key: {item.reason or 'it needs a copy'} "
                "(the wanted version is not the newest data version); use strategy 'auto' or 'copy'")

    def _recheck(self, item: PlanItem, history: KeyHistory | None) -> Outcome | None:
        if history is None:
            return Outcome(item.key, "changed since scan", item.action, item.version_id, 0,
                           "the key is no longer listed (versions removed since the scan); scan again")
        current = history.current
        if current.version_id == item.version_id or (
            not current.is_delete_marker and current.version_id != item.current_version_id
            and current.etag and current.etag == self._etag_of(history, item.version_id) and current.size == item.size
        ):
            return Outcome(item.key, "already restored", item.action, item.version_id, 0,
                           "the key already holds the wanted data")
        if current.version_id != item.current_version_id and not self._only_deleted_again(item, history):
            return Outcome(item.key, "changed since scan", item.action, item.version_id, 0,
                           f"current entry is now {current.version_id} "
                           f"({'delete marker' if current.is_delete_marker else 'data'}), "
                           f"the plan saw {item.current_version_id}; left alone, scan again")
        if item.version_id not in {e.version_id for e in history.entries}:
            return Outcome(item.key, "changed since scan", item.action, item.version_id, 0,
                           f"version {item.version_id} is no longer listed (expired?); scan again")
        return None

    @staticmethod
    def _only_deleted_again(item: PlanItem, history: KeyHistory) -> bool:
        """The plan saw a delete marker on top and only more delete markers were added since."""
        if not item.current_is_delete_marker:
            return False
        try:
            return all(e.is_delete_marker for e in history.above(item.current_version_id))
        except KeyError:
            return False

    @staticmethod
    def _etag_of(history: Any, version_id: str) -> str | None:
        return next((e.etag for e in history.entries if e.version_id == version_id), None)

    # S3 work --------------------------------------------------------------------------------------
    def _undelete_batch(self, batch: list[tuple[PlanItem, list[str]]]) -> list[Outcome | PlanItem]:
        objects = [{"Key": item.key, "VersionId": marker} for item, markers in batch for marker in markers]
        try:
            response = self.client.delete_objects(Bucket=self.plan.bucket,
                                                  Delete={"Objects": objects, "Quiet": False})
        except ClientError as exc:
            errors = {(item.key, m): (error_code(exc), str(exc)) for item, markers in batch for m in markers}
            response = {"Deleted": [], "Errors": [{"Key": k, "VersionId": v, "Code": c, "Message": msg}
                                                  for (k, v), (c, msg) in errors.items()]}
        errors_by_key: dict[str, list[dict]] = {}
        for error in response.get("Errors") or []:
            errors_by_key.setdefault(error.get("Key", ""), []).append(error)
        out: list[Outcome | PlanItem] = []
        for item, markers in batch:
            errors = [e for e in errors_by_key.get(item.key, []) if e.get("Code") not in ALREADY_GONE_CODES]
            if not errors:
                out.append(Outcome(item.key, "undeleted", "undelete", item.version_id, item.size,
                                   f"removed {len(markers)} delete marker(s)", markers_removed=markers))
                continue
            codes = sorted({str(e.get("Code")) for e in errors})
            if self.strategy == "auto" and set(codes) <= DENIED_CODES:
                out.append(item)
            else:
                hint = " (marker removal is denied by policy or Object Lock; use strategy 'auto' or 'copy')" \
                    if set(codes) <= DENIED_CODES else ""
                out.append(Outcome(item.key, "failed", "undelete", item.version_id, item.size,
                                   f"DeleteObjects refused: {', '.join(codes)}: {errors[0].get('Message', '')}{hint}"))
        return out

    def _head_check(self, item: PlanItem) -> Outcome | None:
        """Per-key re-check before a copy: is the key's current entry still the one the plan saw?"""
        try:
            head = self.client.head_object(Bucket=self.plan.bucket, Key=item.key)
        except ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
            if item.current_is_delete_marker:
                return None  # still deleted
            return Outcome(item.key, "changed since scan", "copy", item.version_id, 0,
                           "the key was deleted after the scan; left alone, scan again")
        version = str(head.get("VersionId") or "null")
        if not item.current_is_delete_marker and version == item.current_version_id:
            return None
        if item.etag and head.get("ETag", "").strip('"') == item.etag and head.get("ContentLength") == item.size:
            return Outcome(item.key, "already restored", "copy", item.version_id, 0,
                           "the key already holds the wanted data")
        return Outcome(item.key, "changed since scan", "copy", item.version_id, 0,
                       f"current version is now {version}, the plan saw {item.current_version_id}; "
                       "left alone, scan again")

    def _copy(self, item: PlanItem, note: str = "") -> Outcome:
        source = {"Bucket": self.plan.bucket, "Key": item.key, "VersionId": item.version_id}
        try:
            if self.check_before_copy:
                changed = self._head_check(item)
                if changed is not None:
                    return changed
            if item.size >= self.transfer_config.multipart_threshold:
                # boto3's managed copy: UploadPartCopy in parallel parts, each server-side.
                self.client.copy(source, self.plan.bucket, item.key, Config=self.transfer_config)
                new_version = ""
            else:
                response = self.client.copy_object(Bucket=self.plan.bucket, Key=item.key, CopySource=source)
                new_version = response.get("VersionId", "")  # Ceph does not return it
        except ClientError as exc:
            return Outcome(item.key, "failed", "copy", item.version_id, item.size,
                           f"CopyObject of version {item.version_id} failed: {error_code(exc)}: {exc}")
        except Exception as exc:  # s3transfer wraps errors of the multipart path
            return Outcome(item.key, "failed", "copy", item.version_id, item.size,
                           f"copy of version {item.version_id} failed: {exc}")
        return Outcome(item.key, "copied", "copy", item.version_id, item.size, note, new_version_id=new_version)
