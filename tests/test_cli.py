"""The airflow-fuse command line, run as a user would: a subprocess with endpoint and credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import new_bucket
from tests.helpers import all_versions, delete_keys, put_objects, read


def _run(server, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_DEFAULT_REGION="us-east-1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "airflow_fuse.cli", *args, "--endpoint-url", server.endpoint_url],
                          env=env, capture_output=True, text=True, timeout=300)


def test_scan_then_amend_from_the_saved_plan(s3_server, s3, bucket, tmp_path):
    objects = {f"t/f{i}.parquet": f"data {i}".encode() for i in range(5)}
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    before = all_versions(s3, bucket)

    scan = _run(s3_server, "scan", f"s3://{bucket}/t/", "--plan-out", str(tmp_path / "plan.json"), "--json")
    assert scan.returncode == 4, scan.stderr  # found objects to restore: a cron job can alert on it
    summary = json.loads(scan.stdout)
    assert summary["restore"] == 5 and summary["to_undelete"] == 5
    assert all_versions(s3, bucket) == before  # a scan writes nothing

    dry = _run(s3_server, "amend", f"s3://{bucket}/t/", "--plan", str(tmp_path / "plan.json"), "--dry-run")
    assert dry.returncode == 4, dry.stderr
    assert "would restore 5 objects" in dry.stdout
    assert all_versions(s3, bucket) == before

    done = _run(s3_server, "amend", f"s3://{bucket}/t/", "--plan", str(tmp_path / "plan.json"),
                "--report", str(tmp_path / "report.parquet"))
    assert done.returncode == 0, done.stderr
    assert "every object the table needs is present" in done.stdout
    assert all(read(s3, bucket, k) == v for k, v in objects.items())
    assert (tmp_path / "report.parquet").stat().st_size > 0


def test_exit_status_2_with_a_message_for_bad_input(moto_server):
    s3 = moto_server.client()
    plain = new_bucket(s3, versioning=None)
    for args, text in [
        (("scan", "not-a-uri"), "not an s3:// URI"),
        (("scan", f"s3://{plain}/t/"), "versioning was never enabled"),
        (("scan", "s3://no-such-bucket-777/t/"), "does not exist"),
        (("amend", f"s3://{plain}/t/", "--as-of", "2026-01-01 10:00"), "no timezone"),
        (("amend", f"s3://{plain}"), "whole bucket"),
    ]:
        result = _run(moto_server, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert text in result.stderr, (args, result.stderr)
        assert moto_server.secret_key not in result.stderr + result.stdout


def test_exit_status_3_when_objects_are_unrecoverable(ceph_server):
    s3 = ceph_server.client()
    bucket = new_bucket(s3, versioning="Suspended")
    put_objects(s3, bucket, {"t/a": b"a"})
    delete_keys(s3, bucket, ["t/a"])
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    result = _run(ceph_server, "amend", f"s3://{bucket}/t/", "--json")
    assert result.returncode == 3, result.stderr
    summary = json.loads(result.stdout)
    assert summary["unrecoverable"] == 1 and "Suspended" in summary["first_unrecoverable"][0]["reason"]


def test_wrong_credentials_exit_2_without_the_secret(ceph_server):
    result = _run(ceph_server, "scan", "s3://some-bucket/t/",
                  env_extra={"AWS_SECRET_ACCESS_KEY": "not-the-secret-5150"})
    assert result.returncode == 2
    assert "credentials" in result.stderr and "not-the-secret-5150" not in result.stderr


def test_a_plan_for_another_table_is_refused(moto_server, tmp_path):
    s3 = moto_server.client()
    bucket, other = new_bucket(s3), new_bucket(s3)
    put_objects(s3, bucket, {"t/a": b"a"})
    delete_keys(s3, bucket, ["t/a"])
    assert _run(moto_server, "scan", f"s3://{bucket}/t/", "--plan-out", str(tmp_path / "p.parquet")).returncode == 4
    before = all_versions(s3, bucket)
    result = _run(moto_server, "amend", f"s3://{other}/t/", "--plan", str(tmp_path / "p.parquet"))
    assert result.returncode == 2
    assert f"is for s3://{bucket}/t/" in result.stderr and "scan this table again" in result.stderr
    assert all_versions(s3, bucket) == before


_LOAD_AND_FAIL = """
import sys
from airflow_fuse.plan import Plan
plan = Plan.from_parquet(open(sys.argv[1], "rb").read())
assert plan.items[0].key == "t/a"
sys.exit(2)
"""


def test_reading_a_parquet_plan_leaves_the_exit_status_alone(tmp_path):
    """pyarrow's dataset reader can abort the process at exit (SIGABRT, apache/arrow#34314): with it, about
    one short process in five that read a plan died with -6 instead of its exit status. 24 processes: the
    chance that all survive with that reader is under 0.5%."""
    from airflow_fuse.plan import Plan, PlanItem

    plan = Plan(bucket="b", prefix="t/", table_format="prefix",
                items=[PlanItem(key="t/a", status="restore", action="undelete", version_id="v1", size=1)])
    (tmp_path / "p.parquet").write_bytes(plan.to_parquet())
    statuses = []
    for _ in range(6):
        batch = [subprocess.Popen([sys.executable, "-c", _LOAD_AND_FAIL, str(tmp_path / "p.parquet")],
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        statuses += [(proc.wait(timeout=120), proc.stderr.read()) for proc in batch]
    assert [status for status, _ in statuses] == [2] * 24, [err for status, err in statuses if status != 2]
