"""
### Periodic Fuse amend

Every hour (set `AIRFLOW_FUSE_PERIODIC_SCHEDULE` to change it), check and repair a list of tables:
versioning → amend (scan + restore) → verify, one mapped chain per table. A table whose objects cannot
be recovered fails its own tasks; the other tables go on. A table that had objects restored emits an
event on the `airflow-fuse://restored` asset (extra: table and counts), which other DAGs can schedule on.

Tables come from the Airflow Variable `fuse_periodic_tables` (JSON list), e.g.

```json
[{"table": "s3://lake/warehouse/", "table_format": "fuse", "aws_conn_id": "aws_default"},
 {"table": "s3://lake/events/", "table_format": "prefix", "deletion_window_hours": 2}]
```

**Only what a table's own metadata references is restored on a schedule.** A Databend (fuse), Iceberg or
Delta table says which objects it needs, so what its own maintenance deleted stays deleted. A `prefix`
table does not: a retention job or an erasure request deletes keys on purpose, and restoring every
deleted key each hour would undo them. So a prefix table is only *reported*: its `amend` task fails
(alerting fires) listing the deleted keys, and nothing is written — unless its entry opts in with
`deletion_window_hours`: then only keys deleted within that many hours before the run are restored.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Asset, Variable, task, task_group

from airflow_fuse.operators.amend import FuseAmendOperator
from airflow_fuse.operators.verify import FuseVerifyOperator
from airflow_fuse.sensors.versioning import VersioningSensor

RESTORED = Asset("airflow-fuse://restored")
VARIABLE = "fuse_periodic_tables"
# Each mapped task instance is named after its table (not 0, 1, …) in the UI.
TABLE_NAME = "{{ ti.xcom_pull(task_ids='tables', map_indexes=-1)[ti.map_index]['table'] }}"
ALLOWED = {"table", "table_format", "aws_conn_id", "table_prefix", "snapshot_location", "deletion_window_hours",
           "strategy"}

with DAG(
    dag_id="fuse_periodic_amend",
    description="Check and repair a list of tables from older object versions, on a schedule",
    doc_md=__doc__,
    schedule=os.environ.get("AIRFLOW_FUSE_PERIODIC_SCHEDULE", "@hourly"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["fuse", "fail-safe", "s3"],
) as dag:

    @task
    def tables() -> list[dict[str, Any]]:
        """The tables to check, from the Variable; each entry is validated so a typo fails clearly."""
        specs = Variable.get(VARIABLE, default=[], deserialize_json=True)
        if not isinstance(specs, list):
            raise ValueError(f"Variable {VARIABLE} must be a JSON list of objects with a 'table' key")
        out = []
        for spec in specs:
            if not isinstance(spec, dict) or "table" not in spec:
                raise ValueError(f"Variable {VARIABLE}: entry {spec!r} needs a 'table' (s3://bucket/prefix/)")
            unknown = set(spec) - ALLOWED
            if unknown:
                raise ValueError(f"Variable {VARIABLE}: entry for {spec['table']} has unknown keys {sorted(unknown)}")
            full = {key: spec.get(key) for key in ALLOWED - {"deletion_window_hours"}}
            window = spec.get("deletion_window_hours")
            if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float))
                                       or window <= 0):
                raise ValueError(f"Variable {VARIABLE}: entry for {spec['table']}: deletion_window_hours must be a "
                                 f"positive number of hours, not {window!r}")
            full["deleted_since"] = (None if window is None else
                                     (datetime.now(timezone.utc) - timedelta(hours=window)).isoformat())
            full["table_format"] = full["table_format"] or "auto"
            full["aws_conn_id"] = full["aws_conn_id"] or "aws_default"
            full["strategy"] = full["strategy"] or "auto"
            full["bucket"] = spec["table"].split("/")[2]
            out.append(full)
        return out

    @task_group(group_id="table")
    def check_table(table: str, bucket: str, table_format: str, aws_conn_id: str, table_prefix: str | None,
                    snapshot_location: str | None, deleted_since: str | None, strategy: str) -> None:
        versioning = VersioningSensor(task_id="versioning", bucket_name=bucket, aws_conn_id=aws_conn_id,
                                      timeout=60, poke_interval=10, map_index_template=TABLE_NAME)
        scan_args = {"table": table, "table_format": table_format, "table_prefix": table_prefix,
                     "snapshot_location": snapshot_location, "deleted_since": deleted_since,
                     "aws_conn_id": aws_conn_id}
        # Scheduled: a table whose metadata does not say what it needs (prefix) is reported, not restored,
        # unless its entry gave a deletion window (deleted_since).
        amend = FuseAmendOperator(task_id="amend", strategy=strategy, referenced_only=True,
                                  map_index_template=TABLE_NAME, **scan_args)
        verify = FuseVerifyOperator(task_id="verify", map_index_template=TABLE_NAME, **scan_args)

        @task(outlets=[RESTORED], map_index_template=TABLE_NAME)
        def announce(summary: dict[str, Any], *, outlet_events: Any = None) -> None:
            """Emit the asset event only when something was restored."""
            from airflow.sdk.exceptions import AirflowSkipException

            if not summary or not summary.get("restored"):
                raise AirflowSkipException("nothing was restored; no asset event")
            outlet_events[RESTORED].extra = {"table": summary["table"], "restored": summary["restored"],
                                             "bytes_restored": summary["bytes_restored"]}

        versioning >> amend >> verify >> announce(amend.output)

    check_table.expand_kwargs(tables())
