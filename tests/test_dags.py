"""The example DAGs, run with dag.test() against the real servers on Databend tables broken as in the seed."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.fixture
def runbook_variables(monkeypatch, tmp_path, conn_id) -> Path:
    """The run book's Variables, as a deployment sets them: the connections the form offers, the ops location."""
    monkeypatch.setenv("AIRFLOW_VAR_AIRFLOW_FUSE_AWS_CONN_IDS", json.dumps(["aws_default", conn_id]))
    ops = tmp_path / "ops"
    monkeypatch.setenv("AIRFLOW_VAR_AIRFLOW_FUSE_OPS_LOCATION", f"file://{ops}/")
    return ops


def test_runbook_form(runbook_variables, conn_id):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    from airflow_fuse import formats

    dag = _dag("fuse_failsafe_runbook")
    assert dag.dag_display_name == "Fuse fail-safe: restore a table"
    params: ParamsDict = dag.params
    schema = {name: params.get_param(name).schema for name in params}
    assert list(params)[:2] == ["table", "dry_run"]  # the dry-run switch right under the table
    assert params.get_param("table").has_value is False  # required: no placeholder to pass the form
    assert "s3://<bucket>/<prefix>/" in params.get_param("table").description
    assert schema["table_format"]["enum"] == [*formats.names(), None]  # cleared: the default, not a 400
    assert schema["table_format"]["values_display"] == formats.titles()
    assert set(schema["strategy"]["values_display"]) == set(schema["strategy"]["enum"]) - {None}
    assert params.get_param("strategy").resolve(None) is None  # a cleared enum is accepted (means the default)
    assert {name for name, s in schema.items() if s.get("format") == "date-time"} == {
        "as_of", "deleted_since", "deleted_before"}
    assert schema["aws_conn_id"]["enum"] == ["aws_default", conn_id, None]  # the Variable's allowlist
    assert params["ops_location"] == f"file://{runbook_variables}/"  # the Variable's location
    assert params["include_history"] is False and params["require_approval"] is True
    assert all(s.get("section") for name, s in schema.items()
               if name not in ("table", "dry_run", "require_approval"))
    with pytest.raises(ParamValidationError, match="is not one of"):
        params.get_param("aws_conn_id").resolve("someone_elses_conn")  # not on the allowlist
    with pytest.raises(ParamValidationError, match="is not a 'date-time'"):
        params.get_param("as_of").resolve("yesterday 10am")
    with pytest.raises(ParamValidationError, match="does not match"):
        params.get_param("table").resolve("s3://my bucket/t/")


def test_runbook_form_without_its_variables(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_AIRFLOW_FUSE_AWS_CONN_IDS", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_AIRFLOW_FUSE_OPS_LOCATION", raising=False)
    dag = _dag("fuse_failsafe_runbook")
    assert dag.params.get_param("aws_conn_id").schema["enum"] == ["aws_default", None]
    assert dag.params.get_param("ops_location").has_value is False  # asked for in the form
    monkeypatch.setenv("AIRFLOW_VAR_AIRFLOW_FUSE_AWS_CONN_IDS", "not json")
    assert _dag("fuse_failsafe_runbook").params.get_param("aws_conn_id").schema["enum"] == ["aws_default", None]


def test_runbook_approval_timeout_says_nothing_was_written(runbook_variables):
    from airflow.sdk.exceptions import AirflowFailException

    approval = _dag("fuse_failsafe_runbook").get_task("approval")
    assert approval.options == ["Approve", "Reject"] and approval.defaults is None  # no answer is not a yes
    with pytest.raises(AirflowFailException, match="No answer to the approval within 12:00:00: nothing written"):
        approval.execute_complete({}, {"error": "The Human-in-the-loop response timeout has passed without a "
                                                "response.", "error_type": "timeout"})


def test_runbook_approval_body_shows_every_kind_of_key():
    import runpy

    from airflow_fuse.plan import Plan, PlanItem, PlanRows
    from airflow_fuse.report import Report

    plan_markdown = runpy.run_path(str(DAGS_FOLDER / "fuse_failsafe_runbook.py"))["plan_markdown"]
    items = ([PlanItem(key=f"t/_b/undel{i}.parquet", status="restore", action="undelete", version_id=f"v{i}",
                       size=1024) for i in range(7)]
             + [PlanItem(key="t/_b/copied.parquet", status="restore", action="copy", version_id="vc", size=2048),
                PlanItem(key="t/_sg/damaged.mpk", status="damaged", action="copy", version_id="vd", size=100,
                         reason="holds 3 bytes, the metadata says 100"),
                PlanItem(key="t/_b/expired.parquet", status="unrecoverable",
                         reason="no version left: a lifecycle rule expired it"),
                PlanItem(key="t/_ss/snap.mpk", status="present")])
    plan = Plan(bucket="lake", prefix="t/", table_format="fuse", items=items, listed_at="2026-11-29T10:00:00Z")
    summary = dict(Report(plan).summary(), plan="s3://ops/airflow-fuse/fuse_failsafe_runbook/run1/plan.parquet")

    body = plan_markdown(summary, plan.items)
    # a saved plan is loaded as Arrow columns: the same body, counted on the columns
    assert plan_markdown(summary, PlanRows.from_items(items)) == body
    assert "| undelete (remove the delete markers above a version) | 7 | 7.0 KiB |" in body
    assert "| copy an older version back | 1 | 2.0 KiB |" in body
    assert "| damaged: replace with an older version | 1 | 100 B |" in body
    assert "| **unrecoverable** (no version to bring back) | 1 | – |" in body
    assert "| **total written** | 9 | 9.1 KiB |" in body
    assert "- `t/_b/expired.parquet`: no version left: a lifecycle rule expired it" in body
    assert "- `t/_sg/damaged.mpk`: holds 3 bytes, the metadata says 100" in body
    assert "- `t/_b/copied.parquet` ← version `vc` (2.0 KiB)" in body
    assert "- `t/_b/undel4.parquet` ← version `v4`" in body and "undel5" not in body  # the first five
    assert "- … and 2 more (in the plan)" in body
    assert "**Plan** `s3://ops/airflow-fuse/fuse_failsafe_runbook/run1/plan.parquet`" in body
    assert f"**Plan digest** `{plan.digest}`" in body


def _broken_fuse_table(s3, name: str) -> tuple[str, dict]:
    bucket, expect = broken_table(s3, name)
    return bucket, dict(expect, _name=name)


def _assert_whole(s3, bucket: str, expect: dict) -> None:
    assert_restored(s3, bucket, expect["_name"], expect)
    for block in expect["blocks"]:
        assert len(read(s3, bucket, block["key"])) == block["file_size"]


def _xcom(run, task_id: str):
    return [ti for ti in run.get_task_instances() if ti.task_id == task_id][0].xcom_pull(task_ids=task_id)


def test_runbook_dry_run_writes_nothing_and_says_so(airflow_db, s3, conn_id, runbook_variables, caplog):
    bucket, expect = _broken_fuse_table(s3, "fuse_purged")
    ops_bucket = new_bucket(s3)  # an s3:// operations location, written with the run's connection
    conf = {"table": f"s3://{bucket}/{expect['storage_root']}", "aws_conn_id": conn_id,
            "ops_location": f"s3://{ops_bucket}/airflow-fuse/"}
    before = all_versions(s3, bucket)

    run, states = run_dag(_dag("fuse_failsafe_runbook"), run_conf=conf)  # dry run: the default
    assert run.state == "success", states
    assert states["scan"] == "success" and states["route"] == "success"
    assert {states["approval"], states["shard"], states["amend"], states["report"], states["verify"]} == {"skipped"}
    assert all_versions(s3, bucket) == before
    n = len(expect["referenced_keys"])
    assert f"DRY RUN: nothing written; {n} objects would be restored" in caplog.text
    # the plan is kept for review, under the ops location; no report (nothing was done)
    key = f"airflow-fuse/fuse_failsafe_runbook/{run.run_id}/plan.parquet"
    assert _xcom(run, "scan")["plan"] == f"s3://{ops_bucket}/{key}"
    assert [k for k, _, _ in all_versions(s3, ops_bucket)] == [key]


def test_runbook_include_history_reaches_the_scan(airflow_db, s3, conn_id, runbook_variables):
    from airflow_fuse.engine import ScanOptions, scan_report

    bucket, expect = _broken_fuse_table(s3, "fuse_compacted")
    table = f"s3://{bucket}/{expect['storage_root']}"
    current = scan_report(s3, table).summary()["needed"]
    with_history = scan_report(s3, table, ScanOptions(include_history=True)).summary()["needed"]
    assert with_history > current  # the previous snapshots' objects count too

    run, states = run_dag(_dag("fuse_failsafe_runbook"),
                          run_conf={"table": table, "aws_conn_id": conn_id, "include_history": True})
    assert states["scan"] == "success", states
    assert _xcom(run, "scan")["needed"] == with_history  # the form's boolean, not the string "True"


def test_runbook_without_approval_restores_the_saved_plan(airflow_db, s3, conn_id, runbook_variables):
    from airflow_fuse.plan import load_plan

    bucket, expect = _broken_fuse_table(s3, "fuse_purged")
    conf = {"table": f"s3://{bucket}/{expect['storage_root']}", "aws_conn_id": conn_id, "dry_run": False,
            "require_approval": False, "expect_row_count": expect["row_count"]}

    run, states = run_dag(_dag("fuse_failsafe_runbook"), run_conf=conf)
    assert run.state == "success", states
    assert states == {"versioning": "success", "scan": "success", "route": "success", "approval": "skipped",
                      "shard": "success", "amend": "success", "report": "success", "verify": "success"}
    _assert_whole(s3, bucket, expect)
    run_dir = runbook_variables / "fuse_failsafe_runbook" / run.run_id
    assert [ti.map_index for ti in run.get_task_instances() if ti.task_id == "amend"] == [0]  # one shard: the plan
    assert _xcom(run, "shard") == [{"plan": str(run_dir / "plan.parquet"), "plan_digest": _xcom(run, "scan")[
        "plan_digest"], "report_uri": str(run_dir / "report.parquet")}]
    report = _xcom(run, "report")
    assert report["plan"] == str(run_dir / "plan.parquet")  # the scan's plan, not a second scan
    assert report["report"] == str(run_dir / "report.parquet") and (run_dir / "report.parquet").exists()
    plan = load_plan(str(run_dir / "plan.parquet"))
    assert sorted(i.key for i in plan.actionable()) == sorted(expect["referenced_keys"])
    assert report["restored"] == len(expect["referenced_keys"]) and report["exit_status"] == 0
    verify = _xcom(run, "verify")
    assert verify["ok"] and verify["total_rows"] == expect["row_count"]


def test_runbook_shards_a_big_plan_over_mapped_amend_tasks(airflow_db, s3, conn_id, runbook_variables):
    """Above shard_keys keys to restore, the plan is cut by key range; one mapped amend per shard, named after its
    range; the merged report counts each key once, and the union of the shards is the plan."""
    from airflow_fuse.plan import load_plan
    from airflow_fuse.shards import shard_info
    from airflow_fuse.undo import load_report

    bucket, expect = _broken_fuse_table(s3, "fuse_purged")
    n = len(expect["referenced_keys"])
    conf = {"table": f"s3://{bucket}/{expect['storage_root']}", "aws_conn_id": conn_id, "dry_run": False,
            "require_approval": False, "shard_keys": 5}
    run, states = run_dag(_dag("fuse_failsafe_runbook"), run_conf=conf)
    assert run.state == "success", states
    amends = sorted((ti for ti in run.get_task_instances() if ti.task_id == "amend"), key=lambda ti: ti.map_index)
    count = -(-n // 5)
    assert count >= 3
    assert [ti.state for ti in amends] == ["success"] * count
    assert [ti.rendered_map_index.split(":")[0] for ti in amends] == [f"shard {i}/{count}" for i in
                                                                      range(1, count + 1)]
    _assert_whole(s3, bucket, expect)
    run_dir = runbook_variables / "fuse_failsafe_runbook" / run.run_id
    plan = load_plan(str(run_dir / "plan.parquet"))
    shards = [load_plan(entry["plan"]) for entry in _xcom(run, "shard")]
    assert all(shard_info(s).parent_digest == plan.digest for s in shards)
    assert sorted(i.key for s in shards for i in s.items) == sorted(i.key for i in plan.items)  # the union: the plan
    report = _xcom(run, "report")
    assert report["shards"] == count and report["restored"] == n and report["exit_status"] == 0
    assert report["plan_digest"] == plan.digest
    restored = [key.key for key in load_report(str(run_dir / "report.parquet")).keys]
    assert sorted(restored) == sorted(expect["referenced_keys"])  # each key restored once


def test_runbook_on_unversioned_bucket_fails_at_the_sensor(airflow_db, s3, conn_id, runbook_variables, capfd):
    bucket = new_bucket(s3, versioning=None)
    run, states = run_dag(_dag("fuse_failsafe_runbook"),
                          run_conf={"table": f"s3://{bucket}/t/", "aws_conn_id": conn_id, "dry_run": False})
    assert run.state == "failed"
    assert states["versioning"] == "failed" and states["amend"] in ("upstream_failed", None)
    out = capfd.readouterr().out
    assert "versioning was never enabled" in out


@pytest.fixture
def periodic_ops(monkeypatch, tmp_path) -> Path:
    ops = tmp_path / "ops"
    monkeypatch.setenv("AIRFLOW_VAR_AIRFLOW_FUSE_OPS_LOCATION", f"file://{ops}/")
    return ops


def test_periodic_amend_restores_each_table_and_isolates_failures(airflow_db, s3, conn_id, monkeypatch, periodic_ops):
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
    # each mapped instance that ran is named after its table, not 0, 1 (one that never started keeps its index)
    names = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in run.get_task_instances()
             if ti.map_index >= 0 and ti.state in ("success", "failed", "skipped")}
    tables = [f"s3://{good_bucket}/{good['storage_root']}", f"s3://{bad_bucket}/{bad['storage_root']}"]
    assert names == {(task_id, i): tables[i] for task_id, i in names}  # below shard_keys: one amend per table
    assert set(names) >= {("table.versioning", 0), ("table.scan", 0), ("amend", 0), ("finish.report", 0),
                          ("finish.verify", 0), ("finish.announce", 0), ("table.versioning", 1), ("amend", 1),
                          ("finish.report", 1)}
    assert by_index[("amend", 0)] == "success" and by_index[("finish.verify", 0)] == "success"
    assert by_index[("finish.announce", 0)] == "success"
    assert by_index[("amend", 1)] == "failed" and by_index[("finish.report", 1)] == "failed"
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


def test_periodic_amend_shards_a_big_table(airflow_db, s3, conn_id, monkeypatch, periodic_ops):
    """Above airflow_fuse_shard_keys keys to restore, a table's plan is cut into shards: one amend task per shard
    (named after its table and range), the table's reports merged, each key restored once."""
    from airflow_fuse.undo import load_report

    big_bucket, big = _broken_fuse_table(s3, "fuse_purged")
    small_bucket = new_bucket(s3)  # a prefix table with one key deleted inside its window: one amend, the plan
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2]}), sink)
    events = sink.getvalue()
    put_objects(s3, small_bucket, {"events/a.parquet": events, "events/b.parquet": events})
    delete_keys(s3, small_bucket, ["events/a.parquet"])
    tables = [f"s3://{big_bucket}/{big['storage_root']}", f"s3://{small_bucket}/events/"]
    monkeypatch.setenv("AIRFLOW_VAR_AIRFLOW_FUSE_SHARD_KEYS", "5")
    monkeypatch.setenv("AIRFLOW_VAR_FUSE_PERIODIC_TABLES", json.dumps([
        {"table": tables[0], "table_format": "fuse", "aws_conn_id": conn_id},
        {"table": tables[1], "aws_conn_id": conn_id, "deletion_window_hours": 1}]))
    run, _ = run_dag(_dag("fuse_periodic_amend"))
    assert run.state == "success", [(ti.task_id, ti.map_index, ti.state) for ti in run.get_task_instances()]
    amends = sorted((ti for ti in run.get_task_instances() if ti.task_id == "amend"), key=lambda ti: ti.map_index)
    count = -(-len(big["referenced_keys"]) // 5)
    assert [ti.state for ti in amends] == ["success"] * (count + 1)
    assert [ti.rendered_map_index for ti in amends] == [
        *(ti.rendered_map_index for ti in amends[:count]), tables[1]]
    assert all(ti.rendered_map_index.startswith(f"{tables[0]} shard {i}/{count}: ")
               for i, ti in enumerate(amends[:count], start=1))
    _assert_whole(s3, big_bucket, big)
    assert read(s3, small_bucket, "events/a.parquet") == events
    reports = {ti.map_index: ti.xcom_pull(task_ids="finish.report", map_indexes=ti.map_index)
               for ti in run.get_task_instances() if ti.task_id == "finish.report"}
    assert reports[0]["shards"] == count and reports[0]["restored"] == len(big["referenced_keys"])
    assert reports[1]["shards"] == 1 and reports[1]["restored"] == 1
    restored = [k.key for k in load_report(reports[0]["report"]).keys]
    assert sorted(restored) == sorted(big["referenced_keys"])  # each key once


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
                                                                                 monkeypatch, periodic_ops):
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
    assert by_index[("amend", 0)] == "failed" and by_index[("finish.report", 0)] == "failed"
    assert run.state == "failed"
    assert all_versions(s3, erased) == before and read(s3, erased, "events/a.parquet") is None
    assert by_index[("amend", 1)] == "success" and by_index[("finish.report", 1)] == "success"
    assert read(s3, windowed, "events/a.parquet") == b"a"


def test_runbook_plans_from_an_s3_inventory_report(airflow_db, s3, conn_id, runbook_variables):
    """The form's S3 Inventory manifest: the scan reads the versions from the report, not a listing; the
    restore still re-checks each key with a listing (a key written again since the report is left alone)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_fuse.plan import load_plan
    from tests.s3_inventory_files import write_inventory

    def parquet(rows: int) -> bytes:
        sink = io.BytesIO()
        pq.write_table(pa.table({"n": list(range(rows))}), sink)
        return sink.getvalue()

    bucket = new_bucket(s3)
    objects = {f"t/d{i % 2}/part-{i}.parquet": parquet(10 + i) for i in range(6)}
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, ["t/d0/part-0.parquet", "t/d1/part-3.parquet", "t/d0/part-4.parquet"])
    manifest = write_inventory(s3, bucket, fmt="Parquet")
    written_again = parquet(99)
    put_objects(s3, bucket, {"t/d0/part-4.parquet": written_again})  # after the report: not to be restored over
    conf = {"table": f"s3://{bucket}/t/", "aws_conn_id": conn_id, "dry_run": False, "require_approval": False,
            "table_format": "prefix", "inventory_manifest": manifest}

    run, states = run_dag(_dag("fuse_failsafe_runbook"), run_conf=conf)

    # the key written since the report is "changed since scan": the amend and the merged report fail naming it
    assert states["scan"] == "success" and states["amend"] == states["report"] == "failed", states
    amend = next(ti for ti in run.get_task_instances() if ti.task_id == "amend")
    assert amend.state == "failed"
    assert read(s3, bucket, "t/d0/part-0.parquet") == objects["t/d0/part-0.parquet"]  # the bytes are back
    assert read(s3, bucket, "t/d1/part-3.parquet") == objects["t/d1/part-3.parquet"]
    assert read(s3, bucket, "t/d0/part-4.parquet") == written_again  # changed since the report: left alone
    plan = load_plan(str(runbook_variables / "fuse_failsafe_runbook" / run.run_id / "plan.parquet"))
    assert plan.info["inventory"]["source"] == "s3-inventory" and plan.info["inventory"]["manifest"] == manifest
    assert plan.listing_pages == 0  # the versions came from the report, not a listing
    saved = pq.read_table(runbook_variables / "fuse_failsafe_runbook" / run.run_id / "report.parquet").to_pylist()
    results = {row["key"]: row["result"] for row in saved}
    assert results["t/d0/part-4.parquet"] == "changed since scan", results
    assert results["t/d0/part-0.parquet"] == results["t/d1/part-3.parquet"] == "undeleted", results
