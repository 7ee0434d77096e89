"""``FuseAmendOperator``: restore a table's missing and damaged objects (the ``SYSTEM$FUSE_AMEND`` call)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fuse.engine import AmendOptions, amend
from airflow_fuse.errors import FuseError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.operators._progress import LogProgress
from airflow_fuse.operators.scan import FuseScanOperator, fail_with
from airflow_fuse.restore import MULTIPART_THRESHOLD


class FuseAmendOperator(FuseScanOperator):
    """
    Restore every object a table needs from the right older versions, never destroying a version.

    Give either ``table`` (scan now, then restore: the one-call equivalent of ``CALL SYSTEM$FUSE_AMEND``)
    or ``plan`` (apply a plan a ``FuseScanOperator`` saved). The scan options of ``FuseScanOperator``
    apply with ``table``. Returns the report summary (small; the full report goes to ``report_uri``).

    :param plan: Location of a saved plan (templated), instead of ``table``.
    :param strategy: ``auto`` (remove delete markers; copy where needed), ``undelete`` or ``copy``.
    :param dry_run: Only report what would be done; write nothing to the table.
    :param max_workers: Parallel S3 requests.
    :param fail_on_unrecoverable: Fail the task when objects remain that cannot be recovered (default True).
    :param report_uri: Save the full per-key report here (``.json`` or ``.parquet``; local or ``s3://``).
    :param plan_uri: Save the plan (the undo manifest: every delete marker to be removed) before any change.
    """

    template_fields: Sequence[str] = (*FuseScanOperator.template_fields, "plan", "strategy", "report_uri")
    ui_color = "#f8e8d0"

    def __init__(
        self,
        *,
        table: str | None = None,
        plan: str | None = None,
        strategy: str = "auto",
        dry_run: bool = False,
        max_workers: int = 16,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        fail_on_unrecoverable: bool = True,
        report_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(table=table or "", fail_on_unrecoverable=fail_on_unrecoverable, **kwargs)
        self.plan = plan
        self.strategy = strategy
        self.dry_run = dry_run
        self.max_workers = max_workers
        self.multipart_threshold = multipart_threshold
        self.report_uri = report_uri

    def execute(self, context: Context) -> dict[str, Any]:
        client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        progress = LogProgress(self.log)
        options = AmendOptions(strategy=self.strategy, dry_run=bool(self.dry_run), max_workers=self.max_workers,
                               multipart_threshold=self.multipart_threshold, plan_uri=self.plan_uri or None,
                               report_uri=self.report_uri or None)
        try:
            report = amend(client, table=self.table or None, plan=self.plan or None,
                           scan_options=self.scan_options(), options=options, conn_id=self.aws_conn_id,
                           progress=progress.restore, on_page=progress.page)
        except FuseError as exc:
            raise fail_with(exc) from None
        self.log.info("\n%s", report.render())
        summary = report.summary()
        if report.failed:
            raise AirflowException(
                f"{report.failed} objects of {summary['table']} failed to restore (re-running is safe): "
                + "; ".join(f"{f['key']}: {f['detail']}" for f in summary["first_failures"][:3]))
        if self.fail_on_unrecoverable and report.unrecoverable:
            raise AirflowFailException(
                f"{report.unrecoverable} objects {summary['table']} needs cannot be recovered: "
                + "; ".join(f"{u['key']}: {u['reason']}" for u in summary["first_unrecoverable"][:3]))
        return summary
