"""``FuseAmendOperator``: restore a table's missing and damaged objects (the ``SYSTEM$FUSE_AMEND`` call)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fuse.databend import count_rows
from airflow_fuse.engine import AmendOptions, amend
from airflow_fuse.errors import EXIT_UNRECOVERABLE, FuseError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.operators.scan import FuseScanOperator, fail_with
from airflow_fuse.progress import LogProgress
from airflow_fuse.restore import MULTIPART_THRESHOLD
from airflow_fuse.shards import shard_label


class FuseAmendOperator(FuseScanOperator):
    """
    Restore every object a table needs from the right older versions, never destroying a version.

    Give ``table`` (scan now, then restore: the one-call equivalent of ``CALL SYSTEM$FUSE_AMEND``) or
    ``plan`` (apply a plan a ``FuseScanOperator`` saved), or both: the plan is then applied only if it was
    made for that table. The scan options of ``FuseScanOperator`` apply with ``table`` alone. A saved plan
    is checked before anything is written: every field, its digest, ``plan_digest``, its table and
    ``max_plan_age``; a plan that fails fails the task at once (no retry). Returns the report summary
    (small; the full report goes to ``report_uri``).

    :param plan: Location of a saved plan (templated).
    :param plan_digest: Apply the plan only if its digest is this one (templated); pin the scan's, e.g.
        ``"{{ ti.xcom_pull(task_ids='scan')['plan_digest'] }}"``, so the plan applied is the plan reviewed.
    :param max_plan_age: Refuse a plan whose listing is older than this (templated): hours, or a duration
        such as ``"90m"``, ``"24h"``, ``"2d"``, or a timedelta; ``None`` or ``"none"`` for any age. Default ``"24h"``.
    :param strategy: ``auto`` (remove delete markers; copy where needed), ``undelete`` or ``copy``.
    :param dry_run: Only report what would be done; write nothing to the table.
    :param max_workers: Parallel S3 requests.
    :param fail_on_unrecoverable: Fail the task when objects remain that cannot be recovered (default True).
    :param report_uri: Save the full per-key report here (``.json`` or ``.parquet``; local or ``s3://``).
    :param str plan_uri: Save the plan (the undo manifest: every delete marker to be removed) before any change.
    :param referenced_only: Restore only what the table's own metadata references (scheduled amends): a
        ``prefix`` table without a deletion window (``deleted_since``/``deleted_before``) is only reported, and the
        task fails when it has deleted keys, so that an intentional deletion is never undone unasked.
    """

    template_fields: Sequence[str] = (*FuseScanOperator.template_fields, "plan", "plan_digest", "max_plan_age",
                                      "strategy", "report_uri")
    ui_color = "#f8e8d0"

    def __init__(
        self,
        *,
        table: str | None = None,
        plan: str | None = None,
        plan_digest: str | None = None,
        max_plan_age: float | str | timedelta | None = "24h",
        strategy: str = "auto",
        dry_run: bool = False,
        max_workers: int = 16,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        fail_on_unrecoverable: bool = True,
        report_uri: str | None = None,
        referenced_only: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(table=table or "", fail_on_unrecoverable=fail_on_unrecoverable, **kwargs)
        self.plan = plan
        self.plan_digest = plan_digest
        self.max_plan_age = max_plan_age
        self.strategy = strategy
        self.dry_run = dry_run
        self.max_workers = max_workers
        self.multipart_threshold = multipart_threshold
        self.report_uri = report_uri
        self.referenced_only = referenced_only

    def execute(self, context: Context) -> dict[str, Any]:
        client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        progress = LogProgress(self.log)
        options = AmendOptions(strategy=self.strategy, dry_run=bool(self.dry_run), max_workers=self.max_workers,
                               multipart_threshold=self.multipart_threshold, plan_uri=self.plan_uri or None,
                               report_uri=self.report_uri or None, referenced_only=self.referenced_only,
                               plan_digest=self.plan_digest, max_plan_age=self.max_plan_age)
        try:
            location, scan_options, named = self.target()
            report = amend(client, table=location or None, plan=self.plan or None,
                           scan_options=scan_options, options=options, conn_id=self.aws_conn_id,
                           progress=progress.restore, on_page=progress.page)
        except FuseError as exc:
            raise fail_with(exc) from None
        self.log.info("\n%s", report.render())
        # names for a mapped task in the UI (map_index_template, see operators.shard): the table, the shard
        context["fuse_table"] = report.plan.location.uri  # type: ignore[typeddict-unknown-key]
        label = shard_label(report.plan)
        if label:
            context["fuse_shard"] = label  # type: ignore[typeddict-unknown-key]
        summary = report.summary()
        if named is not None and not self.dry_run:
            table, cursor = named
            summary["databend_count"] = count_rows(cursor, table)
            self.log.info("Databend reads %d rows from %s (its catalogue says %s)", summary["databend_count"],
                          table.sql_name, table.num_rows)
            if table.num_rows is not None and summary["databend_count"] != table.num_rows:
                raise AirflowException(f"Databend counts {summary['databend_count']} rows in {table.sql_name}, its "
                                       f"catalogue says {table.num_rows}")
        status = report.exit_status()
        if status == EXIT_UNRECOVERABLE and self.fail_on_unrecoverable:
            raise AirflowFailException(
                f"{report.unrecoverable} objects {summary['table']} needs cannot be recovered: "
                + "; ".join(f"{u['key']}: {u['reason']}" for u in summary["first_unrecoverable"][:3]))
        if report.held_back and report.plan.actionable_count():
            raise AirflowFailException(
                f"{report.plan.actionable_count()} objects of {summary['table']} are deleted or damaged. It is a "
                f"{report.plan.table_format} table: its metadata does not say which objects it needs, so a scheduled "
                "amend does not restore them (a retention job or an erasure may have deleted them on purpose). "
                "Restore them with the fuse_failsafe_runbook DAG after review, or give this table a deletion window "
                "(deletion_window_hours in fuse_periodic_tables) to restore deletions made inside it")
        if report.restore is not None and report.restore.not_done:
            not_done = report.restore.not_done
            for outcome in not_done:
                self.log.error("%s: %s: %s", outcome.key, outcome.result, outcome.detail)
            raise AirflowException(
                f"{len(not_done)} objects of {summary['table']} were not restored "
                f"({', '.join(sorted({o.result for o in not_done}))}; running again is safe, it re-checks every "
                "key; 'changed since scan' means the key was written or deleted after the scan: scan again): "
                + "; ".join(f"{o.key}: {o.detail}" for o in not_done[:3]))
        return summary
