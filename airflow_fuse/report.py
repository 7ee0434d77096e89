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

from airflow_fuse.documents import write_document
from airflow_fuse.errors import EXIT_ERROR, EXIT_OK, EXIT_TO_RESTORE, EXIT_UNRECOVERABLE
from airflow_fuse.plan import Plan, PlanItem, PlanRows
from airflow_fuse.restore import RestoreResult, plain_outcome

SUMMARY_LIMIT = 32 * 1024


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

    def to_json(self) -> str:
        return json.dumps({"summary": self.summary(), "plan": self.plan.meta(), "rows": self.rows()},
                          indent=1, default=str)

    def to_parquet(self) -> bytes:
        table = pa.Table.from_pylist(self.rows()).replace_schema_metadata(
            {"airflow_fuse.report": json.dumps(self.summary(), default=str)})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    def save(self, uri: str, *, client: Any = None) -> str:
        self.location = uri
        data = self.to_parquet() if uri.endswith(".parquet") else self.to_json().encode()
        return write_document(uri, data, client=client, table=self.plan.location)
