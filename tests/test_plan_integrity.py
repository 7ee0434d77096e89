"""A saved plan is applied only as it was made, to the table it was made for, while it is recent: through
the command line (a subprocess, as a user runs it), the engine and FuseAmendOperator, on the real servers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_fuse.engine import amend
from airflow_fuse.errors import BadInputError
from airflow_fuse.operators.amend import FuseAmendOperator
from airflow_fuse.operators.scan import FuseScanOperator
from airflow_fuse.parquet import read_parquet
from airflow_fuse.plan import ITEM_FIELDS, PLAN_FORMAT, RESCAN, PlanItem
from airflow_fuse.times import isoformat
from tests.conftest import new_bucket
from tests.helpers import all_versions, delete_keys, put_objects, read


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_DEFAULT_REGION="us-east-1")
    return subprocess.run([sys.executable, "-m", "airflow_fuse.cli", *args, "--endpoint-url", server.endpoint_url],
                          env=env, capture_output=True, text=True, timeout=300)


def _scan(server, table: str, plan_path) -> dict:
    result = _cli(server, "scan", table, "--plan-out", str(plan_path), "--json")
    assert result.returncode == 4, result.stderr  # objects to restore were found
    return json.loads(result.stdout)


def _deleted_table(s3, bucket: str, n: int = 3) -> dict[str, bytes]:
    objects = {f"t/part-{i}.parquet": f"rows of part {i}".encode() for i in range(n)}
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    return objects


def _forge(plan: dict, s3, bucket: str, key: str) -> None:
    """Add a row that copies the older version of a healthy live key over it, with the live version's id:
    exactly what a re-check of the key's current entry lets through."""
    old, live = [v for v in s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"] if v["Key"] == key][::-1]
    plan["items"].append(asdict(PlanItem(
        key=key, status="damaged", action="copy", version_id=old["VersionId"], size=old["Size"],
        etag=old["ETag"].strip('"'), last_modified=isoformat(old["LastModified"]) or "",
        reason="live version is damaged", current_version_id=live["VersionId"], current_etag=live["ETag"].strip('"'),
        current_size=live["Size"], current_last_modified=isoformat(live["LastModified"]) or "")))


def _reseal(plan: dict) -> None:
    """Recompute the digest of an edited plan, as someone who can write the file can."""
    from airflow_fuse.plan import Plan

    header = {k: v for k, v in plan.items() if k not in ("items", "digest", "format")}
    plan["digest"] = Plan(items=[PlanItem(**row) for row in plan["items"]], **header).digest


def test_a_forged_plan_is_refused_and_the_live_object_stays(s3_server, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="t/healthy.parquet", Body=b"old rows")
    s3.put_object(Bucket=bucket, Key="t/healthy.parquet", Body=b"current rows")
    _deleted_table(s3, bucket)
    table = f"s3://{bucket}/t/"
    scanned = _scan(s3_server, table, tmp_path / "plan.json")
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["digest"] == scanned["plan_digest"]
    _forge(plan, s3, bucket, "t/healthy.parquet")
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    before = all_versions(s3, bucket)

    result = _cli(s3_server, "amend", table, "--plan", str(tmp_path / "plan.json"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"plan {tmp_path / 'plan.json'} does not match its digest" in result.stderr
    assert RESCAN in result.stderr and "Traceback" not in result.stderr
    assert read(s3, bucket, "t/healthy.parquet") == b"current rows"
    assert all_versions(s3, bucket) == before  # nothing written: not even the deleted parts came back

    # Someone who can write the file can also recompute its digest: the digest the scan reported, pinned,
    # still refuses it.
    _reseal(plan)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    result = _cli(s3_server, "amend", table, "--plan", str(tmp_path / "plan.json"),
                  "--plan-digest", scanned["plan_digest"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"not the pinned {scanned['plan_digest']}" in result.stderr
    assert read(s3, bucket, "t/healthy.parquet") == b"current rows"
    assert all_versions(s3, bucket) == before


def test_a_field_of_the_wrong_type_is_refused_before_any_marker_is_removed(s3_server, s3, bucket, tmp_path):
    objects = _deleted_table(s3, bucket)
    table = f"s3://{bucket}/t/"
    _scan(s3_server, table, tmp_path / "plan.json")
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["items"][2]["size"] = "big"  # the last row: rows before it would be restored first
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    _scan(s3_server, table, tmp_path / "plan.parquet")
    parquet = read_parquet((tmp_path / "plan.parquet").read_bytes())
    parquet = parquet.set_column(ITEM_FIELDS.index("size"), "size", pa.array(["big"] * parquet.num_rows))
    pq.write_table(parquet, tmp_path / "plan.parquet")
    before = all_versions(s3, bucket)

    for name, row in (("plan.json", "items[2]"), ("plan.parquet", "items[0]")):
        result = _cli(s3_server, "amend", table, "--plan", str(tmp_path / name))
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"plan {tmp_path / name} is refused: {row} (key 't/part-" in result.stderr
        assert "field 'size', must be an integer, not 'big' (str); scan again to make a new plan" in result.stderr
        assert "Traceback" not in result.stderr
    assert all_versions(s3, bucket) == before  # every delete marker is still there
    assert all(read(s3, bucket, key) is None for key in objects)


def test_a_plan_for_another_table_is_refused_by_the_engine_and_the_operator(s3_server, s3, bucket, conn_id,
                                                                            tmp_path):
    objects = _deleted_table(s3, bucket)
    other = new_bucket(s3)
    put_objects(s3, other, {"t/part-0.parquet": b"another table"})
    _scan(s3_server, f"s3://{bucket}/t/", tmp_path / "plan.parquet")
    plan = str(tmp_path / "plan.parquet")
    before = all_versions(s3, bucket), all_versions(s3, other)

    for wrong in (f"s3://{other}/t/", f"s3://{bucket}/t/sub/", f"s3://{bucket}/u/"):
        with pytest.raises(BadInputError, match=f"plan {plan} is for s3://{bucket}/t/, not {wrong}: scan this"):
            amend(s3, table=wrong, plan=plan)
        with pytest.raises(AirflowFailException, match=f"is for s3://{bucket}/t/, not {wrong}"):
            FuseAmendOperator(task_id="amend", table=wrong, plan=plan, aws_conn_id=conn_id).execute({})
    assert (all_versions(s3, bucket), all_versions(s3, other)) == before

    # the table it was made for: applied
    summary = FuseAmendOperator(task_id="amend", table=f"s3://{bucket}/t/", plan=plan,
                                aws_conn_id=conn_id).execute({})
    assert summary["restored"] == len(objects) and summary["remaining"] == 0
    assert all(read(s3, bucket, key) == body for key, body in objects.items())


def test_an_old_plan_is_refused_unless_the_limit_is_lifted(s3_server, s3, bucket, conn_id, tmp_path):
    objects = _deleted_table(s3, bucket)
    table = f"s3://{bucket}/t/"
    _scan(s3_server, table, tmp_path / "plan.json")
    before = all_versions(s3, bucket)
    time.sleep(1.1)  # the plan is now more than 1 s old, and only gets older

    result = _cli(s3_server, "amend", table, "--plan", str(tmp_path / "plan.json"), "--max-plan-age", "1s")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "was made from a listing taken" in result.stderr and "more than max_plan_age (1 s)" in result.stderr
    assert "scan again to make a new plan, or apply it anyway with --max-plan-age" in result.stderr
    with pytest.raises(AirflowFailException, match="more than max_plan_age"):
        FuseAmendOperator(task_id="amend", table=table, plan=str(tmp_path / "plan.json"), max_plan_age="1s",
                          aws_conn_id=conn_id).execute({})
    assert all_versions(s3, bucket) == before

    result = _cli(s3_server, "amend", table, "--plan", str(tmp_path / "plan.json"), "--max-plan-age", "none")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(read(s3, bucket, key) == body for key, body in objects.items())


def test_only_the_pinned_digest_is_applied(s3_server, s3, bucket, tmp_path):
    objects = _deleted_table(s3, bucket)
    table = f"s3://{bucket}/t/"
    scanned = _scan(s3_server, table, tmp_path / "plan.parquet")
    meta = json.loads(read_parquet((tmp_path / "plan.parquet").read_bytes()).schema.metadata[b"airflow_fuse.plan"])
    assert meta["format"] == PLAN_FORMAT and meta["digest"] == scanned["plan_digest"]
    before = all_versions(s3, bucket)

    wrong = hashlib.sha256(b"another plan").hexdigest()
    for digest in (wrong, "", "not-a-digest"):
        result = _cli(s3_server, "amend", table, "--plan", str(tmp_path / "plan.parquet"), "--plan-digest", digest)
        assert result.returncode == 2, (digest, result.stdout + result.stderr)
        assert "pinned" in result.stderr or "not a sha256 digest" in result.stderr, result.stderr
    assert all_versions(s3, bucket) == before

    result = _cli(s3_server, "amend", table, "--plan", str(tmp_path / "plan.parquet"),
                  "--plan-digest", scanned["plan_digest"], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["plan_digest"] == scanned["plan_digest"]
    assert all(read(s3, bucket, key) == body for key, body in objects.items())


def test_the_operators_pin_the_digest_of_the_scan(s3_server, s3, bucket, conn_id, tmp_path):
    objects = _deleted_table(s3, bucket)
    table = f"s3://{bucket}/t/"
    scanned = FuseScanOperator(task_id="scan", table=table, plan_uri=str(tmp_path / "plan.json"),
                               aws_conn_id=conn_id).execute({})
    assert scanned["plan"] == str(tmp_path / "plan.json")
    assert scanned["plan_digest"] == json.loads((tmp_path / "plan.json").read_text())["digest"]
    before = all_versions(s3, bucket)

    with pytest.raises(AirflowFailException, match="not the pinned"):
        FuseAmendOperator(task_id="amend", table=table, plan=scanned["plan"], plan_digest="0" * 64,
                          aws_conn_id=conn_id).execute({})
    with pytest.raises(AirflowFailException, match="plan_digest pins a saved plan"):
        FuseAmendOperator(task_id="amend", table=table, plan_digest=scanned["plan_digest"],
                          aws_conn_id=conn_id).execute({})
    assert all_versions(s3, bucket) == before

    summary = FuseAmendOperator(task_id="amend", table=table, plan=scanned["plan"],
                                plan_digest=scanned["plan_digest"], aws_conn_id=conn_id).execute({})
    assert summary["plan_digest"] == scanned["plan_digest"] and summary["restored"] == len(objects)
    assert all(read(s3, bucket, key) == body for key, body in objects.items())


def test_a_dag_pins_the_digest_its_scan_reported(airflow_db, s3, bucket, conn_id, tmp_path):
    from tests.conftest import run_dag, write_dag

    objects = _deleted_table(s3, bucket)
    plan = tmp_path / "plan.json"
    dag = write_dag("scan_then_pinned_amend", f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from airflow_fuse.operators.amend import FuseAmendOperator
        from airflow_fuse.operators.scan import FuseScanOperator

        with DAG("scan_then_pinned_amend", schedule=None,
                 start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
            scan = FuseScanOperator(task_id="scan", table="s3://{bucket}/t/", plan_uri={str(plan)!r},
                                    aws_conn_id={conn_id!r})
            amend = FuseAmendOperator(task_id="amend", table="s3://{bucket}/t/",
                                      plan="{{{{ ti.xcom_pull(task_ids='scan')['plan'] }}}}",
                                      plan_digest="{{{{ ti.xcom_pull(task_ids='scan')['plan_digest'] }}}}",
                                      aws_conn_id={conn_id!r})
            scan >> amend
    """)
    run, states = run_dag(dag)
    assert states == {"scan": "success", "amend": "success"}, states
    amend_ti = [ti for ti in run.get_task_instances() if ti.task_id == "amend"][0]
    assert amend_ti.xcom_pull(task_ids="amend")["plan_digest"] == json.loads(plan.read_text())["digest"]
    assert all(read(s3, bucket, key) == body for key, body in objects.items())
