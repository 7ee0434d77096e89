"""Verification: SQL mode on a real DB-API connection, and the pyarrow checks' messages."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pytest

from airflow_fuse.errors import BadInputError
from airflow_fuse.verify import aggregate, verify_sql, verify_table
from tests.fuse_fixtures import load_expect, replay


def _cursor():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row{i}") for i in range(3000)])
    return conn.cursor()


def test_sql_mode_compares_the_first_row_by_name_and_position():
    sql = "SELECT count(*) AS row_count, sum(a) AS total, max(b) AS top FROM t"
    ok = verify_sql(_cursor(), sql, {"row_count": 3000, "TOTAL": 4498500, "top": "row999"})
    assert ok.ok, ok.problems
    assert verify_sql(_cursor(), sql, [3000, 4498500]).ok
    bad = verify_sql(_cursor(), sql, {"row_count": 3001, "nope": 1})
    assert not bad.ok
    assert "row_count: expected 3001, got 3000" in bad.problems
    assert any("no column 'nope'" in p for p in bad.problems)


def test_aggregates_name_unknown_columns_and_expressions():
    table = pa.table({"a": [1, 2, None], "b": pa.array(["x", "y", "z"], type=pa.string_view())})
    assert aggregate(table, "count(a)") == 2 and aggregate(table, "sum(a)") == 3
    assert aggregate(table, "max(b)") == "z" and aggregate(table, "row_count") == 3
    with pytest.raises(BadInputError, match="no column 'c'"):
        aggregate(table, "min(c)")
    with pytest.raises(BadInputError, match="not row_count or"):
        aggregate(table, "avg(a)")


def test_pyarrow_mode_names_the_block_whose_rows_do_not_match(s3, bucket):
    replay(s3, bucket, "fuse_basic")
    expect = load_expect("fuse_basic")
    table = f"s3://{bucket}/{expect['storage_root']}"
    result = verify_table(s3, table, expect={"row_count": expect["row_count"], "sum(a)": 4498500, "max(b)": "row999"})
    assert result.ok, result.problems
    assert result.total_rows == expect["row_count"] == result.expected_rows
    wrong = verify_table(s3, table, expect={"sum(a)": 1})
    assert wrong.problems == ["sum(a): expected 1, got 4498500"]
    # a block replaced by another valid Parquet file with fewer rows (same size is not required)
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), sink)
    s3.put_object(Bucket=bucket, Key=expect["blocks"][0]["key"], Body=sink.getvalue())
    damaged = verify_table(s3, table)
    assert not damaged.ok
    assert any(expect["blocks"][0]["key"] in p for p in damaged.problems)
