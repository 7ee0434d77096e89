"""Report: what was found and done, per key and in total; a table for the log, a small XCom summary."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_fuse import plan_columns
from airflow_fuse.documents import write_document
from airflow_fuse.errors import EXIT_ERROR, EXIT_OK, EXIT_TO_RESTORE, EXIT_UNRECOVERABLE
from airflow_fuse.json_columns import joined_rows
from airflow_fuse.parquet import ROW_GROUP, write_parquet
from airflow_fuse.plan import PLAN_SCHEMA, Plan, PlanItem, PlanRows
from airflow_fuse.restore import RestoreResult, plain_outcome

SUMMARY_LIMIT = 32 * 1024
ROW_BATCH = 65_536  # rows of a report made into JSON text at a time


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def inventory_lines(source: Any) -> list[str]:
    """Where the versions came from when not from a listing in this run (``plan.info["inventory"]``)."""
    if not isinstance(source, dict):
        return []
    if source.get("source") == "s3-inventory":
        lines = [f"versions from the S3 Inventory {source.get('manifest')} ({source.get('format')}, created "
                 f"{source.get('created_at')}, {source.get('age_hours')} h before the scan); a restore re-checks "
                 "every key with a listing"]
    else:
        lines = [f"versions from {source.get('shards')} inventory shards listed from {source.get('listed_from')} "
                 f"to {source.get('listed_until')}; a restore re-checks every key with a listing"]
    if source.get("warning"):
        lines.append(f"WARNING: {source['warning']}")
    return lines


@dataclass
class Report:
    plan: Plan
    restore: RestoreResult | None = None
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    location: str | None = None  # where the full report was written
    plan_location: str | None = None
    held_back: bool = False  # referenced_only: a table whose metadata does not say what it needs was only reported

    # totals ---------------------------------------------------------------------------------------
    @property
    def unrecoverable(self) -> int:
        return self.plan.counts()["unrecoverable"]

    @property
    def failed(self) -> int:
        return 0 if self.restore is None else len(self.restore.failed)

    def exit_status(self) -> int:
        """The command's exit status for this report (``errors.EXIT_STATUSES``); the operators follow it."""
        if self.unrecoverable:
            return EXIT_UNRECOVERABLE
        if self.restore is not None and not self.restore.dry_run:
            return EXIT_ERROR if self.restore.not_done else EXIT_OK
        return EXIT_TO_RESTORE if self.plan.actionable_count() else EXIT_OK

    @property
    def remaining(self) -> int:
        """Keys the table needs that are still not whole after this run."""
        if self.restore is None or self.restore.dry_run:
            return self.plan.actionable_count() + self.unrecoverable
        return len(self.restore.not_done) + self.unrecoverable

    def summary(self) -> dict[str, Any]:
        """Small (well under 64 KB) and free of secrets: for XCom and --json."""
        out: dict[str, Any] = {**self.plan.summary(), "listed_at": self.plan.listed_at}
        out["tables"] = [{k: v for k, v in t.as_dict().items() if k not in ("indexes", "history", "inverted_indexes")}
                         for t in self.plan.tables[:20]]
        if self.plan.info:
            out["info"] = {k: (v[:10] if isinstance(v, list) else v) for k, v in list(self.plan.info.items())[:20]}
        if self.restore is not None:
            results = self.restore.counts()
            out["dry_run"] = self.restore.dry_run
            out["strategy"] = self.restore.strategy
            out["results"] = dict(sorted(results.items()))
            out["restored"] = results.get("undeleted", 0) + results.get("copied", 0)
            out["bytes_restored"] = self.restore.bytes_restored()
            out["failed"] = results.get("failed", 0)
            out["first_failures"] = [{"key": o.key, "result": o.result, "detail": o.detail[:300]}
                                     for o in self.restore.not_done[:5]]
        out["first_unrecoverable"] = [{"key": i.key, "reason": i.reason[:300]}
                                      for i in islice(self._items("unrecoverable"), 5)]
        if self.held_back:
            out["held_back"] = True
        out["remaining"] = self.remaining
        out["exit_status"] = self.exit_status()
        out["requests"] = dict(sorted(self.requests.items()))
        out["requests_total"] = sum(self.requests.values())
        out["seconds"] = round(self.seconds, 3)
        out["report"] = self.location
        out["plan"] = self.plan_location
        if len(json.dumps(out, default=str)) > SUMMARY_LIMIT:  # XCom rows stay small: details go to the report
            out["tables"] = out["tables"][:1]
            out.pop("info", None)
        return out

    def _items(self, status: str) -> Iterator[PlanItem]:
        """The plan's rows with this status (on the columns, for a plan held as columns)."""
        items = self.plan.items
        if isinstance(items, PlanRows):
            return iter(items.where(pc.equal(items.column("status"), status)))
        return (i for i in items if i.status == status)

    def rows(self) -> list[dict[str, Any]]:
        return list(self.iter_rows())

    def iter_rows(self, *, shown_only: bool = False) -> Iterator[dict[str, Any]]:
        """One row per plan row with its outcome, in plan order (``shown_only``: the rows that are not present)."""
        by_key = {o.key: o for o in self.restore.outcomes.objects()} if self.restore else {}
        codes = self.restore.outcomes.codes_by_row(len(self.plan.items)) if self.restore else bytearray()
        items: Iterable[PlanItem] = self.plan.items
        if shown_only:
            items = (self.plan.items.where(pc.not_equal(self.plan.items.column("status"), "present"))
                     if isinstance(self.plan.items, PlanRows) else (i for i in items if i.status != "present"))
        for item in items:
            row = getattr(item, "row", -1)
            code = codes[row] if 0 <= row < len(codes) else 0
            o = plain_outcome(code, item) if code else by_key.get(item.key)
            yield {
                "key": item.key, "kind": item.kind, "status": item.status, "action": o.action if o else item.action,
                "version_id": item.version_id, "size": item.size, "reason": item.reason,
                "result": o.result if o else "", "detail": o.detail if o else "",
                "delete_markers_removed": list(o.markers_removed) if o else [],
                "new_version_id": o.new_version_id if o else "",
            }

    # rendering ------------------------------------------------------------------------------------
    def render(self, *, max_rows: int = 40) -> str:
        s = self.summary()
        lines = [f"airflow-fuse report for {s['table']} (format {s['table_format']})"]
        for table in self.plan.tables:
            lines.append(f"  {table.line()}")
        lines.append(f"  listed {s['keys_listed']} keys / {s['versions_listed']} versions and delete markers")
        lines += [f"  {line}" for line in inventory_lines(self.plan.info.get("inventory"))]
        lines.append(f"  needed {s['needed']}: present {s['present']}, to restore {s['restore']}, "
                     f"damaged {s['damaged']}, unrecoverable {s['unrecoverable']}; skipped {s['skipped']}")
        if self.restore is not None:
            verb = "would restore" if self.restore.dry_run else "restored"
            count = self.plan.actionable_count() if self.restore.dry_run else s["restored"]
            size = self.plan.bytes_to_restore() if self.restore.dry_run else s["bytes_restored"]
            lines.append(f"  {verb} {count} objects ({human_bytes(size)}) with strategy {s['strategy']}: "
                         + ", ".join(f"{k} {v}" for k, v in s["results"].items()))
        lines.append(f"  plan digest {s['plan_digest']}" + (f", saved to {s['plan']}" if s["plan"] else ""))
        lines.append(f"  {s['requests_total']} S3 requests in {s['seconds']:.1f} s: "
                     + ", ".join(f"{k} {v}" for k, v in s["requests"].items()))
        shown = list(islice(self.iter_rows(shown_only=True), max_rows))
        more = s["needed"] + s["skipped"] - s["present"] - len(shown)
        if shown:
            # Keys are printed whole (to be copied into a command); a key longer than the column shifts its row.
            width = min(max(len(r["key"]) for r in shown[:max_rows]), 80)
            lines.append(f"  {'key':<{width}}  {'status':<13} {'action':<8} {'result':<18} reason / detail")
            for r in shown[:max_rows]:
                key = r["key"]
                lines.append(f"  {key:<{width}}  {r['status']:<13} {r['action'] or '-':<8} {r['result'] or '-':<18} "
                             f"{r['detail'] or r['reason']}")
            if more > 0:
                lines.append(f"  … and {more} more rows in the full report")
        if s["remaining"]:
            lines.append(f"  NOT WHOLE: {s['remaining']} needed objects are still missing or damaged")
        elif self.restore is not None and not self.restore.dry_run:
            lines.append("  every object the table needs is present")
        return "\n".join(lines)

    # the full report (report_uri) ----------------------------------------------------------------------
    def to_json(self) -> str:
        return self.json_bytes().decode("ascii")

    def json_bytes(self) -> bytes:
        """The report as saved in JSON: ``{"summary", "plan", "rows"}`` with ``indent=1`` (ASCII); for a plan held as
        columns, the rows' text made on the columns a batch at a time (``json_columns``), no dict per row."""
        tables = self._row_tables(ROW_BATCH)
        if tables is None:
            return json.dumps({"summary": self.summary(), "plan": self.plan.meta(), "rows": self.rows()},
                              indent=1, default=str).encode("ascii")
        head = json.dumps({"summary": self.summary(), "plan": self.plan.meta(), "rows": []}, indent=1,
                          default=str).encode("ascii")
        body = list(joined_rows(tables, "indented", level=2))
        return b"".join([head[:-len(b"[]\n}")], b"[\n", *body, b"\n ]\n}"]) if body else head

    def to_parquet(self) -> bytes:
        """The report as saved in Parquet: one row per plan row (``iter_rows``' fields) with the summary in the schema's
        metadata; for a plan held as columns made on the columns, a row group at a time (the same bytes)."""
        tables = self._row_tables(ROW_GROUP)
        if tables is None:
            table = pa.Table.from_pylist(self.rows()).replace_schema_metadata(
                {"airflow_fuse.report": json.dumps(self.summary(), default=str)})
            sink = io.BytesIO()
            pq.write_table(table, sink)
            return sink.getvalue()
        parts = list(tables)
        if not any(len(pc.list_flatten(part.column("delete_markers_removed"))) for part in parts):
            parts = [_no_markers(part) for part in parts]  # as pa.Table.from_pylist types lists of nothing
        schema = parts[0].schema.with_metadata({"airflow_fuse.report": json.dumps(self.summary(), default=str)})
        return write_parquet(schema, parts)

    def save(self, uri: str, *, client: Any = None) -> str:
        self.location = uri
        data = self.to_parquet() if uri.endswith(".parquet") else self.json_bytes()
        return write_document(uri, data, client=client, table=self.plan.location)

    def _row_tables(self, size: int) -> Iterator[pa.Table] | None:
        """``iter_rows``' rows as Arrow tables of ``size`` rows, made on the plan's columns and the outcomes' codes
        (an object only for each outcome kept as one); ``None`` for a plan held as objects or with no rows."""
        items = self.plan.items
        if not isinstance(items, PlanRows) or items.rows is not None or not len(items):
            return None
        return _report_tables(items, self.restore, size)


_EMPTY_MARKERS = pa.scalar([], pa.list_(pa.string()))


def _no_markers(table: pa.Table) -> pa.Table:
    """``delete_markers_removed`` as a list of nothing (each row's list empty)."""
    offsets = pc.fill_null(pa.nulls(table.num_rows + 1, pa.int32()), 0)
    empty = pa.ListArray.from_arrays(offsets, pa.nulls(0))
    index = table.column_names.index("delete_markers_removed")
    return table.set_column(index, pa.field("delete_markers_removed", empty.type), empty)


def _report_tables(items: PlanRows, restore: RestoreResult | None, size: int) -> Iterator[pa.Table]:
    """``Report.iter_rows`` as columns: a row's outcome is its plain code's (``plain_outcome``), else the outcome
    object of its key, else none."""
    n = len(items)
    codes = restore.outcomes.codes_by_row(n) if restore is not None else bytearray(n)
    by_key = {o.key: o for o in restore.outcomes.objects()} if restore is not None else {}
    objects = list(by_key.values())
    keys = pa.array([o.key for o in objects], pa.string())
    found = {name: pa.array([getattr(o, name) for o in objects], pa.string())
             for name in ("action", "result", "detail", "new_version_id")}
    found_markers = pa.array([list(o.markers_removed) for o in objects], pa.list_(pa.string()))
    all_codes = pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(codes)])
    plain = _plain_values(pc.unique(all_codes).to_pylist())
    for start in range(0, n, size):
        batch = plan_columns.decoded(items.table.slice(start, size), PLAN_SCHEMA)
        code = all_codes.slice(start, batch.num_rows)
        is_plain = pc.greater(code, 0)
        at = pc.index_in(batch.column("key"), value_set=keys).combine_chunks()
        markers = batch.column("delete_markers").combine_chunks()
        counts = pc.list_value_length(markers)

        def of_code(index: int, default: Any, code: pa.Array = code) -> pa.Array:
            return pa.array([plain[c][index] if c in plain else default for c in range(256)], pa.string()).take(code)

        def of_object(name: str, at: pa.Array = at) -> pa.Array:
            return pc.fill_null(found[name].take(at), "")

        details = of_object("detail")
        for c, (_, _, _, detail_of) in plain.items():  # a plain detail may count the markers removed
            has_code = pc.equal(code, c)
            if pc.any(has_code).as_py():
                wanted = pc.unique(counts.filter(has_code)).to_pylist()
                text = pa.array([detail_of(m) for m in wanted], pa.string())
                details = pc.if_else(has_code, text.take(pc.index_in(counts, value_set=pa.array(wanted, counts.type))),
                                     details)
        removes = pa.array([c in plain and plain[c][2] for c in range(256)], pa.bool_()).take(code)
        taken_markers = pc.coalesce(found_markers.take(at), _EMPTY_MARKERS)
        yield pa.table({
            "key": batch.column("key"), "kind": batch.column("kind"), "status": batch.column("status"),
            "action": pc.if_else(is_plain, of_code(1, ""),
                                 pc.coalesce(found["action"].take(at), batch.column("action").combine_chunks())),
            "version_id": batch.column("version_id"), "size": batch.column("size"), "reason": batch.column("reason"),
            "result": pc.if_else(is_plain, of_code(0, ""), of_object("result")),
            "detail": details,
            "delete_markers_removed": pc.if_else(is_plain, pc.if_else(removes, markers, _EMPTY_MARKERS),
                                                 taken_markers),
            "new_version_id": pc.if_else(is_plain, "", of_object("new_version_id")),
        })


def _plain_values(codes: list[int]) -> dict[int, tuple[str, str, bool, Any]]:
    """Per plain code: its result, action, whether the row's markers were removed, and its detail for m markers."""
    out: dict[int, tuple[str, str, bool, Any]] = {}
    for code in codes:
        if code:
            made = plain_outcome(code, PlanItem(key="", status="restore", delete_markers=["m"]))

            def detail(markers: int, code: int = code) -> str:
                return plain_outcome(code, PlanItem(key="", status="restore", delete_markers=["m"] * markers)).detail

            out[code] = (made.result, made.action, bool(made.markers_removed), detail)
    return out
