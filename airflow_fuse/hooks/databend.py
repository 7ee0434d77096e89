"""``DatabendHook``: a DB-API connection to a Databend server through the official ``databend-driver``.

For naming a table as ``SYSTEM$FUSE_AMEND('db', 't')`` does (``databend_conn_id=``) and for SQL verification.
Needs the optional extra: ``pip install 'airflow-fuse[databend]'``. Any other Airflow SQL connection whose hook
gives a DB-API connection to Databend works as well.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from airflow.providers.common.sql.hooks.sql import DbApiHook


class _Connection:
    """What DbApiHook expects of a connection, over the driver's client (queries are autocommitted)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def cursor(self) -> Any:
        return self.client.cursor()

    def commit(self) -> None:
        """Databend commits each statement."""

    def close(self) -> None:
        """The driver's client holds no open session."""


class DatabendHook(DbApiHook):
    """
    A Databend server over its HTTP handler (``databend://user:password@host:8000/database?sslmode=…``).

    Connection fields: host, port (8000), login, password, schema (the database, ``default``); extra:
    ``sslmode`` (``disable`` by default; ``enable`` for TLS), ``storage_root`` (``s3://bucket/root/`` of the
    deployment's default storage, for tables without a LOCATION of their own).

    :param databend_conn_id: The Airflow connection to Databend.
    """

    conn_name_attr = "databend_conn_id"
    default_conn_name = "databend_default"
    conn_type = "databend"
    hook_name = "Databend (airflow-fuse)"
    supports_autocommit = False

    def dsn(self) -> str:
        """The driver's DSN for the connection (the password URL-quoted; never logged)."""
        conn = self.get_connection(self.get_conn_id())
        extra = conn.extra_dejson or {}
        user = quote(conn.login or "root", safe="")
        password = quote(conn.password or "", safe="")
        database = quote(conn.schema or "default", safe="")
        query = urlencode({"sslmode": extra.get("sslmode", "disable")})
        return f"databend://{user}:{password}@{conn.host or 'localhost'}:{conn.port or 8000}/{database}?{query}"

    def get_conn(self) -> _Connection:
        try:
            from databend_driver import BlockingDatabendClient
        except ImportError:
            from airflow_fuse.errors import BadInputError

            raise BadInputError("the Databend connection needs the databend-driver package: "
                                "pip install 'airflow-fuse[databend]'") from None
        return _Connection(BlockingDatabendClient(self.dsn()))
