"""MkDocs hook: pages that are generated from the code, so that they cannot drift from it.

A page asks for a generated section with a marker on a line of its own, e.g. ``<!-- generated: cli -->``:

- ``cli``: every ``airflow-fuse`` subcommand's ``--help``, from ``airflow_fuse.cli.build_parser()``;
- ``exit-statuses``: ``airflow_fuse.errors.EXIT_STATUSES``;
- ``plan-meta``, ``plan-columns``: the plan file (``Plan.meta()`` and ``Plan.to_parquet()``'s schema);
- ``report-summary``, ``report-columns``: the report (``Report.summary()`` and ``Report.to_parquet()``'s schema).

A field the code has and this hook does not describe is a warning, which ``mkdocs build --strict`` turns
into a failure: describe it in the tables below. An unknown marker fails the build.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.hooks.airflow_fuse")
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)

PLAN_META = {
    "format": "always `airflow-fuse-plan/1`: a file without it is refused",
    "bucket": "the table's bucket",
    "prefix": "the table's prefix (every item's key starts with it)",
    "table_format": "`fuse`, `iceberg`, `delta` or `prefix`: the layout that decided what the table needs",
    "created_at": "when the plan was made (ISO 8601, UTC)",
    "listed_at": "when the listing sweep started; `undo` uses it to prove a copy's version",
    "options": "the scan options the plan was made with (`as_of`, `deleted_since`, `table_prefix`, …)",
    "info": "what the layout found out (Fuse: snapshots read, hint file contents; prefix: counts)",
    "tables": "Fuse: one entry per table found (root, snapshot key and where it came from, rows, blocks)",
    "keys_listed": "keys under the prefix in the listing",
    "versions_listed": "versions and delete markers in the listing",
    "listing_pages": "`ListObjectVersions` pages the sweep took",
    "digest": "sha256 over everything the plan holds (header and rows); loading a plan checks it, and "
              "`FuseAmendOperator(plan_digest=…)` / `amend --plan-digest` pin the one the scan reported",
}
PLAN_ITEM = {
    "key": "the object key",
    "status": "`present`, `restore`, `damaged`, `unrecoverable` or `skipped`",
    "kind": "what the object is to the table: Fuse `snapshot`, `segment`, `segment_stats`, `table_statistics`, "
            "`block`, `bloom_index`, `inverted_index`, `vector_index`, `spatial_index`, `hint`, …; `object` for a "
            "prefix table",
    "action": "`undelete` (remove delete markers), `copy` (server-side copy of a version), or empty",
    "version_id": "the version that comes back",
    "size": "bytes of that version",
    "etag": "ETag of that version",
    "reason": "why: when the key was deleted, why it cannot be recovered, why it is skipped",
    "current_version_id": "the key's current entry at the scan (re-checked before the key is written)",
    "current_is_delete_marker": "whether that entry is a delete marker",
    "current_etag": "ETag of that entry (a `null` version id is no identity: these are compared too)",
    "current_size": "size of that entry",
    "current_last_modified": "LastModified of that entry",
    "last_modified": "LastModified of the version that comes back",
    "delete_markers": "`undelete`: the delete-marker version ids above that version, which the restore "
                      "removes (the undo manifest)",
    "expected_size": "the size the table's metadata records for the object (Fuse), if any",
    "row_count": "the rows the metadata records for the object (Fuse blocks), if any",
}
REPORT_ROW = {
    "key": "the object key",
    "kind": "as in the plan",
    "status": "as in the plan",
    "action": "what the restore did or would do: `undelete`, `copy`, or empty",
    "version_id": "the version that comes back",
    "size": "its bytes",
    "reason": "the plan's reason",
    "result": "`undeleted`, `copied`, `already restored`, `changed since scan`, `failed`, "
              "`would undelete`, `would copy`; empty when nothing was to be done",
    "detail": "what happened, in words (see the [error catalogue](../operations/errors.md))",
    "delete_markers_removed": "the delete-marker version ids this run removed (confirmed by the server)",
    "new_version_id": "the version a copy created (`undo` deletes exactly this one)",
}
REPORT_SUMMARY = {
    "table": "the table location, `s3://bucket/prefix/`",
    "table_format": "`fuse`, `iceberg`, `delta` or `prefix`",
    "keys_listed": "keys in the listing",
    "versions_listed": "versions and delete markers in the listing",
    "needed": "keys the table needs (all statuses but `skipped`)",
    "present": "keys whose current version is good",
    "restore": "deleted keys that come back",
    "damaged": "live keys failing the metadata's checks (an older good version is copied over them)",
    "unrecoverable": "needed keys with no version holding good data",
    "skipped": "keys left alone on purpose (with the reason)",
    "to_undelete": "keys planned for delete-marker removal",
    "to_copy": "keys planned for a server-side copy",
    "bytes_to_restore": "bytes of the versions planned to come back",
    "listed_at": "when the listing sweep started",
    "tables": "Fuse: the tables found (at most 20)",
    "info": "what the layout found out (shortened)",
    "dry_run": "whether this was a dry run",
    "strategy": "`auto`, `undelete` or `copy`",
    "results": "how many keys had each result",
    "restored": "keys undeleted or copied",
    "bytes_restored": "their bytes",
    "failed": "keys that failed",
    "first_failures": "the first five keys not done, with their detail",
    "first_unrecoverable": "the first five unrecoverable keys, with the reason",
    "held_back": "`referenced_only`: a prefix table without a deletion window was only reported",
    "remaining": "needed keys still missing or damaged after this run",
    "exit_status": "the exit status (see [Exit statuses](exit-statuses.md))",
    "requests": "S3 requests made, per operation",
    "requests_total": "their total",
    "seconds": "wall time of the run",
    "report": "where the full report was saved",
    "plan": "where the plan was saved",
    "plan_digest": "the plan's digest (pin it in the amend: `plan_digest=…`, `--plan-digest`)",
}


def _ensure_importable() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's airflow_fuse, not an installed copy


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _described(fields: list[tuple[str, str]], descriptions: dict[str, str], what: str) -> str:
    """A field / type / meaning table; warns about fields without a description, and stale descriptions."""
    names = [name for name, _ in fields]
    for name in names:
        if name not in descriptions:
            log.warning("%s has a field %r that docs/_hooks/generated.py does not describe", what, name)
    for name in descriptions:
        if name not in names:
            log.warning("docs/_hooks/generated.py describes %r, which %s no longer has", name, what)
    return _table(("field", "type", "meaning"),
                  [(f"`{name}`", f"`{kind}`", descriptions.get(name, "")) for name, kind in fields])


def cli() -> str:
    from airflow_fuse.cli import build_parser

    os.environ["COLUMNS"] = "110"  # argparse wraps help to the terminal's width: make it the same everywhere
    parser = build_parser()
    out = ["```text", parser.format_help().rstrip(), "```"]
    for action in parser._actions:  # argparse offers no public way to walk the subcommands
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                out += ["", f"## `airflow-fuse {name}`", "", helps.get(name) or "", "",
                        "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(out)


def exit_statuses() -> str:
    from airflow_fuse.errors import EXIT_STATUSES

    return _table(("status", "meaning"), [(str(code), text) for code, text in EXIT_STATUSES.items()])


def _sample_plan() -> Any:
    from airflow_fuse.plan import Plan, PlanItem

    return Plan(bucket="lake", prefix="events/", table_format="prefix", info={"note": "x"},
                items=[PlanItem(key="events/a.parquet", status="restore", action="undelete", version_id="v1",
                                delete_markers=["m1"], expected_size=1, row_count=1)])


def plan_meta() -> str:
    meta = {"format": "", **_sample_plan().meta()}
    kinds = {k: type(v).__name__ if k != "format" else "str" for k, v in meta.items()}
    return _described([(k, kinds[k]) for k in meta], PLAN_META, "Plan.meta()")


def plan_columns() -> str:
    import io

    import pyarrow.parquet as pq

    schema = pq.read_schema(io.BytesIO(_sample_plan().to_parquet()))
    return _described([(f.name, str(f.type)) for f in schema], PLAN_ITEM, "the plan's Parquet schema")


def _sample_report() -> Any:
    from airflow_fuse.report import Report
    from airflow_fuse.restore import Outcome, RestoreResult

    plan = _sample_plan()
    outcome = Outcome(key="events/a.parquet", result="undeleted", action="undelete", version_id="v1",
                      markers_removed=["m1"], new_version_id="")
    return Report(plan=plan, restore=RestoreResult(strategy="auto", dry_run=False, outcomes=[outcome]),
                  held_back=True, location="report.parquet", plan_location="plan.parquet")


def report_summary() -> str:
    summary = _sample_report().summary()
    return _described([(k, type(v).__name__) for k, v in summary.items()], REPORT_SUMMARY, "Report.summary()")


def report_columns() -> str:
    import io

    import pyarrow.parquet as pq

    schema = pq.read_schema(io.BytesIO(_sample_report().to_parquet()))
    return _described([(f.name, str(f.type)) for f in schema], REPORT_ROW, "the report's Parquet schema")


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli,
    "exit-statuses": exit_statuses,
    "plan-meta": plan_meta,
    "plan-columns": plan_columns,
    "report-summary": report_summary,
    "report-columns": report_columns,
}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if "<!-- generated:" not in markdown:
        return markdown
    _ensure_importable()

    def generate(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            from mkdocs.exceptions import PluginError

            raise PluginError(f"{page.file.src_path}: unknown generated section {name!r}; "
                              f"known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(generate, markdown)
