"""``FuseScanOperator``: the missing-object scan. Lists the table once, plans each key, writes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_fuse.engine import ScanOptions, scan_report
from airflow_fuse.errors import EXIT_OK, BadInputError, FuseError, PreconditionError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.progress import LogProgress


def fail_with(exc: FuseError) -> Exception:
    """Bad input and preconditions fail at once (retrying cannot help); the rest may be retried."""
    if isinstance(exc, (BadInputError, PreconditionError)):
        return AirflowFailException(str(exc))
    return exc


def _shards(value: Any) -> list[Any] | str | None:
    """Shards as the engine takes them: a location (str) or a list (XCom of mapped tasks is a lazy sequence)."""
    if not value:
        return None
    return value if isinstance(value, str) else list(value)


class FuseScanOperator(BaseOperator):
    """
    Find which objects a table needs, which are missing or damaged, and which version brings each back.

    Returns the plan summary (counts, bytes, the first unrecoverable keys, ``plan_digest``) and, with
    ``plan_uri``, where the full plan was saved (``plan``) for ``FuseAmendOperator(plan=..., plan_digest=...)``.

    :param table: The table location, ``s3://bucket/prefix/`` (templated).
    :param table_format: ``auto`` (detect), ``fuse`` (Databend) or ``prefix`` (every object under the prefix).
    :param as_of: Prefix tables: bring keys back to the versions current at this aware ISO 8601 time.
    :param deleted_since: Prefix tables: only delete markers created at or after this time count.
    :param deleted_before: Prefix tables: only delete markers created before this time count.
    :param rollback_overwrites: With ``as_of``, also roll back keys overwritten after it (never pointer files).
    :param rollback_keys: With ``as_of``, keys to roll back even if they are pointer files (hint files).
    :param table_prefix: Fuse: only this table (``<db_id>/<table_id>``) under the location.
    :param snapshot_location: Fuse: the current snapshot as ``SHOW CREATE TABLE`` prints it.
    :param include_history: Fuse: also restore the chain of previous snapshots (Delta: the older log; Iceberg:
        the metadata-log files).
    :param layout_options: Options of the table format (``airflow_fuse.formats``), e.g. Iceberg's
        ``{"metadata_location": "s3://…/00003-….metadata.json", "current_snapshot_only": true}``.
    :param inventory_manifest: Read the table's versions from this S3 Inventory report (``s3://…/manifest.json`` of
        an inventory with all versions, Parquet, ORC or CSV) instead of listing the table (templated). The plan
        says how old the inventory was; a restore re-checks every key with a listing before writing.
    :param inventory_shards: Read the table's versions from inventory shards instead of listing the table
        (templated): the output of ``FuseInventoryShardOperator.partial(...).expand(...)``, shard locations, or
        the folder they were written to.
    :param plan_uri: Save the plan here (``.json`` or ``.parquet``; local path or ``s3://``), outside the table.
    :param fail_on_unrecoverable: Fail the task when objects the table needs cannot be recovered.
    :param fail_on_missing: Fail the task when objects are missing or damaged (a monitoring scan that alerts;
        the command's exit status 4).
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoint.
    :param database: Databend: name the table as ``SYSTEM$FUSE_AMEND('db', 't')`` does — ``database=`` and
        ``table=`` (then the table's name, not a location), resolved through ``databend_conn_id``.
    :param databend_conn_id: Databend: an Airflow SQL connection whose hook gives a DB-API connection to Databend
        (its catalogue says where the table is, and verifies the restore with ``SELECT count(*)``).
    :param storage_root: Databend: the deployment's storage root ``s3://bucket/root/`` for tables without a
        LOCATION of their own (default: ``storage_root`` in the connection's extra).
    """

    template_fields: Sequence[str] = ("table", "table_format", "as_of", "deleted_since", "deleted_before",
                                      "layout_options", "database", "databend_conn_id", "storage_root",
                                      "table_prefix", "snapshot_location", "plan_uri", "aws_conn_id",
                                      "inventory_manifest", "inventory_shards")
    ui_color = "#e0ecf8"

    def __init__(
        self,
        *,
        table: str,
        table_format: str = "auto",
        as_of: str | None = None,
        deleted_since: str | None = None,
        deleted_before: str | None = None,
        rollback_overwrites: bool = False,
        rollback_keys: list[str] | None = None,
        table_prefix: str | None = None,
        snapshot_location: str | None = None,
        include_history: bool = False,
        layout_options: dict[str, Any] | None = None,
        plan_uri: str | None = None,
        fail_on_unrecoverable: bool = False,
        fail_on_missing: bool = False,
        aws_conn_id: str | None = "aws_default",
        database: str | None = None,
        databend_conn_id: str | None = None,
        storage_root: str | None = None,
        inventory_manifest: str | None = None,
        inventory_shards: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.inventory_manifest = inventory_manifest
        self.inventory_shards = inventory_shards
        self.database = database
        self.databend_conn_id = databend_conn_id
        self.storage_root = storage_root
        self.table_format = table_format
        self.as_of = as_of
        self.deleted_since = deleted_since
        self.deleted_before = deleted_before
        self.rollback_overwrites = rollback_overwrites
        self.rollback_keys = list(rollback_keys or [])
        self.table_prefix = table_prefix
        self.snapshot_location = snapshot_location
        self.include_history = include_history
        self.layout_options = dict(layout_options or {})
        self.plan_uri = plan_uri
        self.fail_on_unrecoverable = fail_on_unrecoverable
        self.fail_on_missing = fail_on_missing
        self.aws_conn_id = aws_conn_id

    def scan_options(self) -> ScanOptions:
        return ScanOptions(
            table_format=self.table_format or "auto", as_of=self.as_of or None,
            deleted_since=self.deleted_since or None, deleted_before=self.deleted_before or None,
            rollback_overwrites=self.rollback_overwrites, rollback_keys=self.rollback_keys,
            table_prefix=self.table_prefix or None,
            snapshot_location=self.snapshot_location or None, include_history=self.include_history,
            layout_options=self.layout_options,
            inventory_manifest=self.inventory_manifest or None,
            inventory_shards=_shards(self.inventory_shards),
        )

    def target(self) -> tuple[str, ScanOptions, Any]:
        """The table location and scan options; a Databend table named by ``database``/``table`` is resolved
        through ``databend_conn_id`` first (then the third item is ``(DatabendTable, cursor)``)."""
        options = self.scan_options()
        if not self.database:
            return self.table, options, None
        if not self.databend_conn_id:
            raise BadInputError("database= names a Databend table: give databend_conn_id= too (an Airflow SQL "
                                "connection to Databend)")
        from airflow.sdk import BaseHook

        from airflow_fuse import databend

        connection = BaseHook.get_connection(self.databend_conn_id)
        storage_root = self.storage_root or (connection.extra_dejson or {}).get("storage_root")
        cursor = connection.get_hook().get_conn().cursor()
        table = databend.resolve(cursor, self.database, self.table, storage_root=storage_root)
        self.log.info("Databend table %s.%s is %s (snapshot %s, from %s; %s rows)", self.database, self.table,
                      table.location, table.snapshot_location, table.snapshot_source or "the scan", table.num_rows)
        options.table_format = "fuse"
        options.snapshot_location = options.snapshot_location or table.snapshot_location
        return table.location, options, (table, cursor)

    def execute(self, context: Context) -> dict[str, Any]:
        client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        progress = LogProgress(self.log)
        try:
            location, options, _ = self.target()
            report = scan_report(client, location, options, conn_id=self.aws_conn_id,
                                 plan_uri=self.plan_uri or None, on_page=progress.page)
        except FuseError as exc:
            raise fail_with(exc) from None
        self.log.info("\n%s", report.render())
        summary = report.summary()
        if self.fail_on_unrecoverable and report.unrecoverable:
            raise AirflowFailException(
                f"{report.unrecoverable} objects {self.table} needs cannot be recovered: "
                + "; ".join(f"{u['key']}: {u['reason']}" for u in summary["first_unrecoverable"][:3]))
        if self.fail_on_missing and report.exit_status() != EXIT_OK:
            raise AirflowFailException(
                f"{summary['restore'] + summary['damaged'] + summary['unrecoverable']} objects {self.table} needs "
                f"are missing or damaged ({summary['restore']} to restore, {summary['damaged']} damaged, "
                f"{summary['unrecoverable']} unrecoverable): run the fuse_failsafe_runbook DAG or "
                "`airflow-fuse amend` to restore them")
        return summary
