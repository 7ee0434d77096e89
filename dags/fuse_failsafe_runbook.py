"""
### Fuse fail-safe run book

Bring back a table whose objects were deleted from a **versioned** S3 bucket: the open equivalent of
Databend's `CALL SYSTEM$FUSE_AMEND('db', 't')`, for Databend Fuse tables and for any table that is
"every object under a prefix" (Parquet datasets, Hive layouts).

**Trigger it from the UI** (*Trigger DAG* → fill in the form). The first run should be a **dry run**
(the default): it checks versioning, scans the table and shows in the `scan` task's log what is
missing, what is damaged, which older version brings each back, and what cannot be recovered.
Nothing is written. Run again with *dry run* off to restore, then verify.

1. `versioning` — the bucket's versioning must be *Enabled*; if it was never enabled, nothing can be
   recovered and the run fails at once saying so.
2. `scan` — one listing of the table's versions; for Databend, the current snapshot → segments →
   blocks and index files. Writes nothing.
3. `dry_run_gate` — stops here in a dry run.
4. `amend` — removes the delete markers over the right versions (or copies a version back where
   needed); never deletes a version that holds data; safe to run twice.
5. `verify` — reads every data file's Parquet footer: row counts must match the metadata (and
   `expect_row_count` when given).
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Param, task

from airflow_fuse.operators.amend import FuseAmendOperator
from airflow_fuse.operators.scan import FuseScanOperator
from airflow_fuse.operators.verify import FuseVerifyOperator
from airflow_fuse.sensors.versioning import VersioningSensor

BUCKET = "{{ params.table.split('/')[2] }}"
# Rendered as strings (a bucket or connection id made of digits must stay a string); an empty optional
# param renders as "" and the operators treat "" as not given.
SCAN_ARGS = {
    "table": "{{ params.table }}",
    "table_format": "{{ params.table_format }}",
    "snapshot_location": "{{ params.snapshot_location or '' }}",
    "as_of": "{{ params.as_of or '' }}",
    "deleted_since": "{{ params.deleted_since or '' }}",
    "aws_conn_id": "{{ params.aws_conn_id }}",
}

with DAG(
    dag_id="fuse_failsafe_runbook",
    description="Restore a table's deleted objects from older versions in a versioned S3 bucket",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["fuse", "fail-safe", "s3"],
    params={
        "table": Param("s3://my-bucket/path/to/table/", type="string", pattern=r"^s3://[a-z0-9][a-z0-9.\-]+/.+",
                       title="Table location",
                       description="s3://bucket/prefix/ — for Databend, the location given to CREATE TABLE "
                                   "(or the table root …/<db_id>/<table_id>/)."),
        "table_format": Param("auto", enum=["auto", "fuse", "prefix"], title="Table format",
                              description="auto detects Databend Fuse tables; prefix = every object under "
                                          "the location."),
        "snapshot_location": Param(None, type=["null", "string"], title="Snapshot location (optional)",
                                   description="Databend only: SNAPSHOT_LOCATION from SHOW CREATE TABLE. "
                                               "Default: the table's hint file."),
        "strategy": Param("auto", enum=["auto", "undelete", "copy"], title="Restore strategy",
                          description="auto: remove delete markers, copy only where needed. copy: write each "
                                      "version back as a new version."),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="Scan and show the plan only; nothing is written. Untick to restore."),
        "as_of": Param(None, type=["null", "string"], title="As of (prefix tables, optional)",
                       description="Bring keys back to the versions current at this time, e.g. "
                                   "2026-11-24T10:00:00Z."),
        "deleted_since": Param(None, type=["null", "string"], title="Deleted since (prefix tables, optional)",
                               description="Only deletions at or after this time count (the incident)."),
        "expect_row_count": Param(None, type=["null", "integer"], title="Expected row count (optional)",
                                  description="Verification fails unless the table has exactly this many rows."),
        "aws_conn_id": Param("aws_default", type="string", title="AWS connection",
                             description="Airflow connection with credentials (and endpoint_url for "
                                         "S3-compatible servers)."),
    },
) as dag:
    versioning = VersioningSensor(task_id="versioning", bucket_name=BUCKET, aws_conn_id="{{ params.aws_conn_id }}",
                                  poke_interval=30, timeout=300, mode="reschedule")
    scan = FuseScanOperator(task_id="scan", **SCAN_ARGS)

    @task.short_circuit(task_id="dry_run_gate")
    def dry_run_gate(params: dict | None = None) -> bool:
        """Continue to the restore only when this is not a dry run."""
        return not (params or {}).get("dry_run", True)

    amend = FuseAmendOperator(task_id="amend", strategy="{{ params.strategy }}", **SCAN_ARGS)
    verify = FuseVerifyOperator(task_id="verify", expect={"row_count": "{{ params.expect_row_count or '' }}"},
                                **SCAN_ARGS)

    versioning >> scan >> dry_run_gate() >> amend >> verify
