"""Shards: one plan cut into key ranges, each applied by its own worker; their reports merged into one.

A plan with hundreds of thousands of keys to restore is cut by key range into shards balanced by keys and bytes
to restore. Each shard is itself a plan (same format, same digest rules, same checks on load) holding the rows of
its range ``(after, end]`` (``None``: open), with ``info["shard"]`` naming the parent plan's digest, its range,
its number and the number of shards. The ranges cover the whole key space in key order: every row of the plan is
in exactly one shard. A restore of a shard re-checks only its range: its listing starts at ``KeyMarker=after`` and
stops at the first page past ``end`` (:func:`airflow_fuse.listing.iter_range_versions`). A shard whose rows are
not all inside its range, or whose range is not well formed, is refused before anything is written.

Shards are applied like any plan (``FuseAmendOperator(plan=…, plan_digest=…)``, ``airflow-fuse amend --plan``), so
they can run on as many workers as the executor has: ``FuseAmendOperator.partial(...).expand_kwargs(...)``. Each
shard is idempotent (it re-checks every key it writes). :func:`merge_reports` then merges the shards' reports into
one (counts, failures, exit status), which ``airflow-fuse undo --report`` reads like any restore report.

Cuts fall only right after a key that existed at the scan (a listing starts after it): moto drops the first entry
at or after a KeyMarker, which is then the marker key's own.
"""

from __future__ import annotations

import io
import json
import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_fuse.documents import read_document, write_document
from airflow_fuse.errors import EXIT_ERROR, EXIT_OK, EXIT_TO_RESTORE, EXIT_UNRECOVERABLE, BadInputError
from airflow_fuse.location import parse_table_uri
from airflow_fuse.parquet import read_parquet
from airflow_fuse.plan import Plan, PlanItem, PlanRows, load_plan, save_plan

SHARD_INFO = "shard"  # the key of Plan.info that makes a plan a shard
SHARDS_FORMAT = "airflow-fuse-shards/1"
DEFAULT_SHARD_KEYS = 200_000  # keys to restore per shard, when a DAG shards automatically
MAX_SHARDS = 1000
SPLIT_AGAIN = "split the plan again (airflow-fuse shard, or the DAG's shard task)"
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
# Exit statuses in the order a merged report reports them: the first any shard has.
_PRECEDENCE = (EXIT_UNRECOVERABLE, EXIT_ERROR, EXIT_TO_RESTORE, EXIT_OK)


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys ``k`` with ``after < k <= end`` (``None``: open on that side), in S3's key order."""

    after: str | None = None
    end: str | None = None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self.after is None or key > self.after) and (
            self.end is None or key <= self.end)

    def describe(self, prefix: str = "") -> str:
        def short(key: str) -> str:
            rest = key[len(prefix):] if key.startswith(prefix) else key
            return rest if len(rest) <= 40 else "…" + rest[-39:]

        low = "the start" if self.after is None else f"after {short(self.after)}"
        high = "the end" if self.end is None else f"{short(self.end)}"
        return f"{low} … {high}"


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """What a shard says about itself (``Plan.info["shard"]``)."""

    parent_digest: str
    index: int  # 0-based
    count: int
    range: KeyRange
    keys: int  # keys to restore in the shard
    bytes: int  # bytes to restore in the shard

    def as_dict(self) -> dict[str, Any]:
        return {"parent_digest": self.parent_digest, "index": self.index, "count": self.count,
                "after": self.range.after, "end": self.range.end, "keys": self.keys, "bytes": self.bytes}

    @property
    def name(self) -> str:
        return f"shard {self.index + 1}/{self.count}"


# a shard, read back -------------------------------------------------------------------------------------

def _refused(source: str, problem: str) -> BadInputError:
    return BadInputError(f"plan {source} is refused: it is a shard whose {problem}; {SPLIT_AGAIN}")


def shard_info(plan: Plan, *, source: str = "plan") -> ShardInfo | None:
    """The plan's shard header, checked, and every row checked to lie in its range; ``None`` for a whole plan.

    Refuses (``BadInputError``) a shard header that is not well formed, a range out of key order or outside the
    table's prefix, an index that does not match an open end, and any row outside the range.
    """
    data = plan.info.get(SHARD_INFO)
    if data is None:
        return None
    fields = ("parent_digest", "index", "count", "after", "end", "keys", "bytes")
    if not isinstance(data, dict) or set(data) != set(fields):
        raise _refused(source, f"header info.shard must be an object with the fields {', '.join(fields)}")
    digest, index, count = data["parent_digest"], data["index"], data["count"]
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise _refused(source, "parent_digest is not a sha256 digest (64 lowercase hex digits)")
    numbers = {"index": index, "count": count, "keys": data["keys"], "bytes": data["bytes"]}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _refused(source, f"{name} must be an integer >= 0, not {value!r}")
    if not 0 <= index < count:
        raise _refused(source, f"index {index} is not below its count {count}")
    after, end = data["after"], data["end"]
    for name, bound in (("after", after), ("end", end)):
        if bound is not None and (not isinstance(bound, str) or not bound.startswith(plan.prefix)):
            raise _refused(source, f"range {name} must be a key of the table {plan.location.uri} or null, "
                                   f"not {bound!r}")
    if (after is None) != (index == 0) or (end is None) != (index == count - 1):
        raise _refused(source, f"range ({after!r}, {end!r}] does not match its place {index + 1} of {count} (the "
                               "first shard starts at the table's first key, the last ends at its last)")
    if after is not None and end is not None and not after < end:
        raise _refused(source, f"range ({after!r}, {end!r}] is empty or out of key order")
    key_range = KeyRange(after, end)
    if isinstance(plan.items, PlanRows) and _rows_inside(plan.items, key_range):
        return ShardInfo(digest, index, count, key_range, data["keys"], data["bytes"])
    for item in plan.items:
        if item.key not in key_range:
            raise _refused(source, f"row for key {item.key!r} lies outside its range ({after!r}, {end!r}]")
    return ShardInfo(digest, index, count, key_range, data["keys"], data["bytes"])


def shard_range(plan: Plan, *, source: str = "plan") -> KeyRange | None:
    """The key range a plan covers: its shard's, or ``None`` for a whole plan (the whole prefix)."""
    info = shard_info(plan, source=source)
    return None if info is None else info.range


# splitting ------------------------------------------------------------------------------------------------

def shard_count(plan: Plan, *, shard_keys: int = DEFAULT_SHARD_KEYS, max_shards: int = MAX_SHARDS) -> int:
    """How many shards a plan is cut into: one per ``shard_keys`` keys to restore (at least 1, at most
    ``max_shards``)."""
    if isinstance(shard_keys, bool) or not isinstance(shard_keys, int) or shard_keys < 1:
        raise BadInputError(f"shard_keys={shard_keys!r} must be a whole number of keys >= 1")
    if isinstance(max_shards, bool) or not isinstance(max_shards, int) or not 1 <= max_shards <= MAX_SHARDS:
        raise BadInputError(f"max_shards={max_shards!r} must be between 1 and {MAX_SHARDS}")
    return max(1, min(max_shards, math.ceil(plan.actionable_count() / shard_keys)))


def _cuts(items: list[PlanItem], shards: int) -> list[int]:
    """Positions (in key order) after which a shard ends: balanced by keys and bytes to restore.

    Each row weighs ``1/A + size/B`` when actionable (A keys and B bytes to restore in all), else 0; a shard ends at
    the first row whose running total reaches the next ``j/shards`` of the whole. A shard then weighs at most its
    share plus one row, and holds at least one key to restore.
    """
    work = [item for item in items if item.actionable]
    keys, size = len(work), sum(item.size for item in work)
    if shards <= 1 or keys <= 1:
        return []

    def weight(item: PlanItem) -> float:
        if not item.actionable:
            return 0.0
        return 1 / keys + (item.size / size if size else 0.0)

    total = sum(weight(item) for item in items)
    cuts: list[int] = []
    running = 0.0
    next_share = 1
    for position, item in enumerate(items[:-1]):
        running += weight(item)
        # A zero-weight row never reaches a share: every cut follows a key to restore (it existed at the scan).
        if item.actionable and running >= total * next_share / shards - 1e-12:
            cuts.append(position)
            while next_share < shards and running >= total * next_share / shards - 1e-12:
                next_share += 1
            if next_share >= shards:
                break
    # No shard without a key to restore: the last cut must leave work for the last shard.
    while cuts and not any(item.actionable for item in items[cuts[-1] + 1:]):
        cuts.pop()
    return cuts


def split_plan(plan: Plan, shards: int) -> list[Plan]:
    """The plan cut into at most ``shards`` shards by key range (fewer when it has fewer keys to restore).

    Every row is in exactly one shard; the shards' ranges follow each other in key order and cover every key.
    Each shard keeps the plan's header (table, listing facts, options) and adds ``info["shard"]``.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise BadInputError(f"shards={shards!r} must be between 1 and {MAX_SHARDS}")
    if shard_info(plan) is not None:
        raise BadInputError("this plan is already a shard: split the whole plan it came from instead")
    plan.validate()
    if isinstance(plan.items, PlanRows):
        return _split_rows(plan, plan.items, shards)
    items = sorted(plan.items, key=lambda item: item.key)
    cuts = _cuts(items, shards)
    bounds = [-1, *cuts, len(items) - 1]
    count = len(bounds) - 1
    parent = plan.digest
    out: list[Plan] = []
    for index in range(count):
        rows = items[bounds[index] + 1: bounds[index + 1] + 1]
        after = None if index == 0 else items[bounds[index]].key
        end = None if index == count - 1 else items[bounds[index + 1]].key
        work = [item for item in rows if item.actionable]
        info = ShardInfo(parent, index, count, KeyRange(after, end), len(work), sum(item.size for item in work))
        out.append(_shard_plan(plan, rows, info))
    return out


def _shard_plan(plan: Plan, rows: Sequence[PlanItem], info: ShardInfo) -> Plan:
    """A shard: ``rows`` of ``plan``, with its header (table, listing facts, options) and ``info["shard"]``."""
    return Plan(bucket=plan.bucket, prefix=plan.prefix, table_format=plan.table_format, items=rows,
                created_at=plan.created_at, listed_at=plan.listed_at, options=dict(plan.options),
                info={**plan.info, SHARD_INFO: info.as_dict()}, tables=list(plan.tables),
                keys_listed=plan.keys_listed, versions_listed=plan.versions_listed,
                listing_pages=plan.listing_pages)


def _rows_inside(rows: PlanRows, key_range: KeyRange) -> bool:
    """Is every row's key inside the range? (on the key column: Arrow compares UTF-8 bytes, in code point order as
    Python compares strings)"""
    keys = rows.column("key")
    if key_range.after is not None and pc.all(pc.greater(keys, key_range.after)).as_py() is False:
        return False
    return key_range.end is None or pc.all(pc.less_equal(keys, key_range.end)).as_py() is not False


class _Running(Sequence[float]):
    """The running weight at each position (a float64 column), for ``bisect``."""

    def __init__(self, values: pa.Array) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> Any:
        return self.values[index].as_py()


def _column_cuts(actionable: pa.Array, sizes: pa.Array, shards: int) -> list[int] | None:
    """``_cuts`` on the columns (in key order): the same positions, the same float arithmetic (each weight
    ``1/A + size/B``, the running total summed in order); ``None`` when the bytes exceed what a float holds exactly."""
    work = sizes.filter(actionable)
    keys, size = len(work), int(pc.sum(work).as_py() or 0)
    if shards <= 1 or keys <= 1:
        return []
    if size >= 2**53:
        return None
    weights = pc.add(pc.divide(sizes.cast(pa.float64()), float(size)) if size else pc.multiply(
        sizes.cast(pa.float64()), 0.0), 1 / keys)
    weights = pc.if_else(actionable, weights, 0.0)
    total = sum(chain.from_iterable(part.to_pylist() for part in _parts(weights.filter(actionable))))
    running = _Running(pc.cumulative_sum(weights))
    n = len(weights)
    cuts: list[int] = []
    next_share = 1
    while True:
        position = bisect_left(running, total * next_share / shards - 1e-12)
        if position >= n - 1:  # no position before the last row reaches the next share
            break
        cuts.append(position)  # an actionable row: the running total grows only there
        reached = running[position]
        while next_share < shards and reached >= total * next_share / shards - 1e-12:
            next_share += 1
        if next_share >= shards:
            break
    last = pc.indices_nonzero(actionable)[-1].as_py()
    while cuts and cuts[-1] >= last:
        cuts.pop()
    return cuts


def _parts(values: pa.Array, size: int = 65_536) -> list[pa.Array]:
    return [values.slice(start, size) for start in range(0, len(values), size)]


def _split_rows(plan: Plan, rows: PlanRows, shards: int) -> list[Plan]:
    """``split_plan`` for a plan held as columns: sorted, weighed and cut on the columns; each shard's rows a slice."""
    ordered = rows.table.take(pc.sort_indices(rows.table.column("key")))
    by_key = PlanRows(ordered)
    actionable = by_key.actionable_mask().combine_chunks()
    sizes = by_key.column("size").combine_chunks()
    cuts = _column_cuts(actionable, sizes, shards)
    if cuts is None:  # sizes beyond a float's exact integers: weighed row by row
        cuts = _cuts(sorted(plan.items, key=lambda item: item.key), shards)
    keys = by_key.column("key")
    bounds = [-1, *cuts, len(by_key) - 1]
    count = len(bounds) - 1
    parent = plan.digest
    out: list[Plan] = []
    for index in range(count):
        first, last = bounds[index] + 1, bounds[index + 1]
        after = None if index == 0 else keys[bounds[index]].as_py()
        end = None if index == count - 1 else keys[last].as_py()
        mask = actionable.slice(first, last - first + 1)
        work = sizes.slice(first, last - first + 1).filter(mask)
        info = ShardInfo(parent, index, count, KeyRange(after, end), len(work), int(pc.sum(work).as_py() or 0))
        out.append(_shard_plan(plan, PlanRows(ordered.slice(first, last - first + 1)), info))
    return out


def _stem(uri: str) -> str:
    for suffix in (".parquet", ".json"):
        if uri.endswith(suffix):
            return uri[: -len(suffix)]
    return uri


def shard_uri(plan_uri: str, index: int, count: int, *, suffix: str = ".parquet") -> str:
    """Where shard ``index`` (0-based) of ``count`` is saved: beside the plan, ``<plan>.shard-0001-of-0004.parquet``."""
    return f"{_stem(plan_uri)}.shard-{index + 1:04d}-of-{count:04d}{suffix}"


def manifest_uri(plan_uri: str) -> str:
    return f"{_stem(plan_uri)}.shards.json"


def save_shards(plan: Plan, plan_uri: str, shards: int, *, client: Any = None,
                report_uri: str | None = None) -> list[dict[str, Any]]:
    """Cut ``plan`` (saved at ``plan_uri``) into shards saved beside it, with a manifest (``<plan>.shards.json``).

    Returns one entry per shard, the keyword arguments of ``FuseAmendOperator`` that apply it: ``plan``,
    ``plan_digest`` and, with ``report_uri``, the shard's own ``report_uri`` beside it. A plan cut into one shard
    is applied as it is: its entry names the plan itself and nothing is written.
    """
    parts = split_plan(plan, shards)
    if len(parts) == 1:
        return [{"plan": plan_uri, "plan_digest": plan.digest, "report_uri": report_uri}]
    entries: list[dict[str, Any]] = []
    listing: list[dict[str, Any]] = []
    for part in parts:
        info = shard_info(part)
        assert info is not None
        location = save_plan(part, shard_uri(plan_uri, info.index, info.count), client=client)
        report = None if report_uri is None else shard_uri(report_uri, info.index, info.count,
                                                           suffix=".json" if report_uri.endswith(".json")
                                                           else ".parquet")
        entries.append({"plan": location, "plan_digest": part.digest, "report_uri": report})
        listing.append({**info.as_dict(), "name": info.name, "plan": location, "plan_digest": part.digest,
                        "report": report, "rows": len(part.items)})
    manifest = {"format": SHARDS_FORMAT, "table": plan.location.uri, "plan": plan_uri, "plan_digest": plan.digest,
                "shards": listing}
    write_document(manifest_uri(plan_uri), json.dumps(manifest, indent=1).encode(), client=client,
                   table=plan.location)
    return entries


def shard_label(plan: Plan) -> str | None:
    """A shard's readable name (Airflow's map index): ``shard 2/4: after _b/3f… … _b/7a… (120000 keys)``."""
    info = shard_info(plan)
    if info is None:
        return None
    return f"{info.name}: {info.range.describe(plan.prefix)} ({info.keys} keys)"


# merging the shards' reports -------------------------------------------------------------------------------

_SUMMED = ("needed", "present", "restore", "damaged", "unrecoverable", "skipped", "to_undelete", "to_copy",
           "bytes_to_restore", "restored", "bytes_restored", "failed", "remaining")


def _report_parts(data: bytes, source: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """A saved report's summary, rows and (JSON) plan header (``Report.save``: Parquet or JSON)."""
    plan_meta: dict[str, Any] = {}
    try:
        if data[:4] == b"PAR1":
            table = read_parquet(data)
            summary = json.loads((table.schema.metadata or {})[b"airflow_fuse.report"])
            rows = table.to_pylist()
        else:
            document = json.loads(data.decode("utf-8"))
            summary, rows, plan_meta = document["summary"], document["rows"], document.get("plan") or {}
    except Exception as exc:
        raise BadInputError(f"{source} is not an airflow-fuse report ({type(exc).__name__}: {exc}); run that "
                            "shard again") from None
    if not isinstance(summary, dict) or "table" not in summary or not isinstance(rows, list):
        raise BadInputError(f"{source} is not an airflow-fuse report (no summary or rows); run that shard again")
    return summary, rows, plan_meta


@dataclass
class MergedReport:
    """The shards' reports as one: a summary (as ``Report.summary``, plus ``shards``) and every row."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    plan_meta: dict[str, Any]  # a JSON shard report's plan header (undo reads the table from it)

    def exit_status(self) -> int:
        return int(self.summary["exit_status"])

    def to_parquet(self) -> bytes:
        table = pa.Table.from_pylist(self.rows).replace_schema_metadata(
            {"airflow_fuse.report": json.dumps(self.summary, default=str)})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    def to_json(self) -> str:
        return json.dumps({"summary": self.summary, "plan": self.plan_meta, "rows": self.rows}, indent=1,
                          default=str)

    def render(self) -> str:
        s = self.summary
        lines = [f"airflow-fuse report for {s['table']} merged from {s['shards']} shard(s)"
                 + (f" ({len(s['shards_not_done'])} not done: {', '.join(s['shards_not_done'])})"
                    if s["shards_not_done"] else ""),
                 f"  needed {s['needed']}: present {s['present']}, to restore {s['restore']}, damaged {s['damaged']}, "
                 f"unrecoverable {s['unrecoverable']}; skipped {s['skipped']}",
                 f"  restored {s['restored']} objects ({s['bytes_restored']} bytes): "
                 + ", ".join(f"{k} {v}" for k, v in s["results"].items()),
                 f"  {s['requests_total']} S3 requests; slowest shard {s['seconds']:.1f} s, all shards "
                 f"{s['seconds_total']:.1f} s"]
        for failure in s["first_failures"]:
            lines.append(f"  {failure['key']}: {failure['result']}: {failure['detail']}")
        if s["remaining"]:
            lines.append(f"  NOT WHOLE: {s['remaining']} needed objects are still missing or damaged")
        elif not s.get("dry_run"):
            lines.append("  every object the table needs is present")
        return "\n".join(lines)


def merge_reports(shards: list[dict[str, Any]], *, client: Any = None, plan_uri: str | None = None,
                  plan_digest: str | None = None) -> MergedReport:
    """The reports of the shards (``save_shards``'s entries: ``report_uri`` and ``plan``) merged into one.

    Counts and bytes are summed, requests summed per operation, the first failures of every shard kept; a shard
    whose report is missing (its task never finished) counts as not done, with its keys as remaining. The exit
    status is the first of unrecoverable (3), failed (1), to restore (4), ok (0) that any shard has.
    """
    if not shards:
        raise BadInputError("no shard reports to merge")
    summaries: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    plan_meta: dict[str, Any] = {}
    not_done: list[str] = []
    missing_keys = 0
    for number, shard in enumerate(shards, start=1):
        name = f"shard {number}/{len(shards)}"
        uri = shard.get("report_uri")
        if not uri:
            raise BadInputError(f"{name} ({shard.get('plan')}) saved no report (give report_uri): nothing to merge")
        try:
            summary, shard_rows, meta = _report_parts(read_document(uri, client=client, what="shard report"), uri)
        except BadInputError:
            not_done.append(f"{name} (no report at {uri}: its task did not finish)")
            missing_keys += _keys_to_restore(shard.get("plan"), client)
            continue
        plan_meta = plan_meta or meta
        summaries.append(summary)
        rows.extend(shard_rows)
        if summary.get("exit_status") == EXIT_ERROR:  # failed or changed since the scan (unrecoverable: counted)
            not_done.append(f"{name} ({len(summary.get('first_failures') or [])}+ keys not restored)")
    if not summaries:
        raise BadInputError("no shard saved a report: " + "; ".join(not_done))
    first = summaries[0]
    out: dict[str, Any] = {"table": first["table"], "table_format": first.get("table_format"),
                           "keys_listed": first.get("keys_listed"), "versions_listed": first.get("versions_listed"),
                           "listed_at": first.get("listed_at"),
                           "plan_digest": plan_digest or (first.get("info") or {}).get(SHARD_INFO, {}).get(
                               "parent_digest") or first.get("plan_digest"),
                           "plan": plan_uri, "shards": len(shards), "shards_not_done": not_done}
    for name in _SUMMED:
        out[name] = sum(int(s.get(name) or 0) for s in summaries)
    out["remaining"] += missing_keys
    results: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for s in summaries:
        results.update(s.get("results") or {})
        requests.update(s.get("requests") or {})
    out["results"] = dict(sorted(results.items()))
    out["requests"] = dict(sorted(requests.items()))
    out["requests_total"] = sum(requests.values())
    out["dry_run"] = any(bool(s.get("dry_run")) for s in summaries)
    if any(s.get("held_back") for s in summaries):
        out["held_back"] = True
    out["strategy"] = first.get("strategy")
    out["first_failures"] = [f for s in summaries for f in s.get("first_failures") or []][:5]
    out["first_unrecoverable"] = [u for s in summaries for u in s.get("first_unrecoverable") or []][:5]
    out["seconds"] = max(float(s.get("seconds") or 0) for s in summaries)  # the shards ran side by side
    out["seconds_total"] = round(sum(float(s.get("seconds") or 0) for s in summaries), 3)
    statuses = {int(s.get("exit_status", EXIT_ERROR)) for s in summaries} | ({EXIT_ERROR} if missing_keys or len(
        summaries) < len(shards) else set())
    out["exit_status"] = next((code for code in _PRECEDENCE if code in statuses), EXIT_ERROR)
    rows.sort(key=lambda row: str(row.get("key", "")))
    return MergedReport(out, rows, plan_meta)


def _keys_to_restore(plan_uri: Any, client: Any) -> int:
    """The keys a shard that saved no report had to restore (1 when its plan cannot be read either)."""
    try:
        return max(1, load_plan(str(plan_uri), client=client).actionable_count())
    except BadInputError:
        return 1


def save_merged(report: MergedReport, uri: str, *, client: Any = None) -> str:
    """Save the merged report (``.parquet`` or ``.json``); ``airflow-fuse undo --report`` reads it."""
    report.summary["report"] = uri
    data = report.to_parquet() if uri.endswith(".parquet") else report.to_json().encode()
    table = parse_table_uri(str(report.summary["table"]), allow_bucket_root=True)
    return write_document(uri, data, client=client, table=table)
