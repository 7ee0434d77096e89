"""A Databend table named as ``CALL SYSTEM$FUSE_AMEND('db', 't')`` names it, resolved through Databend itself.

Databend's own catalogue says where the table lives: ``system.databases`` and ``system.tables`` give the database
and table ids (the table root is ``<storage root>/<database id>/<table id>/``) and the row count;
``SHOW CREATE TABLE`` gives the external location (``LOCATION = 's3 | bucket=…,root=…'``), and the meta service
the current snapshot (``table_option``'s ``SNAPSHOT_LOCATION`` where the build exposes it, else
``fuse_snapshot()``): the authoritative snapshot, even when the hint file was deleted. Any DB-API cursor works
(the official ``databend-driver``, an Airflow SQL hook's connection). Nothing here writes to Databend.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from airflow_fuse.errors import BadInputError, PreconditionError
from airflow_fuse.location import check_bucket_name

log = logging.getLogger(__name__)

_LOCATION_RE = re.compile(r"LOCATION\s*=\s*'s3\s*\|\s*([^']*)'", re.IGNORECASE)
_SNAPSHOT_OPTION_RE = re.compile(r"SNAPSHOT_LOCATION\s*=\s*'([^']+)'", re.IGNORECASE)
_SNAPSHOT_PATH_RE = re.compile(r"^\d+/\d+/_ss/[^/]+$")


@dataclass(frozen=True)
class DatabendTable:
    """Where a Databend table's objects are, and what its catalogue says of it."""

    database: str
    name: str
    database_id: int
    table_id: int
    bucket: str
    root: str  # the storage root: a key prefix ending in "/", or ""
    num_rows: int | None = None
    snapshot_location: str | None = None  # relative to the storage root: "<db id>/<table id>/_ss/…"
    snapshot_source: str = ""

    @property
    def table_prefix(self) -> str:
        return f"{self.database_id}/{self.table_id}"

    @property
    def location(self) -> str:
        """The table root, ``s3://bucket/<root><db id>/<table id>/``."""
        return f"s3://{self.bucket}/{self.root}{self.table_prefix}/"

    @property
    def sql_name(self) -> str:
        return f"{quote_identifier(self.database)}.{quote_identifier(self.name)}"

    def count_query(self) -> str:
        return f"SELECT count(*) FROM {self.sql_name}"


def quote_identifier(name: str) -> str:
    if not name or "\x00" in name:
        raise BadInputError(f"{name!r} is not a Databend database or table name")
    return "`" + name.replace("`", "``") + "`"


def quote_literal(value: str) -> str:
    if "\x00" in value:
        raise BadInputError(f"{value!r} is not a Databend database or table name")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _rows(cursor: Any, sql: str) -> list[tuple]:
    cursor.execute(sql)
    rows = cursor.fetchall() or []
    # databend-driver returns Row objects (``row.values()``); DB-API drivers return tuples
    return [tuple(row.values()) if hasattr(row, "values") and not isinstance(row, (tuple, list)) else tuple(row)
            for row in rows]


def _one(cursor: Any, sql: str, what: str) -> tuple:
    rows = _rows(cursor, sql)
    if not rows:
        raise BadInputError(what)
    return rows[0]


def parse_storage_root(uri: str) -> tuple[str, str]:
    """``s3://bucket/root/`` → (bucket, "root/")."""
    if not uri.startswith("s3://"):
        raise BadInputError(f"storage_root {uri!r} is not an s3:// URI: give the Databend deployment's storage "
                            "root as s3://BUCKET/ROOT/ ([storage.s3] bucket and root in databend-query.toml)")
    bucket, _, root = uri[5:].partition("/")
    check_bucket_name(bucket)
    root = root.strip("/")
    return bucket, f"{root}/" if root else ""


def parse_location(create_table: str) -> tuple[str, str] | None:
    """The (bucket, root) of ``LOCATION = 's3 | bucket=…,root=…,endpoint=…'`` in SHOW CREATE TABLE, if any."""
    match = _LOCATION_RE.search(create_table)
    if match is None:
        return None
    fields = dict(part.split("=", 1) for part in match.group(1).split(",") if "=" in part)
    bucket = fields.get("bucket", "").strip()
    if not bucket:
        return None
    root = fields.get("root", "").strip().strip("/")
    return bucket, f"{root}/" if root else ""


def resolve(cursor: Any, database: str, table: str, *, storage_root: str | None = None) -> DatabendTable:
    """The table ``database.table`` as Databend's catalogue describes it (read-only queries)."""
    db_literal, table_literal = quote_literal(database), quote_literal(table)
    try:
        (database_id,) = _one(cursor, f"SELECT database_id FROM system.databases WHERE name = {db_literal}",
                              f"Databend has no database {database!r}: check the name (SHOW DATABASES)")
        table_id, num_rows = _one(
            cursor, f"SELECT table_id, num_rows FROM system.tables WHERE database = {db_literal} "
                    f"AND name = {table_literal}",
            f"Databend has no table {table!r} in database {database!r}: check the name (SHOW TABLES FROM "
            f"{database})")
        create = str(_one(cursor, f"SHOW CREATE TABLE {quote_identifier(database)}.{quote_identifier(table)}",
                          f"SHOW CREATE TABLE {database}.{table} returned nothing")[-1])
    except BadInputError:
        raise
    except Exception as exc:  # the driver's own error types
        raise PreconditionError(f"cannot read Databend's catalogue for {database}.{table}: {exc}; check the "
                                "connection (host, user, password) and that the user may read system tables") from None
    located = parse_location(create)
    if located is None:
        if not storage_root:
            raise BadInputError(
                f"{database}.{table} is in the deployment's default storage, whose bucket and root Databend does "
                "not tell a client: give storage_root=s3://BUCKET/ROOT/ (--storage-root; the [storage.s3] bucket "
                "and root of databend-query.toml), or put storage_root in the connection's extra")
        located = parse_storage_root(storage_root)
    bucket, root = located
    snapshot, source = _snapshot_location(cursor, database, table, create)
    return DatabendTable(database=database, name=table, database_id=int(database_id), table_id=int(table_id),
                         bucket=bucket, root=root, num_rows=None if num_rows is None else int(num_rows),
                         snapshot_location=snapshot, snapshot_source=source)


def _snapshot_location(cursor: Any, database: str, table: str, create: str) -> tuple[str | None, str]:
    """The current snapshot from the meta service: table_option (newer builds), else fuse_snapshot()."""
    match = _SNAPSHOT_OPTION_RE.search(create)
    if match:
        return match.group(1), "SHOW CREATE TABLE"
    db_literal, table_literal = quote_literal(database), quote_literal(table)
    try:
        rows = _rows(cursor, f"SELECT table_option FROM system.tables WHERE database = {db_literal} "
                             f"AND name = {table_literal}")
        option = _SNAPSHOT_OPTION_RE.search(str(rows[0][0])) if rows and rows[0][0] else None
        if option:
            return option.group(1), "system.tables.table_option"
    except Exception:  # noqa: BLE001 - older builds have no table_option column
        log.debug("system.tables has no table_option here", exc_info=True)
    try:
        rows = _rows(cursor, f"SELECT snapshot_location FROM fuse_snapshot({db_literal}, {table_literal}) LIMIT 1")
        if rows and rows[0][0] and _SNAPSHOT_PATH_RE.match(str(rows[0][0])):
            return str(rows[0][0]), "fuse_snapshot()"
    except Exception as exc:  # noqa: BLE001 - the snapshot objects themselves may be the ones lost
        log.warning("Databend could not list the snapshots of %s.%s (%s): the scan finds the current snapshot "
                    "from the hint file or the listing", database, table, str(exc)[:200])
    return None, ""


def count_rows(cursor: Any, table: DatabendTable) -> int:
    """``SELECT count(*)`` through the same connection (the verification after a restore)."""
    (count,) = _one(cursor, table.count_query(), f"{table.count_query()} returned no row")
    return int(count)


def connect(dsn: str) -> Any:
    """A DB-API cursor on a Databend server (``databend://user:password@host:8000/?sslmode=disable``), through
    the official driver: ``pip install 'airflow-fuse[databend]'``."""
    try:
        from databend_driver import BlockingDatabendClient
    except ImportError:
        raise BadInputError("naming a table by database and table needs the databend-driver package: "
                            "pip install 'airflow-fuse[databend]'") from None
    return BlockingDatabendClient(dsn).cursor()
