"""``FuseUndoOperator``: put back what a restore changed, from the report it saved."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from airflow_fuse.errors import FuseError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.operators.scan import fail_with
from airflow_fuse.progress import LogProgress
from airflow_fuse.undo import undo


class FuseUndoOperator(BaseOperator):
    """
    Undo a restore: a delete marker back on each key it undeleted, its copies deleted — never older data.

    A key is changed only if it still holds what the restore left there (the restored version is current;
    a copy is current and holds its source's bytes); otherwise it is left alone and the reason reported.
    Running it again changes nothing (``already undone``). Returns the undo summary.

    :param report: Location of the restore's report (``FuseAmendOperator`` ``report_uri``; templated).
    :param dry_run: Only report what would be undone; write nothing.
    :param undo_report_uri: Save this undo's own per-key report here (``.json`` or ``.parquet``; templated).
    :param max_workers: Parallel S3 requests.
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoint.
    """

    template_fields: Sequence[str] = ("report", "undo_report_uri", "aws_conn_id")
    ui_color = "#f0e0e0"

    def __init__(self, *, report: str, dry_run: bool = False, undo_report_uri: str | None = None,
                 max_workers: int = 16, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report = report
        self.dry_run = dry_run
        self.undo_report_uri = undo_report_uri
        self.max_workers = max_workers
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        progress = LogProgress(self.log)
        try:
            result = undo(client, self.report, dry_run=bool(self.dry_run), max_workers=self.max_workers,
                          report_uri=self.undo_report_uri or None, conn_id=self.aws_conn_id, on_page=progress.page)
        except FuseError as exc:
            raise fail_with(exc) from None
        self.log.info("\n%s", result.render())
        summary = result.summary()
        if result.failed:
            raise AirflowException(
                f"{len(result.failed)} keys of {summary['table']} failed to undo (re-running is safe): "
                + "; ".join(f"{f['key']}: {f['detail']}" for f in summary["first_failures"][:3]))
        return summary
