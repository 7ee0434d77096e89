"""The end-to-end demo behind the README's first command: a real restore on the embedded S3 server.

1. start the embedded S3-compatible server (moto) on 127.0.0.1 and create a versioned bucket;
2. put a Databend table there (objects the real Databend engine wrote, from tests/fixtures);
3. delete everything under the table, as in Databend's fail-safe guide, and show that reading fails;
4. run the ``fuse_failsafe_runbook`` DAG with ``dag.test()``: a dry run, then the real restore;
5. print the report and the verification, and stop everything it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the demo runs from a checkout: its tables come from tests/ (fixtures and writers)
DEFAULT_FIXTURE = ROOT / "tests" / "fixtures" / "databend" / "fuse_purged"
CONN_ID = "fuse_demo"


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, text: str) -> None:
    say(f"\n== {n}. {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE, help="a Databend fixture directory")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # third-party noise in a demo
    home = Path(tempfile.mkdtemp(prefix="airflow-fuse-demo-"))
    os.environ.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/a.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING", "AWS_EC2_METADATA_DISABLED": "true",
    })
    started = time.monotonic()
    from airflow_fuse.embedded import start_moto

    step(1, "Starting the embedded S3-compatible server on 127.0.0.1")
    server = start_moto()
    try:
        return _run(server, args.fixture, started)
    finally:
        server.stop()
        say(f"\nStopped the embedded S3 server. Demo took {time.monotonic() - started:.0f} s.")


def _run(server: Any, fixture: Path, started: float) -> int:
    from airflow_fuse.verify import verify_table

    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = server.connection_json()
    # the run book's Variables: the connections its form offers, and where it keeps plans and reports
    os.environ["AIRFLOW_VAR_AIRFLOW_FUSE_AWS_CONN_IDS"] = json.dumps([CONN_ID])
    os.environ["AIRFLOW_VAR_AIRFLOW_FUSE_OPS_LOCATION"] = f"file://{Path(os.environ['AIRFLOW_HOME']) / 'ops'}/"
    client = server.client()
    bucket = "lake"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    say(f"   {server.endpoint_url}, bucket '{bucket}' with versioning Enabled")

    expect = json.loads((fixture / "expect.json").read_text())
    table = f"s3://{bucket}/{expect['storage_root']}"
    step(2, f"Putting a Databend table into {table} ({fixture.name}: written by {expect['engine'].split('(')[0]})")
    from tests.fuse_fixtures import history, replay

    replay(client, bucket, fixture)
    say(f"   replayed {len(history(fixture))} writes and deletes; the table has {expect['row_count']} rows in "
        f"{expect['block_count']} blocks; Databend itself garbage-collected {len(expect['deleted_by_databend'])} "
        "old objects (those must stay deleted)")
    healthy = verify_table(client, table)
    say(f"   reading it: {'OK' if healthy.ok else 'FAILED'}, {healthy.total_rows} rows")

    step(3, f"Simulating the loss: deleting every object under {expect['table_root']} (the guide's step 3)")
    keys = sorted({v["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=expect["table_root"]) for v in page.get("Contents", [])})
    client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    broken = verify_table(client, table)
    say(f"   deleted {len(keys)} objects; reading the table now: {'OK' if broken.ok else 'FAILED'} — "
        f"{len(broken.problems)} problems, e.g. {broken.problems[0][:110]}…")

    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.db import resetdb

    step(4, "Running the fuse_failsafe_runbook DAG, first as a dry run (writes nothing)")
    logging.getLogger().setLevel(logging.WARNING)
    resetdb()
    dag = DagBag(str(ROOT / "dags")).dags["fuse_failsafe_runbook"]
    conf = {"table": table, "aws_conn_id": CONN_ID, "expect_row_count": expect["row_count"]}
    run = dag.test(run_conf={**conf, "dry_run": True})
    scan = _xcom(run, "scan")
    say(f"   run {run.state}: {_states(run)}")
    say(f"   scan: {scan['keys_listed']} keys listed, {scan['needed']} needed by the current snapshot: "
        f"{scan['restore']} to restore ({scan['to_undelete']} by removing a delete marker, {scan['to_copy']} by "
        f"copy, {scan['bytes_to_restore']} bytes), {scan['unrecoverable']} unrecoverable; "
        f"{scan['requests_total']} S3 requests")

    step(5, "Running it again with dry_run = false (no approval step in a demo): restore, then verify")
    run = dag.test(run_conf={**conf, "dry_run": False, "require_approval": False})
    # amend is one mapped task per shard of the plan; report merges their reports into one summary
    amend, verify = _xcom(run, "report"), _xcom(run, "verify")
    say(f"   run {run.state}: {_states(run)}")
    if amend:
        say(f"   amend: restored {amend['restored']} objects ({amend['bytes_restored']} bytes): {amend['results']}; "
            f"{amend['remaining']} still missing; {amend['requests_total']} S3 requests in {amend['seconds']} s")
    if verify:
        say(f"   verify: {'OK' if verify['ok'] else 'FAILED'} — {verify['files_checked']} blocks read, "
            f"{verify['total_rows']} rows (snapshot says {verify['expected_rows']}), checks {verify['checks']}")
    deleted_by_databend_still_gone = all(
        _missing(client, bucket, k) for k in expect["deleted_by_databend"])
    say(f"   objects Databend garbage-collected are still deleted: {deleted_by_databend_still_gone}")

    from airflow_fuse.engine import scan_report

    step(6, "The report a second scan prints now")
    say(scan_report(client, table).render())
    ok = run.state == "success" and bool(verify and verify["ok"]) and deleted_by_databend_still_gone
    say("\nRESULT: " + ("the table is whole again." if ok else "the table is NOT whole: see above."))
    lakehouse_ok = _lakehouse_tables(server, client, bucket)
    return 0 if ok and lakehouse_ok else 1


def _lakehouse_tables(server: Any, client: Any, bucket: str) -> bool:
    """Step 7: an Iceberg and a Delta table, written by their own writers, lost and brought back the same way."""
    try:
        from tests.delta_tables import read_table, write_sales
        from tests.iceberg_tables import open_catalog, read_rows, table_root, write_appends
    except ImportError as exc:  # the writers are test dependencies
        say(f"\n== 7. Iceberg and Delta tables: skipped ({exc.name} is not installed: pip install -e '.[test]')")
        return True
    from airflow_fuse.engine import amend

    step(7, "The same fail-safe for an Iceberg table (pyiceberg) and a Delta table (deltalake)")
    catalog = open_catalog(server, bucket, Path(tempfile.mkdtemp(prefix="airflow-fuse-demo-")) / "catalog.db")
    write_appends(catalog, "events")
    iceberg_root = table_root(catalog.load_table("db.events"))
    write_sales(server, bucket, "lake/sales/")
    tables = {
        "iceberg": (iceberg_root, lambda: read_rows(catalog, "events")),
        "delta": ("lake/sales/", lambda: read_table(server, f"s3://{bucket}/lake/sales")),
    }
    ok = True
    for name, (root, read) in tables.items():
        before = read()
        keys = sorted({v["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root)
                       for v in page.get("Contents", [])})
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        report = amend(client, table=f"s3://{bucket}/{root}")
        summary = report.summary()
        after = read()
        same = after.equals(before)
        ok = ok and same and report.exit_status() == 0
        say(f"   {name} s3://{bucket}/{root}: {before.num_rows} rows; deleted {len(keys)} objects; amend (format "
            f"detected: {summary['table_format']}) restored {summary['restored']}, left {summary['skipped']} "
            f"deleted on purpose (history, pointer files); {name} reads {after.num_rows} rows back: "
            f"{'the same rows' if same else 'DIFFERENT ROWS'}")
    say("RESULT: " + ("the Iceberg and Delta tables are whole again." if ok else "NOT whole: see above."))
    return ok


def _missing(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except Exception:
        return True
    return False


def _xcom(run: Any, task_id: str) -> dict[str, Any]:
    for ti in run.get_task_instances():
        if ti.task_id == task_id and ti.state == "success":
            return ti.xcom_pull(task_ids=task_id) or {}
    return {}


def _states(run: Any) -> str:
    order = ["versioning", "scan", "route", "approval", "shard", "amend", "report", "verify"]
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}  # a mapped task: its last shard's
    return ", ".join(f"{t} {states.get(t)}" for t in order)


if __name__ == "__main__":
    sys.exit(main())
