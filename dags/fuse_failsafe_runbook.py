"""
### Fuse fail-safe run book

Bring back a table whose objects were deleted from a **versioned** S3 bucket: the open equivalent of
Databend's `CALL SYSTEM$FUSE_AMEND('db', 't')`, for Databend Fuse tables and for any table that is
"every object under a prefix" (Parquet datasets, Hive layouts).

**One run, one reviewed plan.** Trigger it from the UI (*Trigger* → fill in the form):

1. `versioning` — the bucket's versioning must be *Enabled*; if it was never enabled, nothing can be
   recovered and the run fails at once saying so.
2. `scan` — one listing of the table's versions (or, for buckets of millions of objects, the S3 Inventory
   report given as *S3 Inventory manifest*); for Databend, the current snapshot → segments → blocks and index
   files. Writes nothing to the table. The plan (every key, the version that brings it
   back, the delete markers to remove) is saved to the **operations location**:
   `<ops_location>/fuse_failsafe_runbook/<run_id>/plan.parquet` — never inside the table.
3. `route` — a **dry run** stops here, its log ending `DRY RUN: nothing written; N objects would be
   restored`. Otherwise, with *require approval* (the default), the run goes on to `approval`; without
   it (automation), straight to `amend`.
4. `approval` — the on-call reads the plan's summary (counts per action, bytes, unrecoverable keys and
   why, the first keys of each kind, the plan's location and digest) under *Required actions* and
   chooses **Approve** or **Reject**. Reject, or no answer within 12 hours, ends the run with nothing
   written, and the `approval` log says so.
5. `shard` — a plan with more keys to restore than *keys per shard* (default 200,000; the Variable
   `airflow_fuse_shard_keys` sets the default) is cut by key range into shards saved beside it
   (`plan.shard-0001-of-000N.parquet`); a smaller plan is applied whole.
6. `amend` — one mapped task per shard, spread over the executor's workers: each applies **that plan** (pinned by
   its digest: a plan changed since the review is refused): each key is re-checked against a fresh listing of its
   shard's key range first, and a key written or deleted since the scan is left alone.
   Removes delete markers over the right versions (or copies a version back where needed); never
   deletes a version that holds data; safe to run twice.
7. `report` — merges the shards' reports into one per-key report (the undo manifest, for
   `airflow-fuse undo --report`), saved beside the plan: `…/<run_id>/report.parquet`; fails if a shard did not
   restore all its keys (clear that shard's task to run it again).
8. `verify` — reads every data file's Parquet footer: row counts must match the metadata (and
   *expected row count* when given).

Set up once: the Airflow Variable `airflow_fuse_ops_location` (e.g. `s3://ops-bucket/airflow-fuse/` or
`file:///var/lib/airflow-fuse/`; an `s3://` location is written with the run's AWS connection) and
`airflow_fuse_aws_conn_ids`, the JSON list of AWS connections the form offers (default `["aws_default"]`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, Variable, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_fuse import formats
from airflow_fuse.operators.amend import FuseAmendOperator
from airflow_fuse.operators.scan import FuseScanOperator
from airflow_fuse.operators.shard import SHARD_NAME, FuseMergeReportsOperator, FuseShardOperator
from airflow_fuse.operators.verify import FuseVerifyOperator
from airflow_fuse.plan import PlanRows
from airflow_fuse.report import human_bytes
from airflow_fuse.sensors.versioning import VersioningSensor
from airflow_fuse.shards import DEFAULT_SHARD_KEYS

log = logging.getLogger(__name__)

DAG_ID = "fuse_failsafe_runbook"
OPS_VARIABLE = "airflow_fuse_ops_location"
CONN_IDS_VARIABLE = "airflow_fuse_aws_conn_ids"
SHARD_KEYS_VARIABLE = "airflow_fuse_shard_keys"
APPROVAL_TIMEOUT = timedelta(hours=12)
FIRST_KEYS = 5  # keys of each kind shown in the approval
# s3://bucket/prefix/, or a Databend table by name: database.table (as SYSTEM$FUSE_AMEND('db', 't') names it)
TABLE_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+|[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*)$"
INVENTORY_PATTERN = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+\.json$"
OPS_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.+)$"


def _variable(name: str, *, deserialize_json: bool = False) -> Any:
    """An Airflow Variable read while the file is parsed; ``None`` when unset or unreadable (the DAG still loads)."""
    try:
        return Variable.get(name, default=None, deserialize_json=deserialize_json)
    except Exception as exc:  # a metadata DB or secrets backend not reachable at parse time
        log.warning("Variable %s could not be read (%s); using the default", name, type(exc).__name__)
        return None


def _allowed_conn_ids() -> list[str]:
    ids = _variable(CONN_IDS_VARIABLE, deserialize_json=True)
    if isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids):
        return list(dict.fromkeys(ids))
    if ids is not None:
        log.warning("Variable %s must be a non-empty JSON list of connection ids; using [\"aws_default\"]",
                    CONN_IDS_VARIABLE)
    return ["aws_default"]


def run_dir(ops_location: str, dag_id: str, run_id: str) -> str:
    """Where this run keeps its plan and report: ``<ops_location>/<dag_id>/<run_id>`` (``file://`` → a path)."""
    base = ops_location.strip().rstrip("/")
    if base.startswith("file://"):
        base = base[len("file://"):]
    return f"{base}/{dag_id}/{run_id}"


def _shard_keys() -> int:
    keys = _variable(SHARD_KEYS_VARIABLE)
    try:
        return max(1, int(keys)) if keys is not None else DEFAULT_SHARD_KEYS
    except ValueError:
        log.warning("Variable %s must be a whole number of keys; using %d", SHARD_KEYS_VARIABLE, DEFAULT_SHARD_KEYS)
        return DEFAULT_SHARD_KEYS


CONN_IDS = _allowed_conn_ids()
SHARD_KEYS = _shard_keys()
_ops_default = _variable(OPS_VARIABLE)
OPS_DEFAULT = _ops_default if isinstance(_ops_default, str) and re.fullmatch(OPS_PATTERN, _ops_default) else None

def is_location(table: str) -> bool:
    return table.startswith("s3://")


def table_bucket(params: dict[str, Any]) -> str:
    """The bucket of the table: from its location, or (a Databend table by name) from Databend's catalogue."""
    table = params["table"]
    if is_location(table):
        return table.split("/")[2]
    from airflow.sdk import BaseHook

    from airflow_fuse import databend

    if not params.get("databend_conn_id"):
        raise AirflowFailException(f"{table} names a Databend table: choose the Databend connection (the form's "
                                   "Connection and storage section)")
    database, name = table.split(".", 1)
    connection = BaseHook.get_connection(params["databend_conn_id"])
    cursor = connection.get_hook().get_conn().cursor()
    storage_root = (connection.extra_dejson or {}).get("storage_root")
    return databend.resolve(cursor, database, name, storage_root=storage_root).bucket


BUCKET = "{{ table_bucket(params) }}"
AWS_CONN = "{{ params.aws_conn_id or default_aws_conn_id }}"  # a cleared field means the first allowed
RUN_DIR = "{{ run_dir(params.ops_location, dag.dag_id, run_id) }}"
# Rendered as strings (a bucket or connection id made of digits must stay a string); an empty optional
# param renders as "" and the operators treat "" as not given. Booleans and numbers: _typed_params.
SCAN_ARGS = {
    # a location as it is; a Databend name database.table as database= and table= (resolved by the operators)
    "table": "{{ params.table if is_location(params.table) else params.table.split('.', 1)[1] }}",
    "database": "{{ '' if is_location(params.table) else params.table.split('.', 1)[0] }}",
    "databend_conn_id": "{{ params.databend_conn_id or '' }}",
    "table_format": "{{ params.table_format or 'auto' }}",
    "snapshot_location": "{{ params.snapshot_location or '' }}",
    "as_of": "{{ params.as_of or '' }}",
    "deleted_since": "{{ params.deleted_since or '' }}",
    "deleted_before": "{{ params.deleted_before or '' }}",
    "aws_conn_id": AWS_CONN,
}


def _typed_params(context: Any) -> None:
    """Give the task the form's booleans and numbers as they are (a rendered template is always a string)."""
    task_, params = context["task"], context["params"]
    task_.include_history = bool(params.get("include_history"))
    if isinstance(task_, FuseVerifyOperator):
        expected = params.get("expect_row_count")
        task_.expect = {} if expected is None else {"row_count": int(expected)}


# the approval ------------------------------------------------------------------------------------

def _keys(rows: PlanRows, mask: Any, *, with_reason: bool = False) -> tuple[int, int, list[str]]:
    """How many rows ``mask`` selects, their bytes, and the approval's lines for the first few of them."""
    import pyarrow.compute as pc

    picked = pc.indices_nonzero(mask.combine_chunks() if hasattr(mask, "combine_chunks") else mask)
    count = len(picked)
    size = int(pc.sum(rows.column("size").take(picked)).as_py() or 0) if count else 0
    lines = []
    for item in PlanRows(rows.table.take(picked[:FIRST_KEYS])):
        detail = f": {item.reason}" if with_reason and item.reason else \
            (f" ← version `{item.version_id}` ({human_bytes(item.size)})" if item.version_id else "")
        lines.append(f"- `{item.key}`{detail}")
    if count > FIRST_KEYS:
        lines.append(f"- … and {count - FIRST_KEYS} more (in the plan)")
    return count, size, lines


def plan_markdown(summary: dict[str, Any], items: Sequence[Any] | None) -> str:
    """The approval's body: what the plan will do, from the scan's summary and the saved plan's rows.

    The rows are counted and summed on the plan's Arrow columns: a plan of millions of keys makes objects only
    of the few keys shown."""
    import pyarrow as pa
    import pyarrow.compute as pc

    digest = summary.get("plan_digest") or summary.get("digest")
    lines = [f"**Table** `{summary['table']}` ({summary['table_format']}), listed at {summary.get('listed_at')}: "
             f"{summary['keys_listed']} keys, {summary['versions_listed']} versions and delete markers.", ""]
    groups: list[tuple[str, int, list[str]]] = []
    if items is None:
        lines += [f"- to restore: **{summary['restore']}**, damaged: **{summary['damaged']}**, "
                  f"unrecoverable: **{summary['unrecoverable']}** ({human_bytes(summary['bytes_to_restore'])})", ""]
    else:
        rows = items if isinstance(items, PlanRows) else PlanRows.from_items(items)
        status = rows.column("status")
        action = rows.column("action")

        def where(wanted_status: str, wanted_action: str | None = None) -> Any:
            mask = pc.equal(status, pa.scalar(wanted_status))
            if wanted_action is not None:
                mask = pc.and_(mask, pc.equal(action, pa.scalar(wanted_action)))
            return pc.fill_null(mask, False)

        n_undelete, b_undelete, undelete = _keys(rows, where("restore", "undelete"))
        n_copy, b_copy, copy = _keys(rows, where("restore", "copy"))
        n_damaged, b_damaged, damaged = _keys(rows, where("damaged"), with_reason=True)
        n_lost, _, lost = _keys(rows, where("unrecoverable"), with_reason=True)
        present = int(pc.sum(where("present")).as_py() or 0) if len(rows) else 0
        lines += ["| action | objects | bytes |", "|---|---:|---:|",
                  f"| undelete (remove the delete markers above a version) | {n_undelete} | "
                  f"{human_bytes(b_undelete)} |",
                  f"| copy an older version back | {n_copy} | {human_bytes(b_copy)} |",
                  f"| damaged: replace with an older version | {n_damaged} | {human_bytes(b_damaged)} |",
                  f"| **unrecoverable** (no version to bring back) | {n_lost} | – |",
                  f"| present, left alone | {present} | – |",
                  f"| **total written** | {n_undelete + n_copy + n_damaged} | "
                  f"{human_bytes(summary['bytes_to_restore'])} |", ""]
        groups = [("Unrecoverable (the run will fail listing them after restoring the rest)", n_lost, lost),
                  ("To undelete", n_undelete, undelete), ("To copy back", n_copy, copy),
                  ("Damaged", n_damaged, damaged)]
    for title, count, keys in groups:
        if count:
            lines += [f"**{title}** — {count}:", *keys, ""]
    lines += [f"**Plan** `{summary.get('plan')}`", "",
              f"**Plan digest** `{digest}`" if digest else "**Plan digest** not reported by this version", "",
              "**Approve** applies exactly this plan: each key is re-checked against a fresh listing first and a key "
              "changed since the scan is left alone; no version holding data is deleted. **Reject** ends the run "
              "with nothing written."]
    return "\n".join(lines)


class PlanApprovalOperator(ApprovalOperator):
    """Ask the on-call to approve the scan's saved plan; its summary (from the scan's XCom and the plan) is the body.

    Reject: the restore is skipped and the log says nothing was written. No answer in time: the task fails
    saying so (nothing written).
    """

    template_fields = (*ApprovalOperator.template_fields, "aws_conn_id")

    def __init__(self, *, scan_task_id: str, aws_conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scan_task_id = scan_task_id
        self.aws_conn_id = aws_conn_id

    def _plan_items(self, location: str | None) -> Sequence[Any] | None:
        if not location:
            return None
        from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
        from airflow_fuse.plan import load_plan

        client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn() if location.startswith("s3://") else None
        return load_plan(location, client=client).items

    def execute(self, context: Any) -> Any:
        summary = context["ti"].xcom_pull(task_ids=self.scan_task_id)
        actionable = summary["restore"] + summary["damaged"]
        self.subject = (f"Restore {actionable} objects ({human_bytes(summary['bytes_to_restore'])}) "
                        f"of {summary['table']}?")
        self.body = plan_markdown(summary, self._plan_items(summary.get("plan")))
        self.log.info("Asking for approval of the plan %s:\n%s", summary.get("plan"), self.body)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        user = (event.get("responded_by_user") or {}).get("name") or "(no one: the default on timeout)"
        if "error" not in event and event.get("chosen_options") == [self.REJECT]:
            # said first: on Reject the base class ends this task by skipping the restore
            self.log.warning("REJECTED by %s: nothing written; the plan was not applied", user)
        result = super().execute_complete(context, event)
        if result["chosen_options"] == [self.APPROVE]:
            self.log.info("APPROVED by %s: the plan will be applied", user)
        return result

    def process_trigger_event_error(self, event: dict[str, Any]) -> None:
        if event.get("error_type") == "timeout":
            raise AirflowFailException(
                f"No answer to the approval within {self.response_timeout}: nothing written; the plan was not "
                "applied. Trigger the run book again to scan and review a fresh plan")
        super().process_trigger_event_error(event)


# the DAG -----------------------------------------------------------------------------------------

_ops_param: dict[str, Any] = {"default": OPS_DEFAULT} if OPS_DEFAULT else {}

with DAG(
    dag_id=DAG_ID,
    dag_display_name="Fuse fail-safe: restore a table",
    description="Restore a table's deleted objects from older versions in a versioned S3 bucket, after approval",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["fuse", "fail-safe", "s3"],
    user_defined_macros={"run_dir": run_dir, "is_location": is_location, "table_bucket": table_bucket,
                         "default_aws_conn_id": CONN_IDS[0]},
    params={
        "table": Param(type="string", pattern=TABLE_PATTERN, title="Table location",
                       description="Where the table's objects are: s3://<bucket>/<prefix>/ (a lower-case bucket "
                                   "name, then the prefix). For Databend, the location given to CREATE TABLE, or "
                                   "the table root …/<db_id>/<table_id>/ — or the table by name, database.table, "
                                   "with the Databend connection below (Connection and storage)."),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="On: scan and save the plan only; nothing is written. Off: restore."),
        "require_approval": Param(True, type="boolean", title="Require approval",
                                  description="On: the plan waits for Approve under Required actions before anything "
                                              "is written. Off (automation only): restore without asking."),
        # Enums take None too: a field cleared in the form means its default, not a "Bad Request".
        "table_format": Param("auto", type=["null", "string"], enum=[*formats.names(), None],
                              values_display=formats.titles(), title="Table format", section="Table",
                              description="How to find the objects the table needs. Detect (or empty) recognises "
                                          "Databend Fuse, Iceberg and Delta tables; Every object under the prefix "
                                          "is the fallback."),
        "snapshot_location": Param(None, type=["null", "string"], title="Snapshot location", section="Table",
                                   description="Databend only: SNAPSHOT_LOCATION from SHOW CREATE TABLE. "
                                               "Empty: the table's hint file."),
        "inventory_manifest": Param(None, type=["null", "string"], pattern=INVENTORY_PATTERN,
                                    title="S3 Inventory manifest", section="Table",
                                    description="For buckets of millions of objects: read the table's versions "
                                                "from this S3 Inventory report (s3://…/manifest.json of an "
                                                "inventory with all versions) instead of listing them. Every key "
                                                "is still re-checked by a listing before it is written; the plan "
                                                "says how old the inventory was. Empty: list the table."),
        "include_history": Param(False, type="boolean", title="Include history", section="Table",
                                 description="Databend only: also restore the chain of previous snapshots "
                                             "(time travel), not only the current one."),
        "as_of": Param(None, type=["null", "string"], format="date-time", title="As of", section="Time window",
                       description="Prefix tables: bring keys back to the versions current at this time."),
        "deleted_since": Param(None, type=["null", "string"], format="date-time", title="Deleted since",
                               section="Time window",
                               description="Prefix tables: only deletions at or after this time count "
                                           "(the incident's start)."),
        "deleted_before": Param(None, type=["null", "string"], format="date-time", title="Deleted before",
                                section="Time window",
                                description="Prefix tables: only deletions before this time count "
                                            "(the incident's end)."),
        "strategy": Param("auto", type=["null", "string"], enum=["auto", "undelete", "copy", None],
                          title="Restore strategy", section="Restore",
                          values_display={"auto": "Remove delete markers; copy only where needed",
                                          "undelete": "Remove delete markers only",
                                          "copy": "Copy each version back as a new version"},
                          description="How each object comes back (empty: the first). Removing delete markers "
                                      "writes no data."),
        "expect_row_count": Param(None, type=["null", "integer"], minimum=0, title="Expected row count",
                                  section="Restore",
                                  description="Verification fails unless the table has exactly this many rows."),
        "shard_keys": Param(SHARD_KEYS, type="integer", minimum=1, title="Keys per shard", section="Restore",
                            description="A plan with more keys to restore than this is cut by key range into shards "
                                        "applied side by side by the executor's workers (one mapped amend task "
                                        f"each); default: the Variable {SHARD_KEYS_VARIABLE}, else "
                                        f"{DEFAULT_SHARD_KEYS}."),
        "aws_conn_id": Param(CONN_IDS[0], type=["null", "string"], enum=[*CONN_IDS, None], title="AWS connection",
                             section="Connection and storage",
                             description=f"Airflow connection with the credentials (and endpoint_url for an "
                                         f"S3-compatible server). The choices are the Variable {CONN_IDS_VARIABLE}; "
                                         f"empty: {CONN_IDS[0]}."),
        "databend_conn_id": Param(None, type=["null", "string"], title="Databend connection",
                                  section="Connection and storage",
                                  description="For a table named database.table: the Airflow SQL connection to "
                                              "Databend. Its catalogue says where the table is and counts the rows "
                                              "after the restore (storage_root in its extra for tables without a "
                                              "LOCATION)."),
        "ops_location": Param(**_ops_param, type="string", pattern=OPS_PATTERN, title="Operations location",
                              section="Connection and storage",
                              description=f"Where the plan and the report are kept (s3://bucket/prefix/ or "
                                          f"file:///path/), outside the table; default: the Variable "
                                          f"{OPS_VARIABLE}."),
    },
) as dag:
    versioning = VersioningSensor(task_id="versioning", bucket_name=BUCKET, aws_conn_id=AWS_CONN,
                                  poke_interval=30, timeout=300, mode="reschedule")
    scan = FuseScanOperator(task_id="scan", plan_uri=f"{RUN_DIR}/plan.parquet", pre_execute=_typed_params,
                            inventory_manifest="{{ params.inventory_manifest or '' }}", **SCAN_ARGS)

    @task.branch(task_id="route")
    def route(summary: dict[str, Any], params: dict[str, Any] | None = None) -> str | None:
        """A dry run stops here; otherwise to the approval, or straight to the restore when none is required."""
        params = params or {}
        actionable = summary["restore"] + summary["damaged"]
        if params.get("dry_run", True):
            log.info("DRY RUN: nothing written; %d objects would be restored (%s, %d unrecoverable). Plan: %s",
                     actionable, human_bytes(summary["bytes_to_restore"]), summary["unrecoverable"], summary["plan"])
            return None
        if params.get("require_approval", True):
            return "approval"
        log.info("require_approval is off: applying the plan %s without asking", summary["plan"])
        return "shard"

    approval = PlanApprovalOperator(task_id="approval", scan_task_id="scan", aws_conn_id=AWS_CONN,
                                    subject="Restore the table?", response_timeout=APPROVAL_TIMEOUT)
    # THAT plan: the scan's, pinned by its digest (a plan changed since the review is refused, nothing written),
    # cut into shards above shard_keys keys to restore; each shard is pinned by its own digest.
    plan = "{{ ti.xcom_pull(task_ids='scan')['plan'] }}"
    digest = "{{ ti.xcom_pull(task_ids='scan')['plan_digest'] }}"
    shard = FuseShardOperator(task_id="shard", plan=plan, plan_digest=digest, shard_keys="{{ params.shard_keys }}",
                              report_uri=f"{RUN_DIR}/report.parquet", aws_conn_id=AWS_CONN,
                              trigger_rule="none_failed_min_one_success")
    amend = FuseAmendOperator.partial(task_id="amend", strategy="{{ params.strategy or 'auto' }}",
                                      aws_conn_id=AWS_CONN, map_index_template=SHARD_NAME,
                                      ).expand_kwargs(shard.output)
    # every shard done (restored or failed; not skipped): one report, the run fails if a shard did
    report = FuseMergeReportsOperator(task_id="report", shards=shard.output, plan=plan, plan_digest=digest,
                                      report_uri=f"{RUN_DIR}/report.parquet", aws_conn_id=AWS_CONN,
                                      trigger_rule="none_skipped")
    verify = FuseVerifyOperator(task_id="verify", pre_execute=_typed_params, **SCAN_ARGS)

    routed = route(scan.output)
    versioning >> scan
    routed >> approval >> shard
    routed >> shard >> amend >> report >> verify
