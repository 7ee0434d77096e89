"""Never make it worse: the data-loss paths found in review, each closed and tested (issue 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_fuse.engine import AmendOptions, amend, scan
from airflow_fuse.errors import redact
from airflow_fuse.plan import save_plan
from airflow_fuse.restore import Restorer
from tests.conftest import new_bucket
from tests.helpers import all_versions, data_versions, delete_keys, put_objects, read


def _cli_start(server, *args: str, endpoint: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_DEFAULT_REGION="us-east-1")
    return subprocess.Popen([sys.executable, "-m", "airflow_fuse.cli", *args, "--endpoint-url",
                             endpoint or server.endpoint_url], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cli_done(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _cli(server, *args: str, endpoint: str | None = None) -> subprocess.CompletedProcess:
    return _cli_done(_cli_start(server, *args, endpoint=endpoint))


# 1. suspended versioning ---------------------------------------------------------------------------------

def test_suspended_versioning_refuses_to_write_and_a_writers_data_survives(ceph_server, tmp_path):
    """The review's case, on Ceph (moto drops every version of a key deleted while Suspended): objects written
    while Enabled, deleted while Suspended (a 'null' marker on top), a plan saved, then a writer PUTs 5 keys (its
    'null' data version replaces the 'null' marker). Applying the plan must write nothing while Suspended, and
    once Enabled again, must leave the writer's 5 keys alone."""
    s3 = ceph_server.client()
    bucket = new_bucket(s3)
    objects = {f"t/k{i:02d}": f"original {i}".encode() for i in range(12)}
    put_objects(s3, bucket, objects)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    delete_keys(s3, bucket, list(objects))
    assert _cli(ceph_server, "scan", f"s3://{bucket}/t/", "--plan-out", str(tmp_path / "plan.json")).returncode == 4
    written = {f"t/k{i:02d}": f"the writer's data {i}".encode() for i in range(5)}
    put_objects(s3, bucket, written)
    before = all_versions(s3, bucket)

    for strategy in ("auto", "copy"):
        refused = _cli(ceph_server, "amend", f"s3://{bucket}/t/", "--plan", str(tmp_path / "plan.json"),
                       "--strategy", strategy)
        assert refused.returncode == 2, refused.stderr
        assert "Suspended" in refused.stderr and "Status=Enabled" in refused.stderr
        assert all_versions(s3, bucket) == before  # nothing written
        assert all(read(s3, bucket, k) == v for k, v in written.items())

    # A fresh amend refuses too (the check is just before the first write, whatever the plan's origin)
    fresh = _cli(ceph_server, "amend", f"s3://{bucket}/t/")
    assert fresh.returncode == 2 and "Suspended" in fresh.stderr
    assert all_versions(s3, bucket) == before

    # Enabled again: the plan's 'null' current entries are compared by ETag, size and LastModified, not by id
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    done = _cli(ceph_server, "amend", f"s3://{bucket}/t/", "--plan", str(tmp_path / "plan.json"), "--json")
    summary = json.loads(done.stdout)
    assert done.returncode == 1, done.stderr  # keys changed since the scan: not whole, say so
    assert summary["results"] == {"changed since scan": 5, "copied": 7} or summary["results"] == {
        "changed since scan": 5, "undeleted": 7}
    assert all(read(s3, bucket, k) == v for k, v in written.items())  # the writer's data survives
    assert all(read(s3, bucket, k) == v for k, v in objects.items() if k not in written)
    assert set(data_versions(s3, bucket)) >= {(k, v) for k, v, marker in before if not marker}


def test_a_scan_works_while_suspended(s3, bucket):
    put_objects(s3, bucket, {"t/a": b"a"})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    plan = scan(s3, f"s3://{bucket}/t/")
    assert plan.keys_listed == 1 and plan.counts()["unrecoverable"] == 0
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


# 2. DeleteObjects: only confirmed removals count; >1000 markers of one key ---------------------------------

class _Client:
    """A real client whose DeleteObjects answers are altered (a server that drops the Deleted list)."""

    def __init__(self, client, *, forward: bool = True) -> None:
        self._client, self._forward = client, forward
        self.delete_calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def delete_objects(self, **kwargs):
        self.delete_calls.append(len(kwargs["Delete"]["Objects"]))
        if self._forward:
            self._client.delete_objects(**kwargs)
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}  # neither Deleted nor Errors


def test_removals_deleteobjects_does_not_confirm_are_checked_not_counted(s3, bucket):
    objects = {f"t/k{i}": b"x" * i for i in range(1, 6)}
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    plan = scan(s3, f"s3://{bucket}/t/")
    # The server did the work but its answer lists nothing: each key is confirmed by its own listing
    confirmed = Restorer(_Client(s3), plan, strategy="undelete").run()
    assert {o.result for o in confirmed.outcomes} == {"undeleted"}
    assert all("confirmed by listing" in o.detail for o in confirmed.outcomes)
    assert all(read(s3, bucket, k) == v for k, v in objects.items())

    delete_keys(s3, bucket, list(objects))
    plan = scan(s3, f"s3://{bucket}/t/")
    # The server did nothing and said nothing: not one key is counted as restored
    silent = Restorer(_Client(s3, forward=False), plan, strategy="undelete").run()
    assert {o.result for o in silent.outcomes} == {"failed"}
    assert all("confirmed 0 of 1" in o.detail and "run again" in o.detail for o in silent.outcomes)
    assert all(read(s3, bucket, k) is None for k in objects)


class _Partial(_Client):
    """A real client whose server refuses the markers of some keys (AccessDenied, nothing removed) and whose answers
    leave out the removals of others (done, but not said)."""

    def __init__(self, client, *, denied: set[str], unsaid: set[str]) -> None:
        super().__init__(client)
        self.denied, self.unsaid = denied, unsaid

    def delete_objects(self, **kwargs):
        objects = kwargs["Delete"]["Objects"]
        self.delete_calls.append(len(objects))
        sent = [o for o in objects if o["Key"] not in self.denied]
        answer = self._client.delete_objects(**{**kwargs, "Delete": {**kwargs["Delete"], "Objects": sent}})
        deleted = [d for d in answer.get("Deleted", []) if d["Key"] not in self.unsaid]
        errors = [{**o, "Code": "AccessDenied", "Message": "Access Denied"} for o in objects if o["Key"] in self.denied]
        return {"Deleted": deleted, "Errors": errors}


@pytest.mark.parametrize("strategy", ["undelete", "auto"])
def test_removals_taken_from_the_plan_columns_count_only_what_the_answer_confirms(s3, bucket, strategy, monkeypatch):
    """A fresh plan's marker removals go to DeleteObjects straight from its columns (no object per key), in full
    requests across the chunks of rows read: a key is counted as the plan said only when the answer confirms
    its removal; one left unsaid is looked at, one refused fails (or is copied under auto)."""
    from airflow_fuse import restore
    from airflow_fuse.plan import PlanRows

    monkeypatch.setattr(restore, "_FEED_ROWS", 7)  # rows read 7 at a time,
    monkeypatch.setattr(restore, "DELETE_BATCH", 5)  # removals sent 5 at a time
    objects = {f"t/k{i:02d} &<ü>": b"x" * (i + 1) for i in range(23)}
    put_objects(s3, bucket, objects)
    delete_keys(s3, bucket, list(objects))
    keys = sorted(objects)
    denied, unsaid = {keys[4]}, {keys[9], keys[16]}
    plan = scan(s3, f"s3://{bucket}/t/")
    assert isinstance(plan.items, PlanRows)
    client = _Partial(s3, denied=denied, unsaid=unsaid)
    result = Restorer(client, plan, strategy=strategy).run(recheck="per-key")
    assert client.delete_calls == [5, 5, 5, 5, 3]  # full requests, whatever the chunks of rows
    by_key = {o.key: o for o in result.outcomes}
    assert len(by_key) == len(objects)
    planned = {item.key: item for item in plan.items}
    for key in keys:
        outcome = by_key[key]
        if key in denied and strategy == "undelete":
            assert outcome.result == "failed" and "DeleteObjects refused: AccessDenied" in outcome.detail
            assert read(s3, bucket, key) is None
            continue
        assert read(s3, bucket, key) == objects[key]
        if key in denied:
            assert (outcome.result, outcome.detail) == ("copied", "marker removal denied; copied instead")
        elif key in unsaid:
            assert outcome.result == "undeleted" and "confirmed by listing" in outcome.detail
        else:
            assert (outcome.result, outcome.detail) == ("undeleted", "removed 1 delete marker(s)")
            assert (outcome.version_id, outcome.size, outcome.markers_removed) == (
                planned[key].version_id, len(objects[key]), planned[key].delete_markers)
    assert result.bytes_restored() == sum(len(objects[k]) for k in keys if strategy == "auto" or k not in denied)


def test_a_key_under_more_than_1000_markers_is_split_across_requests(moto_server):
    """moto stacks a marker per DELETE (Ceph does not): 1,203 markers on one key, removed in two requests."""
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    put_objects(s3, bucket, {"t/deep": b"bottom", "t/other": b"o"})
    delete_keys(s3, bucket, ["t/other"])
    for _ in range(1203):
        s3.delete_object(Bucket=bucket, Key="t/deep")
    plan = scan(s3, f"s3://{bucket}/t/")
    assert len(next(i for i in plan.items if i.key == "t/deep").delete_markers) == 1203
    client = _Client(s3)
    client.delete_objects = lambda **kw: (client.delete_calls.append(len(kw["Delete"]["Objects"])),
                                          s3.delete_objects(**kw))[1]
    result = Restorer(client, plan).run()
    assert {o.key: o.result for o in result.outcomes} == {"t/deep": "undeleted", "t/other": "undeleted"}
    assert max(client.delete_calls) <= 1000 and sum(client.delete_calls) == 1204
    assert read(s3, bucket, "t/deep") == b"bottom"


# 3. multipart copies record their version and leave no upload behind --------------------------------------

def test_a_multipart_copy_records_its_new_version_and_leaves_no_upload(s3, bucket):
    big = os.urandom(11 * 1024 * 1024)
    put_objects(s3, bucket, {"t/big": big, "t/small": b"s"})
    delete_keys(s3, bucket, ["t/big", "t/small"])
    report = amend(s3, table=f"s3://{bucket}/t/",
                   options=AmendOptions(strategy="copy", multipart_threshold=5 * 1024 * 1024))
    assert report.summary()["results"] == {"copied": 2}
    assert read(s3, bucket, "t/big") == big
    for outcome in report.restore.outcomes:
        assert outcome.new_version_id == s3.head_object(Bucket=bucket, Key=outcome.key)["VersionId"]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_an_unfinished_upload_of_a_killed_run_is_aborted(s3, bucket):
    big = os.urandom(6 * 1024 * 1024)
    put_objects(s3, bucket, {"t/big": big})
    delete_keys(s3, bucket, ["t/big"])
    # what a run killed between UploadPartCopy and CompleteMultipartUpload leaves behind
    s3.create_multipart_upload(Bucket=bucket, Key="t/big")
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1
    report = amend(s3, table=f"s3://{bucket}/t/",
                   options=AmendOptions(strategy="copy", multipart_threshold=5 * 1024 * 1024))
    assert report.summary()["results"] == {"copied": 1}
    assert read(s3, bucket, "t/big") == big
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


# 4. failures are visible ------------------------------------------------------------------------------------

def test_the_amend_task_fails_when_keys_changed_since_the_scan(s3, bucket, conn_id, tmp_path):
    from airflow.sdk.exceptions import AirflowException

    from airflow_fuse.operators.amend import FuseAmendOperator

    put_objects(s3, bucket, {"t/a": b"a", "t/b": b"b"})
    delete_keys(s3, bucket, ["t/a", "t/b"])
    save_plan(scan(s3, f"s3://{bucket}/t/"), str(tmp_path / "plan.json"))
    put_objects(s3, bucket, {"t/a": b"written after the scan"})
    operator = FuseAmendOperator(task_id="amend", plan=str(tmp_path / "plan.json"), aws_conn_id=conn_id)
    with pytest.raises(AirflowException, match="changed since scan") as raised:
        operator.execute({})
    assert "t/a" in str(raised.value) and "scan again" in str(raised.value)
    assert read(s3, bucket, "t/a") == b"written after the scan" and read(s3, bucket, "t/b") == b"b"


def test_scan_exit_status_tells_a_cron_job_what_it_found(moto_server):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    put_objects(s3, bucket, {"t/a": b"a"})
    assert _cli(moto_server, "scan", f"s3://{bucket}/t/").returncode == 0
    delete_keys(s3, bucket, ["t/a"])
    found = _cli(moto_server, "scan", f"s3://{bucket}/t/", "--json")
    assert found.returncode == 4 and json.loads(found.stdout)["exit_status"] == 4
    assert "4 scan / dry run" in _cli(moto_server, "--help").stdout.replace("\n", " ")


# 5. secrets and bad input -----------------------------------------------------------------------------------

def test_credentials_in_an_endpoint_url_are_never_printed(moto_server, tmp_path):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    put_objects(s3, bucket, {"t/a": b"a"})
    delete_keys(s3, bucket, ["t/a"])
    host = moto_server.endpoint_url.split("://", 1)[1]
    # Both at once (each in its own folder): the unreachable one spends its time in the client's back-off.
    endpoints = {"reachable": f"http://admin:hunter2secret@{host}", "unreachable": "http://admin:hunter2secret@127.0.0.1:9"}
    runs = []
    for name, endpoint in endpoints.items():
        (tmp_path / name).mkdir()
        runs.append(_cli_start(moto_server, "amend", f"s3://{bucket}/t/", "--plan-out", str(tmp_path / name / "p.json"),
                               "--report", str(tmp_path / name / "r.json"), "-v", endpoint=endpoint))
    results = [_cli_done(run) for run in runs]
    written = "".join(p.read_text() for p in tmp_path.rglob("*.json"))
    for result in results:
        assert "hunter2secret" not in result.stdout + result.stderr + written, result.stderr[-2000:]
    assert redact("cannot reach http://u:p@h:1/x and https://tok@h2/") == "cannot reach http://***@h:1/x and https://***@h2/"


def test_a_time_out_of_range_is_bad_input_not_a_traceback(moto_server):
    result = _cli(moto_server, "scan", "s3://some-bucket/t/", "--as-of", "0001-01-01T00:00:00+14:00")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "out of range" in result.stderr


def test_connection_config_kwargs_merge_over_our_retry_and_pool_settings(monkeypatch):
    from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook

    monkeypatch.setenv("AIRFLOW_CONN_FUSE_CONFIG", json.dumps(
        {"conn_type": "aws", "extra": {"config_kwargs": {"read_timeout": 7}}}))
    config = VersionedS3Hook(aws_conn_id="fuse_config").config
    assert config.read_timeout == 7
    assert config.retries["mode"] == "adaptive" and config.max_pool_connections == 64


def test_the_client_retries_as_usual_once_the_restore_is_done(s3_server):
    """The no-blind-retry guard lives only as long as a restore: the client may be a hook's, used by other code."""
    from tests.servers.fault_proxy import fault_proxy

    with fault_proxy(s3_server, seed=1, error=1.0, operations={"CopyObject"}, max_faults=2) as proxy:
        client = proxy.in_front_of(s3_server).client()
        bucket = new_bucket(client)
        put_objects(client, bucket, {"t/a": b"a"})
        delete_keys(client, bucket, ["t/a"])
        report = amend(client, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy"))
        assert report.summary()["results"] == {"copied": 1}  # the 503 was looked at, then the copy tried again
        source = client.put_object(Bucket=bucket, Key="t/b", Body=b"b")["VersionId"]
        # no restore running: botocore retries the second 503 on its own again
        client.copy_object(Bucket=bucket, Key="t/d", CopySource={"Bucket": bucket, "Key": "t/b", "VersionId": source})
        assert read(client, bucket, "t/d") == b"b"
        assert sum(n for (_, op), n in proxy.faults.items() if op == "CopyObject") == 2
