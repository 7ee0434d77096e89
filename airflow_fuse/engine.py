"""The stages end to end: precondition → inventory → layout → plan → restore → report.

Both front doors (the Airflow operators and the ``airflow-fuse`` command) call ``scan`` and ``amend``;
neither holds logic of its own. Nothing here imports Airflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_fuse import formats, versioning
from airflow_fuse.errors import BadInputError
from airflow_fuse.formats import ScanTimes
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.base import Layout
from airflow_fuse.listing import LIST_CONCURRENCY
from airflow_fuse.location import TableLocation, parse_table_uri
from airflow_fuse.memory import release_memory
from airflow_fuse.plan import (
    DEFAULT_MAX_PLAN_AGE,
    Plan,
    build_plan,
    open_plan,
    parse_max_plan_age,
    parse_plan_digest,
    save_plan,
)
from airflow_fuse.reader import S3VersionReader
from airflow_fuse.report import Report
from airflow_fuse.restore import MULTIPART_THRESHOLD, STRATEGIES, Restorer, copy_count
from airflow_fuse.s3 import RequestCounter, explain
from airflow_fuse.times import isoformat, parse_time

log = logging.getLogger(__name__)
FORMATS = formats.names()
# Listings of at least this many entries are collected (gc) as soon as the plan is made; smaller ones are simply
# dropped (their Arrow buffers go with their last reference).
RELEASE_AFTER_ENTRIES = 100_000
# A fresh plan whose listing began longer ago than this is re-checked by a new listing before its writes, as a saved
# plan is; a younger one is re-checked on the listing that made it (no second sweep).
FRESH_LISTING = timedelta(minutes=5)
# Options of the built-in formats that ScanOptions also takes as named fields (the operators' and CLI's
# parameters); every other format option goes through layout_options.
_NAMED_LAYOUT_OPTIONS = ("rollback_overwrites", "rollback_keys", "table_prefix", "snapshot_location",
                         "include_history")


@dataclass
class ScanOptions:
    """What to scan and what counts as lost. Times are aware ISO 8601 strings or datetimes.

    Format-specific options go in ``layout_options`` (see ``airflow_fuse.formats``); the named fields below
    are the built-in formats' options, kept as fields for the operators' and the CLI's parameters.
    """

    table_format: str = "auto"
    as_of: str | datetime | None = None
    deleted_since: str | datetime | None = None
    deleted_before: str | datetime | None = None
    rollback_overwrites: bool = False
    rollback_keys: list[str] = field(default_factory=list)
    allow_bucket_root: bool = False
    # fuse
    table_prefix: str | None = None
    snapshot_location: str | None = None
    include_history: bool = False
    layout_options: dict[str, Any] = field(default_factory=dict)
    # Where the table's versions come from instead of a listing: an S3 Inventory report's manifest.json, or the
    # inventory shards FuseInventoryShardOperator wrote (their locations, or the folder holding them).
    inventory_manifest: str | None = None
    inventory_shards: list[str] | str | None = None

    def listing_given(self) -> bool:
        """The versions come from an inventory made earlier, not from a listing in this call: a plan made from
        it is re-checked with a listing before anything is written."""
        return bool(self.inventory_manifest or self.inventory_shards)

    def all_layout_options(self) -> dict[str, Any]:
        """``layout_options`` with the named fields that were given."""
        out = {name: getattr(self, name) for name in _NAMED_LAYOUT_OPTIONS if getattr(self, name) not in
               (None, False, [], "")}
        out.update({k: v for k, v in (self.layout_options or {}).items() if v not in (None, "")})
        return out

    def validated(self) -> ScanTimes:
        if self.table_format != formats.AUTO:
            formats.get(self.table_format)  # refuses an unknown name, listing the known ones
        times = ScanTimes(as_of=parse_time(self.as_of, name="as_of"),
                          deleted_since=parse_time(self.deleted_since, name="deleted_since"),
                          deleted_before=parse_time(self.deleted_before, name="deleted_before", allow_future=True))
        as_of, since, before = times.as_of, times.deleted_since, times.deleted_before
        if as_of is not None and (since is not None or before is not None):
            raise BadInputError("as_of cannot be combined with deleted_since/deleted_before: use as_of to bring the "
                                "table back to a point in time, or the window to undo deletions made during it")
        if since is not None and before is not None and since >= before:
            raise BadInputError(f"deleted_since ({isoformat(since)}) must be before deleted_before "
                                f"({isoformat(before)})")
        if self.inventory_manifest and self.inventory_shards:
            raise BadInputError("give inventory_manifest (an S3 Inventory report) or inventory_shards (a sharded "
                                "listing), not both")
        if self.table_format != formats.AUTO and times.any() and not formats.get(self.table_format).time_window:
            raise BadInputError(f"as_of / deleted_since / deleted_before select keys of a prefix table; a "
                                f"{self.table_format} table is restored to its current state as its own metadata "
                                "describes it")
        return times

    def as_dict(self) -> dict[str, Any]:
        return {k: (isoformat(v) if isinstance(v, datetime) else v) for k, v in self.__dict__.items()
                if v not in (None, False, [], "", {})}


def _layout_for(table_format: str, options: ScanOptions, times: ScanTimes) -> Layout:
    fmt = formats.get(table_format)
    layout_options = options.all_layout_options()
    fmt.check_options(layout_options)
    return fmt.build(layout_options, times)


def _detect_format(inventory: Inventory, options: ScanOptions, times: ScanTimes) -> str:
    given = set(options.all_layout_options())
    if given:
        # Options name their format: the one format that accepts them all.
        candidates = [name for name in formats.names(with_auto=False) if given <= set(formats.get(name).options)]
        if len(candidates) == 1:
            return candidates[0]
    if times.any():
        return "prefix"
    return formats.detect(inventory)


def check_versioning(client: Any, location: TableLocation, *, conn_id: str | None = None,
                     for_write: bool = False) -> str:
    return versioning.check_versioning(client, location.bucket, where=location.uri, conn_id=conn_id,
                                       for_write=for_write)


def scan(client: Any, table: str, options: ScanOptions | None = None, *, conn_id: str | None = None,
         on_page: Callable[[int], None] | None = None, list_concurrency: int = LIST_CONCURRENCY) -> Plan:
    """List the table prefix once (``list_concurrency`` key ranges at a time), ask the layout what the table
    needs, and plan each key."""
    return _scan(client, table, options, conn_id=conn_id, on_page=on_page, list_concurrency=list_concurrency)[0]


def _scan(client: Any, table: str, options: ScanOptions | None = None, *, conn_id: str | None = None,
          on_page: Callable[[int], None] | None = None,
          list_concurrency: int = LIST_CONCURRENCY,
          strategy: str | None = None) -> tuple[Plan, Callable[[str], Any] | None]:
    """:func:`scan`; with ``strategy`` (a fresh amend), also what its keys are re-checked on: the histories of
    the listing that made the plan (kept only when a copy needs them), or None (list again before writing)."""
    options = options or ScanOptions()
    times = options.validated()
    location = parse_table_uri(table, allow_bucket_root=options.allow_bucket_root)
    check_versioning(client, location, conn_id=conn_id)
    started = time.monotonic()
    inventory, source = _take_inventory(client, location, options, conn_id=conn_id, on_page=on_page,
                                        list_concurrency=list_concurrency)
    log.info("Listed %d keys (%d versions and delete markers) under %s in %d pages, %.1f s",
             inventory.key_count, len(inventory), location.uri, inventory.pages, time.monotonic() - started)
    table_format = options.table_format
    if table_format == "auto":
        table_format = _detect_format(inventory, options, times)
        log.info("Detected table format %r under %s", table_format, location.uri)
    layout = _layout_for(table_format, options, times)
    reader = S3VersionReader(client, location.bucket, conn_id=conn_id)
    result = layout.needed(inventory, reader)
    # The listing's rows are given back as they are planned, unless every key's history is wanted afterwards (a
    # copy of every key is re-checked on its history: strategy copy); the keys planned as copies keep theirs.
    plan = build_plan(inventory, result, table_format=table_format, options=options.as_dict(),
                      release=strategy != "copy")
    history_of = None if strategy is None else _scan_histories(plan, inventory, strategy)
    # The plan holds what it needs: the listing's columns are given back before the restore starts (unless a
    # copy's re-check holds them through history_of). A full gc pass costs in proportion to the whole process's
    # heap (an Airflow worker's is large), so it is paid only when the listing was big enough to matter.
    big = len(inventory) >= RELEASE_AFTER_ENTRIES
    del inventory, result
    release_memory(collect=big)
    plan.info["metadata_reads"] = reader.requests
    if source:
        plan.info["inventory"] = source
    return plan, history_of


def _take_inventory(client: Any, location: TableLocation, options: ScanOptions, *, conn_id: str | None,
                    on_page: Callable[[int], None] | None,
                    list_concurrency: int) -> tuple[Inventory, dict[str, Any] | None]:
    """The table's versions: from an S3 Inventory report, from inventory shards, or listed now."""
    if options.inventory_manifest:
        from airflow_fuse.s3_inventory import load_inventory

        return load_inventory(client, location, options.inventory_manifest)
    if options.inventory_shards:
        from airflow_fuse.inventory_shards import read_shards

        return read_shards(client, location, options.inventory_shards)
    try:
        return Inventory.sweep(client, location.bucket, location.prefix, on_page=on_page,
                               concurrency=list_concurrency), None
    except Exception as exc:
        raise explain(exc, bucket=location.bucket, client=client, conn_id=conn_id,
                      action=f"list the versions under {location.prefix!r} in") from None


@dataclass
class AmendOptions:
    strategy: str = "auto"
    dry_run: bool = False
    max_workers: int = 16
    multipart_threshold: int = MULTIPART_THRESHOLD
    plan_uri: str | None = None  # where the plan (the undo manifest) is saved before any change
    report_uri: str | None = None
    # Scheduled amends: restore only what a table's own metadata references. A table whose format does not
    # say what it needs (prefix) is only reported, unless the scan selected a deletion window.
    referenced_only: bool = False
    # A saved plan whose listing is older than this is refused (hours, "90m", "24h", a timedelta; None: any age).
    max_plan_age: float | str | timedelta | None = DEFAULT_MAX_PLAN_AGE
    plan_digest: str | None = None  # a saved plan is applied only if its digest is this one (the scan's plan_digest)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise BadInputError(f"strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        parse_max_plan_age(self.max_plan_age)
        parse_plan_digest(self.plan_digest)


def amend(client: Any, *, table: str | None = None, plan: str | Plan | None = None,
          scan_options: ScanOptions | None = None, options: AmendOptions | None = None,
          conn_id: str | None = None, progress: Callable[[int, int, int], None] | None = None,
          on_page: Callable[[int], None] | None = None) -> Report:
    """Scan (or load a plan), save the plan, restore, report: the one-call ``SYSTEM$FUSE_AMEND``.

    ``table`` alone scans it now; ``plan`` applies a saved plan; both apply the plan, which must be for that
    table. A saved plan is checked whole (every field, its digest, the pinned ``plan_digest``, its table,
    ``max_plan_age``) before any request.
    """
    options = options or AmendOptions()
    options.validate()
    if table is None and plan is None:
        raise BadInputError("give table= (scan it now) or plan= (apply a saved plan; with table= as well, the "
                            "plan must be for that table)")
    if plan is None and options.plan_digest is not None:
        raise BadInputError("plan_digest pins a saved plan: give the plan as well")
    counter = RequestCounter().attach(client)
    started = time.monotonic()
    try:
        plan_location = None
        history_of: Callable[[str], Any] | None = None
        # A plan made moments ago in this call is re-checked on the listing that made it (Restorer.run); a saved
        # plan, or one made from an inventory taken earlier (S3 Inventory, shards), on a fresh listing; one whose
        # listing began too long ago (a large table) on a fresh listing or per key (recheck="auto").
        fresh = plan is None and not (scan_options and scan_options.listing_given())
        if plan is None:
            assert table is not None
            the_plan, history_of = _scan(client, table, scan_options, conn_id=conn_id, on_page=on_page,
                                         strategy=options.strategy if fresh else None)
        else:
            wanted = None if table is None else parse_table_uri(
                table, allow_bucket_root=bool(scan_options and scan_options.allow_bucket_root))
            the_plan = open_plan(plan, client=client, table=wanted, max_age=parse_max_plan_age(options.max_plan_age),
                                 digest=parse_plan_digest(options.plan_digest))
            plan_location = plan if isinstance(plan, str) else None
        if options.plan_uri:
            # Written before the first change: it lists every delete marker that will be removed.
            plan_location = save_plan(the_plan, options.plan_uri, client=client)
        restorer = Restorer(client, the_plan, strategy=options.strategy, max_workers=options.max_workers,
                            multipart_threshold=options.multipart_threshold, progress=progress, conn_id=conn_id)
        recheck = "listing" if not fresh else "auto" if history_of is None else "scan"
        held_back = options.referenced_only and not _references_what_it_needs(the_plan)
        if held_back:
            log.warning("%s is a %s table: its metadata does not say which objects it needs, so a scheduled amend "
                        "only reports its deleted keys. Give the table a deletion window to restore on a schedule, "
                        "or restore it with the runbook", the_plan.location.uri, the_plan.table_format)
        result = restorer.dry_run() if options.dry_run or held_back else restorer.run(
            recheck=recheck, listed=history_of)
        report = Report(the_plan, result, requests=dict(counter.by_operation), seconds=time.monotonic() - started,
                        plan_location=plan_location, held_back=held_back)
        if options.report_uri:
            report.save(options.report_uri, client=client)
        return report
    finally:
        counter.detach(client)


def _no_listing(key: str) -> None:
    """The histories a fresh plan without copies keeps of its listing: none (marker removal needs none)."""
    return None


def _scan_histories(plan: Plan, listing: Inventory, strategy: str) -> Callable[[str], Any] | None:
    """What a fresh plan is re-checked on: its own listing (None when that began too long ago: list again)."""
    age = datetime.now(timezone.utc) - listing.listed_at
    if age > FRESH_LISTING:
        log.info("The listing of %s began %s ago: its keys are listed again before they are written",
                 plan.location.uri, age)
        return None
    if copy_count(strategy, plan.actionable_items()):
        return listing.history
    return _no_listing


def _references_what_it_needs(plan: Plan) -> bool:
    """The plan's keys come from the table's own metadata, or from a deletion window chosen for the incident."""
    if formats.get(plan.table_format).referenced:
        return True
    return bool(plan.info.get("deleted_since") or plan.info.get("deleted_before"))


def scan_report(client: Any, table: str, options: ScanOptions | None = None, *, conn_id: str | None = None,
                plan_uri: str | None = None, on_page: Callable[[int], None] | None = None) -> Report:
    """A scan only (nothing written to the table): the plan, and where it was saved."""
    counter = RequestCounter().attach(client)
    started = time.monotonic()
    try:
        plan = scan(client, table, options, conn_id=conn_id, on_page=on_page)
        location = save_plan(plan, plan_uri, client=client) if plan_uri else None
        return Report(plan, None, requests=dict(counter.by_operation), seconds=time.monotonic() - started,
                      plan_location=location)
    finally:
        counter.detach(client)
