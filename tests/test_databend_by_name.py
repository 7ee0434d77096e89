"""A Databend table named as FUSE_AMEND names it ('db', 't'), resolved by the real Databend engine, restored, and
read whole again by Databend itself — on each test server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from airflow_fuse import databend
from airflow_fuse.errors import BadInputError
from tests.conftest import ROOT, new_bucket


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: connections to it are refused


def test_a_table_named_by_database_and_table_is_restored_and_databend_reads_it(s3_server, s3, tmp_path):
    bucket = new_bucket(s3)
    proxy = f"http://127.0.0.1:{_closed_port()}"  # the engine's usage report goes nowhere
    env = dict(os.environ, HTTPS_PROXY=proxy, HTTP_PROXY=proxy, https_proxy=proxy, http_proxy=proxy,
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "tests.databend_scenario", s3_server.endpoint_url,
                           s3_server.access_key, s3_server.secret_key, bucket], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("SCENARIO ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    out = json.loads(lines[0][len("SCENARIO "):])
    rows = [[1, "Oslo"], [2, "Paris"], [3, "New York"]]
    assert out["before"] == rows
    resolved = out["resolved"]
    assert resolved["location"] == f"s3://{bucket}/warehouse/{resolved['table_prefix']}/"
    assert resolved["num_rows"] == 3
    assert resolved["snapshot_location"].startswith(resolved["table_prefix"] + "/_ss/")
    assert out["deleted"] > 0
    assert out["amend"]["exit_status"] == 0 and out["amend"]["restored"] > 0
    assert out["amend"]["tables"] == [f"warehouse/{resolved['table_prefix']}/"]
    assert out["count"] == 3 and out["after"] == rows  # Databend itself reads the table whole again


class _Cursor:
    """Answers the catalogue queries the way a Databend server does (for the parsing rules, no server)."""

    def __init__(self, create: str, snapshots: list[tuple] | Exception) -> None:
        self.create, self.snapshots, self._rows = create, snapshots, []

    def execute(self, sql: str) -> None:
        if "system.databases" in sql:
            self._rows = [(16,)] if "'sales'" in sql else []
        elif "table_option" in sql:
            raise RuntimeError("no such column table_option")
        elif "system.tables" in sql:
            self._rows = [(23, 3)] if "'orders'" in sql else []
        elif sql.startswith("SHOW CREATE TABLE"):
            self._rows = [("orders", self.create)]
        elif "fuse_snapshot" in sql:
            if isinstance(self.snapshots, Exception):
                raise self.snapshots
            self._rows = self.snapshots

    def fetchall(self) -> list[tuple]:
        return self._rows


def test_a_table_in_the_default_storage_needs_the_storage_root():
    cursor = _Cursor("CREATE TABLE orders (id INT) ENGINE=FUSE", RuntimeError("snapshot objects are gone"))
    with pytest.raises(BadInputError, match="storage_root=s3://BUCKET/ROOT/"):
        databend.resolve(cursor, "sales", "orders")
    table = databend.resolve(cursor, "sales", "orders", storage_root="s3://lake/databend/")
    assert table.location == "s3://lake/databend/16/23/" and table.snapshot_location is None  # found by the scan
    with pytest.raises(BadInputError, match="no database 'nope'"):
        databend.resolve(cursor, "nope", "orders")
    with pytest.raises(BadInputError, match="no table 'gone'"):
        databend.resolve(cursor, "sales", "gone")


def test_names_are_quoted_not_pasted():
    assert databend.quote_literal("o'brien") == "'o''brien'"
    assert databend.quote_identifier("we`ird") == "`we``ird`"
    located = databend.parse_location(
        "CREATE TABLE t (a INT) ENGINE=FUSE LOCATION = 's3 | bucket=lake,root=/wh/,endpoint=http://127.0.0.1:1'")
    assert located == ("lake", "wh/")


def test_the_operators_resolve_a_table_named_by_database_and_table(monkeypatch):
    """database= and table= with databend_conn_id: the connection's own cursor answers the catalogue queries."""
    from types import SimpleNamespace

    from airflow.sdk import BaseHook

    from airflow_fuse.operators.amend import FuseAmendOperator

    cursor = _Cursor("CREATE TABLE orders (id INT) ENGINE=FUSE LOCATION = 's3 | bucket=lake,root=/wh/'",
                     [("16/23/_ss/h0195a2c1e8c47b2e9c6a5b4d3e2f1a0b_v4.mpk",)])
    hook = SimpleNamespace(get_conn=lambda: SimpleNamespace(cursor=lambda: cursor))
    connection = SimpleNamespace(extra_dejson={}, get_hook=lambda: hook)
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(lambda cls, conn_id: connection))
    operator = FuseAmendOperator(task_id="amend", database="sales", table="orders", databend_conn_id="databend")
    location, options, (table, _) = operator.target()
    assert location == "s3://lake/wh/16/23/" and options.table_format == "fuse"
    assert options.snapshot_location == "16/23/_ss/h0195a2c1e8c47b2e9c6a5b4d3e2f1a0b_v4.mpk"
    assert table.num_rows == 3 and table.snapshot_source == "fuse_snapshot()"
    without = FuseAmendOperator(task_id="amend2", database="sales", table="orders")
    with pytest.raises(BadInputError, match="databend_conn_id"):
        without.target()


def test_the_runbook_form_takes_a_databend_table_by_name(monkeypatch):
    """The form's table is s3://bucket/prefix/ or database.table; a name is resolved through the chosen connection."""
    from types import SimpleNamespace

    import jinja2
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowFailException

    from tests.test_dags import _dag

    dag = _dag("fuse_failsafe_runbook")
    table = dag.params.get_param("table")
    assert table.resolve("sales.orders") == "sales.orders"
    assert table.resolve("s3://lake/t/") == "s3://lake/t/"
    with pytest.raises(Exception, match="does not match"):
        table.resolve("sales orders")
    cursor = _Cursor("CREATE TABLE orders (id INT) ENGINE=FUSE LOCATION = 's3 | bucket=lake,root=/wh/'", [])
    connection = SimpleNamespace(extra_dejson={}, get_hook=lambda: SimpleNamespace(
        get_conn=lambda: SimpleNamespace(cursor=lambda: cursor)))
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(lambda cls, conn_id: connection))
    macros = dag.user_defined_macros
    params = {"table": "sales.orders", "databend_conn_id": "databend"}
    assert macros["table_bucket"](params) == "lake"
    assert macros["table_bucket"]({"table": "s3://other/t/"}) == "other"
    with pytest.raises(AirflowFailException, match="Databend connection"):
        macros["table_bucket"]({"table": "sales.orders"})
    render = jinja2.Environment().from_string
    for field, expected in (("table", "orders"), ("database", "sales")):
        template = dag.get_task("verify").__dict__.get(field)
        assert render(template).render(params=params, **macros) == expected


def test_the_databend_hook_builds_the_driver_dsn_and_says_what_to_install(monkeypatch):
    from airflow_fuse.hooks.databend import DatabendHook

    monkeypatch.setenv("AIRFLOW_CONN_DATABEND_TEST", json.dumps(
        {"conn_type": "databend", "host": "databend.internal", "port": 8000, "login": "fuse",
         "password": "p@ss/word", "schema": "sales", "extra": {"sslmode": "enable"}}))
    hook = DatabendHook(databend_conn_id="databend_test")
    assert hook.dsn() == "databend://fuse:p%40ss%2Fword@databend.internal:8000/sales?sslmode=enable"
    import sys

    monkeypatch.setitem(sys.modules, "databend_driver", None)  # the optional extra not installed: import fails
    with pytest.raises(BadInputError, match=r"pip install 'airflow-fuse\[databend\]'"):
        hook.get_conn()
