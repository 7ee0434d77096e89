"""``FuseVerifyOperator``: the verification query — the table reads whole again."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any

from airflow.sdk import BaseHook, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_fuse.errors import FuseError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.operators.scan import FuseScanOperator, fail_with
from airflow_fuse.verify import verify_sql, verify_table


class FuseVerifyOperator(FuseScanOperator):
    """
    Check that the table reads whole: Parquet footers and row counts against the metadata (pyarrow, default),
    or a SQL query through any Airflow SQL connection compared with ``expect``.

    Returns the verification summary; fails naming the first mismatching file or check, expected and actual.
    The scan options of ``FuseScanOperator`` select the table in pyarrow mode.

    :param expect: pyarrow mode: ``{"row_count": N, "sum(a)": …, "min(b)": …, "max(b)": …, "count(c)": …}``;
        SQL mode: ``{column: value}`` or a list of values compared with the first row.
    :param full_read: pyarrow mode: read every data file in full, not just its footer.
    :param sql: Run this query instead (SQL mode), through ``conn_id``.
    :param conn_id: An Airflow connection whose hook is a common-sql ``DbApiHook`` (Databend, Trino, Postgres…).
    """

    template_fields: Sequence[str] = (*FuseScanOperator.template_fields, "sql", "conn_id", "expect")
    template_fields_renderers = {"sql": "sql", "expect": "json"}
    ui_color = "#e8f8e0"

    def __init__(self, *, table: str | None = None, expect: dict[str, Any] | list[Any] | None = None,
                 full_read: bool = False, sql: str | None = None, conn_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(table=table or "", **kwargs)
        if not sql and not table:
            raise ValueError("FuseVerifyOperator needs table= (pyarrow mode) or sql= with conn_id= (SQL mode)")
        self.expect = expect
        self.full_read = full_read
        self.sql = sql
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        expect = {k: v for k, v in (self.expect or {}).items() if v not in (None, "")} \
            if isinstance(self.expect, dict) else self.expect
        if self.sql:
            if not self.conn_id:
                raise AirflowFailException("sql= needs conn_id=: the Airflow connection to run it on")
            hook = BaseHook.get_connection(self.conn_id).get_hook()
            with closing(hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
                result = verify_sql(cursor, self.sql, expect)
        else:
            client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn()
            try:
                location, options, named = self.target()
                result = verify_table(client, location, options, full_read=self.full_read,
                                      expect=expect if isinstance(expect, dict) else None,
                                      conn_id=self.aws_conn_id, log=self.log.info)
            except FuseError as exc:
                raise fail_with(exc) from None
            if named is not None:  # the Databend table by name: Databend itself must count its rows too
                table, cursor = named
                sql = verify_sql(cursor, table.count_query(), [table.num_rows] if table.num_rows is not None else [])
                result.problems += sql.problems
                result.checks.update({f"databend {k}": v for k, v in sql.checks.items()})
        self.log.info("\n%s", result.render())
        if not result.ok:
            raise AirflowFailException(f"verification of {result.table} failed: {result.problems[0]}"
                                       + (f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1
                                          else ""))
        return result.summary()
