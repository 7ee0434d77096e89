"""The example DAGs, run with dag.test() against the real servers on Databend tables broken as in the seed."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DAGS_FOLDER, new_bucket, run_dag
from tests.fuse_fixtures import assert_restored, broken_table, load_expect, replay
from tests.helpers import all_versions, delete_keys, put_objects, read


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_FOLDER))
    assert not bag.import_errors
    return bag.dags[dag_id]


def test_every_example_dag_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert {"fuse_failsafe_runbook", "fuse_periodic_amend"} <= set(bag.dags)
    runbook = bag.dags["fuse_failsafe_runbook"]
    assert runbook.doc_md and "dry run" in runbook.doc_md.lower()
    assert runbook.params["dry_run"] is True  # a first run only shows the plan


def _broken_fuse_table(s3, name: str) -> tuple[str, dict]:
    bucket, expect = broken_table(s3, name)
    return bucket, dict(expect, _name=name)


def _assert_whole(s3, bucket: str, expect: dict) -> None:
    assert_restored(s3, bucket, expect["_name"], expect)
    for block in expect["blocks"]:
        assert len(read(s3, bucket, block["key"])) == block["file_size"]


def test_runbook_dry_run_then_restore(airflow_db, s3, conn_id):
    bucket, expect = _broken_fuse_table(s3, "fuse_purged")
    dag = _dag("fuse_failsafe_runbook")
    conf = {"table": f"s3://{bucket}/{expect['storage_root']}", "aws_conn_id": conn_id,
            "expect_row_count": expect["row_count"]}
    before = all_versions(s3, bucket)

    run, states = run_dag(dag, run_conf={**conf, "dry_run": True})
    assert run.state == "success", states
    assert states["scan"] == "success" and states["amend"] == "skipped" and states["verify"] == "skipped"
    assert all_versions(s3, bucket) == before
    scan = [ti for ti in run.get_task_instances() if ti.task_id == "scan"][0].xcom_pull(task_ids="scan")
    assert scan["restore"] == len(expect["referenced_keys"]) and scan["unrecoverable"] == 0

    run, states = run_dag(dag, run_conf={**conf, "dry_run": False})
    assert run.state == "success", states
    assert set(states.values()) == {"success"}
    _assert_whole(s3, bucket, expect)
    verify = [ti for ti in run.get_task_instances() if ti.task_id == "verify"][0].xcom_pull(task_ids="verify")
    assert verify["ok"] and verify["total_rows"] == expect["row_count"]


def test_runbook_on_unversioned_bucket_fails_at_the_sensor(airflow_db, s3, conn_id, capfd):
    bucket = new_bucket(s3, versioning=None)
    run, states = run_dag(_dag("fuse_failsafe_runbook"),
                          run_conf={"table": f"s3://{bucket}/t/", "aws_conn_id": conn_id, "dry_run": False})
    assert run.state == "failed"
    assert states["versioning"] == "failed" and states["amend"] in ("upstream_failed", None)
    out = capfd.readouterr().out
    assert "versioning was never enabled" in out


def test_periodic_amend_restores_each_table_and_isolates_failures(airflow_db, s3, conn_id, monkeypatch):
    good_bucket, good = _broken_fuse_table(s3, "fuse_basic")
    bad_bucket, bad = _broken_fuse_table(s3, "fuse_legacy")
    # a lifecycle rule expired the only data version of one block: nothing can bring it back
    lost = bad["blocks"][0]["key"]
    for key, version, marker in all_versions(s3, bad_bucket, lost):
        if key == lost and not marker:
            s3.delete_object(Bucket=bad_bucket, Key=lost, VersionId=version)
    monkeypatch.setenv("AIRFLOW_VAR_FUSE_PERIODIC_TABLES", json.dumps([
        {"table": f"s3://{good_bucket}/{good['storage_root']}", "table_format": "fuse", "aws_conn_id": conn_id},
        {"table": f"s3://{bad_bucket}/{bad['storage_root']}", "aws_conn_id": conn_id},
    ]))
    run, _ = run_dag(_dag("fuse_periodic_amend"))
    by_index = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert by_index[("table.amend", 0)] == "success" and by_index[("table.verify", 0)] == "success"
    assert by_index[("table.announce", 0)] == "success"
    assert by_index[("table.amend", 1)] == "failed"
    assert run.state == "failed"
    _assert_whole(s3, good_bucket, good)
    # the other blocks of the failing table were still restored; the lost one is reported, not invented
    assert read(s3, bad_bucket, bad["blocks"][1]["key"]) is not None
    assert read(s3, bad_bucket, lost) is None
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if e.source_run_id == run.run_id]
    assert [e.extra["table"] for e in events] == [f"s3://{good_bucket}/{good['storage_root']}"]


@pytest.mark.parametrize("name", ["fuse_indexes"])
def test_verify_fails_naming_the_damaged_block(airflow_db, s3, conn_id, name, capfd):
    bucket = new_bucket(s3)
    replay(s3, bucket, name)
    expect = load_expect(name)
    block = expect["blocks"][0]
    s3.put_object(Bucket=bucket, Key=block["key"], Body=b"garbage, not parquet")
    from tests.conftest import write_dag

    dag = write_dag("verify_only", f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from airflow_fuse.operators.verify import FuseVerifyOperator

        with DAG("verify_only", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
            FuseVerifyOperator(task_id="verify", table="s3://{bucket}/{expect['storage_root']}",
                               aws_conn_id={conn_id!r})
    """)
    run, states = run_dag(dag)
    assert states == {"verify": "failed"}
    assert block["key"] in capfd.readouterr().out


def test_scan_saves_a_plan_that_amend_applies(airflow_db, s3, conn_id, tmp_path):
    from tests.conftest import write_dag

    bucket, expect = _broken_fuse_table(s3, "fuse_compacted")
    plan = tmp_path / "plan.parquet"
    dag = write_dag("scan_then_apply", f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from airflow_fuse.operators.amend import FuseAmendOperator
        from airflow_fuse.operators.scan import FuseScanOperator

        with DAG("scan_then_apply", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
            scan = FuseScanOperator(task_id="scan", table="s3://{bucket}/{expect['storage_root']}",
                                    plan_uri={str(plan)!r}, aws_conn_id={conn_id!r})
            amend = FuseAmendOperator(task_id="amend", plan="{{{{ ti.xcom_pull(task_ids='scan')['plan'] }}}}",
                                      aws_conn_id={conn_id!r})
            scan >> amend
    """)
    run, states = run_dag(dag)
    assert states == {"scan": "success", "amend": "success"}, states
    assert plan.exists()
    _assert_whole(s3, bucket, expect)


def test_periodic_amend_reports_a_prefix_table_unless_it_has_a_deletion_window(airflow_db, s3, conn_id,
                                                                                 monkeypatch):
    """A retention job's deletions under a prefix table must not be undone every hour: reported (the task fails so
    alerting fires), nothing written; an entry with deletion_window_hours restores deletions inside the window."""
    erased, windowed = new_bucket(s3), new_bucket(s3)
    for bucket in (erased, windowed):
        put_objects(s3, bucket, {"events/a.parquet": b"a", "events/b.parquet": b"b"})
        delete_keys(s3, bucket, ["events/a.parquet"])
    before = all_versions(s3, erased)
    monkeypatch.setenv("AIRFLOW_VAR_FUSE_PERIODIC_TABLES", json.dumps([
        {"table": f"s3://{erased}/events/", "table_format": "prefix", "aws_conn_id": conn_id},
        {"table": f"s3://{windowed}/events/", "aws_conn_id": conn_id, "deletion_window_hours": 1},
    ]))
    run, _ = run_dag(_dag("fuse_periodic_amend"))
    by_index = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert by_index[("table.amend", 0)] == "failed" and run.state == "failed"
    assert all_versions(s3, erased) == before and read(s3, erased, "events/a.parquet") is None
    assert by_index[("table.amend", 1)] == "success"
    assert read(s3, windowed, "events/a.parquet") == b"a"
