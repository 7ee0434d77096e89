"""Run by tests/test_databend_by_name.py in its own process (the engine is process-global and reports usage at
start: the test sets the proxies). Databend writes a table into the test server, every object is deleted, the
table is resolved BY NAME through Databend's catalogue and restored, and Databend must read it whole again.
Prints one JSON object of what a user would check."""

from __future__ import annotations

import json
import sys

from airflow_fuse import databend
from airflow_fuse.embedded import S3Server
from airflow_fuse.engine import ScanOptions, amend
from tests.databend_engine import EmbeddedCursor


def main() -> None:
    endpoint, access_key, secret_key, bucket = sys.argv[1:5]
    server = S3Server("test", endpoint, access_key, secret_key)
    s3 = server.client()
    cursor = EmbeddedCursor()
    out: dict = {}
    connection = (f"CONNECTION=(endpoint_url='{endpoint}', access_key_id='{access_key}', "
                  f"secret_access_key='{secret_key}', region='us-east-1')")
    cursor.execute("CREATE DATABASE sales")
    cursor.execute(f"CREATE TABLE sales.orders (id INT, city STRING) 's3://{bucket}/warehouse/' {connection}")
    cursor.execute("INSERT INTO sales.orders VALUES (1, 'Oslo'), (2, 'Paris')")
    cursor.execute("INSERT INTO sales.orders VALUES (3, 'New York')")
    cursor.execute("SELECT id, city FROM sales.orders ORDER BY id")
    out["before"] = [list(r) for r in cursor.fetchall()]

    table = databend.resolve(cursor, "sales", "orders")
    out["resolved"] = {"location": table.location, "table_prefix": table.table_prefix, "num_rows": table.num_rows,
                       "snapshot_location": table.snapshot_location, "snapshot_source": table.snapshot_source}
    keys = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in page.get("Contents", []))
    out["deleted"] = len(keys)
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    try:
        cursor.execute("SELECT id, city FROM sales.orders ORDER BY id")
        out["broken_read"] = "read"
    except Exception as exc:  # noqa: BLE001 - what Databend says about the lost objects
        out["broken_read"] = f"failed: {str(exc)[:120]}"

    report = amend(s3, table=table.location,
                   scan_options=ScanOptions(table_format="fuse", snapshot_location=table.snapshot_location))
    summary = report.summary()
    out["amend"] = {"exit_status": report.exit_status(), "restored": summary["restored"],
                    "results": summary["results"], "tables": [t["table_root"] for t in summary["tables"]]}
    out["count"] = databend.count_rows(cursor, table)
    cursor.execute("SELECT id, city FROM sales.orders ORDER BY id")
    out["after"] = [list(r) for r in cursor.fetchall()]
    print("SCENARIO " + json.dumps(out, default=str))


if __name__ == "__main__":
    main()
