"""VersioningSensor in poke, reschedule and deferrable mode, inside dag.test(), against the real servers."""

from __future__ import annotations

import uuid

import pytest
from airflow.sdk import DAG

from tests.conftest import new_bucket, run_dag, write_dag


def _out(capfd) -> str:
    """What the task log showed (dag.test() prints task logs to the terminal)."""
    captured = capfd.readouterr()
    return captured.out + captured.err


def _dag(bucket: str, conn_id: str, **sensor_kwargs) -> DAG:
    dag_id = f"sensor_{uuid.uuid4().hex[:8]}"
    return write_dag(dag_id, f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from airflow_fuse.sensors.versioning import VersioningSensor

        with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
            VersioningSensor(task_id="versioning", bucket_name={bucket!r}, aws_conn_id={conn_id!r},
                             poke_interval=1, timeout=30, **{sensor_kwargs!r})
    """)


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_succeeds_on_enabled_bucket(airflow_db, s3, bucket, conn_id, mode):
    kwargs = {"deferrable": True} if mode == "deferrable" else {"mode": mode}
    dag = _dag(bucket, conn_id, **kwargs)
    run, states = run_dag(dag)
    assert run.state == "success", states
    assert states == {"versioning": "success"}
    ti = run.get_task_instances()[0]
    value = ti.xcom_pull(task_ids="versioning")
    assert value == {"bucket": bucket, "versioning": "Enabled", "risks": []}


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_sensor_fails_at_once_when_versioning_never_enabled(airflow_db, s3, conn_id, mode, capfd):
    bucket = new_bucket(s3, versioning=None)
    kwargs = {"deferrable": True} if mode == "deferrable" else {"mode": mode}
    dag = _dag(bucket, conn_id, **kwargs)
    run, states = run_dag(dag)
    assert run.state == "failed"
    assert states == {"versioning": "failed"}
    out = _out(capfd)
    assert "versioning was never enabled" in out and "put-bucket-versioning" in out


def test_sensor_waits_while_suspended_then_times_out(airflow_db, s3, conn_id, capfd):
    bucket = new_bucket(s3, versioning="Suspended")
    dag = _dag(bucket, conn_id, mode="poke")
    dag.get_task("versioning").timeout = 3
    run, states = run_dag(dag)
    assert run.state == "failed"
    out = _out(capfd)
    assert "Suspended" in out and "'null' version" in out


def test_deferred_sensor_resumes_when_versioning_is_enabled(airflow_db, s3, conn_id):
    """Suspended at first: the sensor defers; versioning is enabled while the trigger waits."""
    import threading
    import time

    bucket = new_bucket(s3, versioning="Suspended")
    timer = threading.Timer(4, lambda: s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}))
    timer.start()
    started = time.monotonic()
    try:
        run, states = run_dag(_dag(bucket, conn_id, deferrable=True))
    finally:
        timer.cancel()
    assert run.state == "success", states
    assert time.monotonic() - started >= 3  # it did wait for the change
