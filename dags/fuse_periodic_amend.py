"""
### Periodic Fuse amend

Every hour (set `AIRFLOW_FUSE_PERIODIC_SCHEDULE` to change it), check and repair a list of tables:
`table.versioning` → `table.scan` (one mapped pair per table; the plan saved under the operations location) →
`shard` → `amend_kwargs` → `amend` (one mapped task per table, or per shard of a table with more than
`airflow_fuse_shard_keys` keys to restore, default 200,000: the restore spread over the executor's workers) →
`finish.report` (the table's shard reports merged) → `finish.verify` → `finish.announce`, per table. A table
whose objects cannot be recovered fails its own tasks; the other tables go on. A table that had objects
restored emits an event on the `airflow-fuse://restored` asset (extra: table and counts), which other DAGs
can schedule on.

Plans and reports go to `<airflow_fuse_ops_location>/fuse_periodic_amend/<run_id>/table-<n>/` (the Variable the
run book uses; `s3://…` for workers on several machines; unset: a local temporary directory, for a single machine).

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

import logging
import os
import tempfile
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Asset, Variable, task, task_group

from airflow_fuse.operators.amend import FuseAmendOperator
from airflow_fuse.operators.scan import FuseScanOperator
from airflow_fuse.operators.shard import TABLE_SHARD_NAME, FuseMergeReportsOperator
from airflow_fuse.operators.verify import FuseVerifyOperator
from airflow_fuse.sensors.versioning import VersioningSensor

log = logging.getLogger(__name__)
RESTORED = Asset("airflow-fuse://restored")
VARIABLE = "fuse_periodic_tables"
OPS_VARIABLE = "airflow_fuse_ops_location"
SHARD_KEYS_VARIABLE = "airflow_fuse_shard_keys"
MAX_SHARDS = 64
# Each mapped task instance is named after its table (not 0, 1, …) in the UI.
TABLE_NAME = "{{ ti.xcom_pull(task_ids='tables', map_indexes=-1)[ti.map_index]['table'] }}"
FINISH_NAME = "{{ ti.xcom_pull(task_ids='shard', map_indexes=-1)[ti.map_index]['table'] }}"
ALLOWED = {"table", "table_format", "aws_conn_id", "table_prefix", "snapshot_location", "deletion_window_hours",
           "strategy"}
SCAN_FIELDS = ("table", "table_format", "aws_conn_id", "table_prefix", "snapshot_location", "deleted_since")


def _ops_dir(dag_id: str, run_id: str) -> str:
    ops = Variable.get(OPS_VARIABLE, default=None)
    if not ops:
        ops = f"file://{tempfile.gettempdir()}/airflow-fuse/"
        log.warning("Variable %s is not set: plans and reports go to %s (workers on one machine only)", OPS_VARIABLE,
                    ops)
    base = ops.strip().rstrip("/")
    if base.startswith("file://"):
        base = base[len("file://"):]
    return f"{base}/{dag_id}/{run_id}"


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
    def tables(dag_run: Any = None) -> list[dict[str, Any]]:
        """The tables to check, from the Variable; each entry is validated so a typo fails clearly."""
        specs = Variable.get(VARIABLE, default=[], deserialize_json=True)
        if not isinstance(specs, list):
            raise ValueError(f"Variable {VARIABLE} must be a JSON list of objects with a 'table' key")
        run_dir = _ops_dir(dag_run.dag_id, dag_run.run_id)
        out = []
        for number, spec in enumerate(specs):
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
            full["plan_uri"] = f"{run_dir}/table-{number + 1}/plan.parquet"
            out.append(full)
        return out

    @task_group(group_id="table")
    def check_table(table: str, bucket: str, table_format: str, aws_conn_id: str, table_prefix: str | None,
                    snapshot_location: str | None, deleted_since: str | None, strategy: str, plan_uri: str) -> None:
        versioning = VersioningSensor(task_id="versioning", bucket_name=bucket, aws_conn_id=aws_conn_id,
                                      timeout=60, poke_interval=10, map_index_template=TABLE_NAME)
        scan = FuseScanOperator(task_id="scan", table=table, table_format=table_format, table_prefix=table_prefix,
                                snapshot_location=snapshot_location, deleted_since=deleted_since,
                                aws_conn_id=aws_conn_id, plan_uri=plan_uri, map_index_template=TABLE_NAME)
        versioning >> scan

    @task(trigger_rule="all_done")
    def shard(specs: list[dict[str, Any]], ti: Any = None) -> list[dict[str, Any]]:
        """Each scanned table's plan: whole, or cut into shards above the Variable airflow_fuse_shard_keys keys to
        restore (a table whose scan failed is left out: its own tasks failed)."""
        from airflow_fuse import formats
        from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
        from airflow_fuse.plan import load_plan
        from airflow_fuse.shards import DEFAULT_SHARD_KEYS, save_shards, shard_count

        shard_keys = int(Variable.get(SHARD_KEYS_VARIABLE, default=DEFAULT_SHARD_KEYS))
        finish: list[dict[str, Any]] = []
        for number, spec in enumerate(specs):
            summary = ti.xcom_pull(task_ids="table.scan", map_indexes=number)
            if not summary or not summary.get("plan"):
                log.warning("%s was not scanned (its table.scan failed): not restored", spec["table"])
                continue
            plan_uri = summary["plan"]
            client = (VersionedS3Hook(aws_conn_id=spec["aws_conn_id"]).get_conn() if plan_uri.startswith("s3://")
                      else None)
            plan = load_plan(plan_uri, client=client)
            # A table only reported (a prefix table without a deletion window) is not cut: it restores nothing.
            restores = formats.get(plan.table_format).referenced or bool(spec["deleted_since"])
            count = shard_count(plan, shard_keys=shard_keys, max_shards=MAX_SHARDS) if restores else 1
            report_uri = plan_uri.rsplit("/", 1)[0] + "/report.parquet"
            entries = save_shards(plan, plan_uri, count, client=client, report_uri=report_uri)
            if len(entries) > 1:
                log.info("%s: %d keys to restore cut into %d shards", spec["table"], plan.actionable_count(),
                         len(entries))
            finish.append({**{name: spec[name] for name in SCAN_FIELDS}, "strategy": spec["strategy"],
                           "shards": entries, "plan": plan_uri, "plan_digest": plan.digest, "report_uri": report_uri})
        return finish

    @task
    def amend_kwargs(scanned: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One amend task per shard of every table (a table not cut: its plan)."""
        return [{**entry, "strategy": table["strategy"], "aws_conn_id": table["aws_conn_id"]}
                for table in scanned for entry in table["shards"]]

    @task_group(group_id="finish")
    def finish_table(table: str, table_format: str, aws_conn_id: str, table_prefix: str | None,
                     snapshot_location: str | None, deleted_since: str | None, strategy: str,
                     shards: list[dict[str, Any]], plan: str, plan_digest: str, report_uri: str) -> None:
        # every amend task done (restored or failed): this table's shards merged into one report
        report = FuseMergeReportsOperator(task_id="report", shards=shards, plan=plan, plan_digest=plan_digest,
                                          report_uri=report_uri, aws_conn_id=aws_conn_id,
                                          trigger_rule="none_skipped", map_index_template=FINISH_NAME)
        verify = FuseVerifyOperator(task_id="verify", table=table, table_format=table_format,
                                    table_prefix=table_prefix, snapshot_location=snapshot_location,
                                    deleted_since=deleted_since, aws_conn_id=aws_conn_id,
                                    map_index_template=FINISH_NAME)

        @task(outlets=[RESTORED], map_index_template=FINISH_NAME)
        def announce(summary: dict[str, Any], *, outlet_events: Any = None) -> None:
            """Emit the asset event only when something was restored."""
            from airflow.sdk.exceptions import AirflowSkipException

            if not summary or not summary.get("restored"):
                raise AirflowSkipException("nothing was restored; no asset event")
            outlet_events[RESTORED].extra = {"table": summary["table"], "restored": summary["restored"],
                                             "bytes_restored": summary["bytes_restored"]}

        report >> verify >> announce(report.output)

    specs = tables()
    scanned = check_table.expand_kwargs(specs)
    sharded = shard(specs)
    # Scheduled: a table whose metadata does not say what it needs (prefix) is reported, not restored, unless its
    # entry gave a deletion window (deleted_since).
    amend = FuseAmendOperator.partial(task_id="amend", referenced_only=True, map_index_template=TABLE_SHARD_NAME,
                                      ).expand_kwargs(amend_kwargs(sharded))
    finished = finish_table.expand_kwargs(sharded)
    scanned >> sharded
    amend >> finished
