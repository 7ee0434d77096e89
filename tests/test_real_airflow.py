"""End to end on a REAL Airflow: api-server, scheduler, dag-processor and triggerer as subprocesses
(tests/airflow_server.py starts and stops them).

SQLite metadata database, LocalExecutor, everything bound to 127.0.0.1, the S3 connection given as an
``AIRFLOW_CONN_FUSE_E2E`` environment variable pointing at the session's moto server, the run book's
Variables (its connection allowlist and a ``file://`` operations location) as ``AIRFLOW_VAR_*``. The run book
is unpaused and triggered through the REST API (v2) with ``conf``, exactly as an operator would; its
approval is answered through the REST API too (``hitlDetails``), and the bucket is checked afterwards.

Every process is started in its own process group and the whole group is stopped in the fixture's
teardown, so no scheduler, executor worker or task supervisor outlives the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_fuse.plan import load_plan
from airflow_fuse.shards import shard_info
from airflow_fuse.undo import load_report
from tests.airflow_server import (
    CONN_ID,
    DAG_ID,
    TASKS,
    Airflow,
    answer,
    await_approval,
    finish,
    mapped_instances,
    running_airflow,
    task_log,
    trigger,
)
from tests.fuse_fixtures import assert_restored, broken_table
from tests.helpers import all_versions, read

pytestmark = pytest.mark.slow

FIXTURE = "fuse_purged"
SHARD_KEYS = 5  # the fixture's 13 keys to restore: 3 shards


@pytest.fixture(scope="module")
def airflow(moto_server) -> Iterator[Airflow]:
    with running_airflow(moto_server.connection_json()) as af:
        yield af


def test_bad_param_is_refused(airflow: Airflow, moto_server):
    with airflow.explain_failure():
        status, runs = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")
        assert status == 200, runs
        table = "s3://some-bucket/data/t/"
        for conf in ({"table": table, "strategy": "bogus"},
                     {"table": "not-an-s3-url"},
                     {"table": table, "expect_row_count": "many"},
                     {"table": table, "as_of": "yesterday 10am"},
                     {"table": table, "aws_conn_id": "aws_default"},  # not on the allowlist
                     {"aws_conn_id": CONN_ID}):  # no table: the form has no placeholder to fall back on
            status, body = airflow.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                           {"logical_date": None, "conf": {"aws_conn_id": CONN_ID, **conf}})
            assert status in (400, 422), f"{conf} was accepted: {status} {body}"
        status, after = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")
        assert status == 200 and after["total_entries"] == runs["total_entries"], after  # no run was created


def test_runbook_restores_only_after_approval_on_a_real_airflow(airflow: Airflow, moto_server):
    """One run: scan → the plan's summary under Required actions → Approve over REST → that plan, cut into shards
    (shard_keys=5), applied by one mapped task per shard on LocalExecutor (parallelism 2), the shards' reports
    merged, verified. A second run, rejected, writes nothing and says so."""
    s3 = moto_server.client()
    bucket, expect = broken_table(s3, FIXTURE)
    other_bucket, other = broken_table(s3, FIXTURE)
    assert all(read(s3, bucket, key) is None for key in expect["referenced_keys"])
    n = len(expect["referenced_keys"])
    with airflow.explain_failure():
        status, dag = airflow.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        assert status == 200 and dag["is_paused"] is False, dag

        t0 = time.monotonic()
        table = f"s3://{bucket}/{expect['storage_root']}"
        run_path = trigger(airflow, {"table": table, "aws_conn_id": CONN_ID, "dry_run": False,
                                      "expect_row_count": expect["row_count"], "shard_keys": SHARD_KEYS})
        detail = await_approval(airflow, run_path)
        airflow.timings["run until the approval"] = time.monotonic() - t0
        # nothing written while the approval waits
        assert all(read(s3, bucket, key) is None for key in expect["referenced_keys"])
        status, scan = airflow.request("GET", f"{run_path}/taskInstances/scan/xcomEntries/return_value")
        assert status == 200, scan
        scan = json.loads(scan["value"]) if isinstance(scan["value"], str) else scan["value"]
        plan = Path(scan["plan"])
        assert plan.parent.parent == airflow.ops / DAG_ID and plan.name == "plan.parquet" and plan.exists()
        assert detail["options"] == ["Approve", "Reject"]
        assert detail["subject"].startswith(f"Restore {n} objects") and table in detail["subject"]
        body = detail["body"]
        assert f"| undelete (remove the delete markers above a version) | {n} |" in body, body
        assert str(plan) in body and "**Unrecoverable**" not in body
        assert expect["referenced_keys"][0] in body or "… and" in body  # the first keys of each kind
        assert f"**Plan digest** `{scan['plan_digest']}`" in body

        t0 = time.monotonic()
        response = answer(airflow, run_path, "Approve")
        assert response["responded_by"]["name"] == "admin"
        run, states = finish(airflow, run_path)
        airflow.timings["run after the approval"] = time.monotonic() - t0
        assert run["state"] == "success", states
        assert states == dict.fromkeys(TASKS, "success")
        assert "APPROVED by admin" in task_log(airflow, run_path, "approval")

        # one mapped amend per shard, each named after its key range
        count = -(-n // SHARD_KEYS)
        shards = mapped_instances(airflow, run_path, "amend")
        assert [(ti["map_index"], ti["state"]) for ti in shards] == [(i, "success") for i in range(count)], shards
        assert [ti["rendered_map_index"].split(":")[0] for ti in shards] == [f"shard {i}/{count}"
                                                                              for i in range(1, count + 1)]
        status, xcom = airflow.request("GET", f"{run_path}/taskInstances/report/xcomEntries/return_value")
        assert status == 200, xcom
        report = json.loads(xcom["value"]) if isinstance(xcom["value"], str) else xcom["value"]
        assert report["plan"] == str(plan) and report["restored"] == n  # the approved plan, not a new scan
        assert report["plan_digest"] == scan["plan_digest"] and report["shards"] == count
        assert report["report"] == str(plan.parent / "report.parquet") and (plan.parent / "report.parquet").exists()
        # the union of the shards is the approved plan; each key was restored once, by one shard
        whole = load_plan(str(plan))
        parts = [load_plan(str(p)) for p in sorted(plan.parent.glob("plan.shard-*.parquet"))]
        assert len(parts) == count and all(shard_info(p).parent_digest == whole.digest for p in parts)
        assert sorted(i.key for p in parts for i in p.items) == sorted(i.key for i in whole.items)
        restored = [k.key for k in load_report(str(plan.parent / "report.parquet")).keys]
        assert sorted(restored) == sorted(expect["referenced_keys"])
        status, xcom = airflow.request("GET", f"{run_path}/taskInstances/verify/xcomEntries/return_value")
        assert status == 200, xcom
        verify = json.loads(xcom["value"]) if isinstance(xcom["value"], str) else xcom["value"]
        assert verify["ok"] and verify["total_rows"] == expect["row_count"], verify

        # the second table: rejected
        before = all_versions(s3, other_bucket)
        run_path = trigger(airflow, {"table": f"s3://{other_bucket}/{other['storage_root']}",
                                      "aws_conn_id": CONN_ID, "dry_run": False})
        await_approval(airflow, run_path)
        answer(airflow, run_path, "Reject")
        run, states = finish(airflow, run_path)
        assert states["approval"] == "success" and states["amend"] == "skipped" and states["verify"] == "skipped"
        assert "REJECTED by admin: nothing written" in task_log(airflow, run_path, "approval")
        assert all_versions(s3, other_bucket) == before  # not one marker removed, not one version added

    # the restore, checked on the bucket itself: each referenced key back with the bytes Databend wrote
    assert_restored(s3, bucket, FIXTURE, expect)
