"""Undo a restore from its saved report: the table goes back to its broken state and no older data is lost.

Arrange a table, break it, amend it saving a report, undo: every key the restore brought back is deleted again,
every data version that existed before the restore still exists, a second undo changes nothing, and a second
amend brings the table back. Keys changed since the restore (a writer) are left alone.
"""

from __future__ import annotations

import json
import os
import random
from datetime import datetime, timedelta, timezone

import pytest

from airflow_fuse.engine import AmendOptions, amend
from airflow_fuse.errors import BadInputError, PreconditionError
from airflow_fuse.inventory import KeyHistory
from airflow_fuse.listing import VersionEntry
from airflow_fuse.plan import Plan, PlanItem
from airflow_fuse.report import Report
from airflow_fuse.restore import Outcome, RestoreResult
from airflow_fuse.undo import (
    ALREADY_UNDONE,
    LEFT_ALONE,
    RestoredKey,
    decide_copy,
    decide_undelete,
    parse_report,
    undo,
)
from tests.conftest import new_bucket
from tests.fuse_fixtures import assert_restored, broken_table
from tests.helpers import all_versions, data_versions, delete_keys, put_objects, read, sha

# pure decisions -------------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def _entry(version: str, *, marker: bool = False, size: int = 10, etag: str = "e1", minutes: int = 0,
           latest: bool = False) -> VersionEntry:
    return VersionEntry("t/k", version, marker, latest, 0 if marker else size, T0 + timedelta(minutes=minutes),
                        "" if marker else etag)


def _history(*entries: VersionEntry) -> KeyHistory:
    return KeyHistory("t/k", entries)


def test_a_marker_goes_back_only_on_the_version_the_restore_brought_back():
    item = RestoredKey("t/k", "undeleted", "v1", 10, ["m1"])
    assert decide_undelete(item, _history(_entry("v1"))).result == "undo"
    deleted = decide_undelete(item, _history(_entry("m2", marker=True), _entry("v1")))
    assert deleted.result == ALREADY_UNDONE
    rewritten = decide_undelete(item, _history(_entry("v2", etag="e2"), _entry("v1")))
    assert rewritten.result == LEFT_ALONE and "written since the restore" in rewritten.detail
    assert decide_undelete(item, None).result == LEFT_ALONE
    null_item = RestoredKey("t/k", "undeleted", "null", 10)
    assert decide_undelete(null_item, _history(_entry("null", size=99))).result == LEFT_ALONE


def test_a_copy_is_deleted_only_when_current_and_holding_the_source_bytes():
    item = RestoredKey("t/k", "copied", "v1", 10, new_version_id="c1")
    source = _entry("v1")
    marker = _entry("m1", marker=True, minutes=1)
    copy = _entry("c1", minutes=2)
    ok = decide_copy(item, _history(copy, marker, source), None)
    assert (ok.result, ok.target, ok.compare) == ("undo", "c1", None)
    assert decide_copy(item, _history(marker, source), None).result == ALREADY_UNDONE
    writer = decide_copy(item, _history(_entry("w1", etag="e9", minutes=3), copy, marker, source), None)
    assert writer.result == LEFT_ALONE and "no longer current" in writer.detail
    assert decide_copy(item, _history(copy, marker), None).result == LEFT_ALONE  # source gone: the only bytes
    assert decide_copy(item, _history(_entry("c1", size=11, minutes=2), marker, source), None).result == LEFT_ALONE
    multipart = decide_copy(item, _history(_entry("c1", etag="abc-2", minutes=2), marker, source), None)
    assert multipart.result == "undo" and multipart.compare is not None  # bytes still to be read and compared


def test_a_copy_without_its_version_id_is_deleted_only_with_proof():
    item = RestoredKey("t/k", "copied", "v1", 10)
    scan = T0 + timedelta(minutes=1, seconds=30)
    source, marker = _entry("v1"), _entry("m1", marker=True, minutes=1)
    copy = _entry("c1", minutes=2)
    proven = decide_copy(item, _history(copy, marker, source), scan)
    assert (proven.result, proven.target) == ("undo", "c1")
    no_time = decide_copy(item, _history(copy, marker, source), None)
    assert no_time.result == LEFT_ALONE and "no new_version_id" in no_time.detail
    same_bytes_twice = decide_copy(item, _history(copy, _entry("c0", minutes=2), marker, source), scan)
    assert same_bytes_twice.result == LEFT_ALONE and "not provable" in same_bytes_twice.detail
    old = decide_copy(item, _history(_entry("c1", minutes=1), marker, source), scan)
    assert old.result == LEFT_ALONE and "before the scan" in old.detail
    writer = decide_copy(item, _history(_entry("w1", etag="e9", minutes=3), copy, marker, source), scan)
    assert writer.result == LEFT_ALONE
    assert decide_copy(item, _history(marker, source), scan).result == ALREADY_UNDONE


def test_no_decision_ever_removes_a_version_that_is_not_current_or_the_source():
    """Random histories: undo targets only the current version, never the source, never a different size."""
    rng = random.Random(20261101)
    for _ in range(3000):
        entries = []
        for minute in range(rng.randint(1, 6), 0, -1):
            marker = rng.random() < 0.3
            entries.append(_entry(f"x{minute}", marker=marker, size=rng.choice([10, 11]),
                                  etag=rng.choice(["e1", "e2", "e1-2"]), minutes=minute))
        entries.append(_entry("v1"))
        history = _history(*entries)
        ids = [e.version_id for e in entries]
        copy_item = RestoredKey("t/k", "copied", "v1", 10, new_version_id=rng.choice(["", "", *ids]))
        since = rng.choice([None, T0, T0 + timedelta(minutes=rng.randint(0, 6))])
        copy = decide_copy(copy_item, history, since)
        if copy.result == "undo":
            current = history.current
            assert copy.target == current.version_id != "v1"
            assert not current.is_delete_marker and current.size == 10
            assert copy.compare is not None or current.etag == "e1"
        undelete = decide_undelete(RestoredKey("t/k", "undeleted", "v1", 10), history)
        if undelete.result == "undo":
            assert history.current.version_id == "v1"


# reading reports ------------------------------------------------------------------------------------------

def _report(*, dry_run: bool = False, restore: bool = True) -> Report:
    plan = Plan(bucket="b-undo", prefix="t/", table_format="prefix", listed_at="2026-11-01T12:00:00Z", items=[
        PlanItem(key="t/a", status="restore", action="undelete", version_id="v1", size=3, delete_markers=["m1"]),
        PlanItem(key="t/b", status="restore", action="copy", version_id="v2", size=4),
        PlanItem(key="t/c", status="present", version_id="v3", size=5)])
    outcomes = [Outcome("t/a", "would undelete" if dry_run else "undeleted", "undelete", "v1", 3,
                        markers_removed=["m1"]),
                Outcome("t/b", "would copy" if dry_run else "copied", "copy", "v2", 4, new_version_id="c2")]
    return Report(plan, RestoreResult("auto", dry_run, outcomes) if restore else None)


def test_a_saved_report_in_either_format_lists_what_the_restore_changed():
    report = _report()
    for data in (report.to_json().encode(), report.to_parquet()):
        parsed = parse_report(data, source="r")
        assert (parsed.location.bucket, parsed.location.prefix) == ("b-undo", "t/")
        assert [(k.key, k.result, k.version_id, k.markers_removed, k.new_version_id) for k in parsed.keys] == [
            ("t/a", "undeleted", "v1", ["m1"], ""), ("t/b", "copied", "v2", [], "c2")]
        assert parsed.rows_not_changed == 1
    assert parse_report(report.to_json().encode()).listed_at == datetime(2026, 11, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize("make, message", [
    (lambda: _report(dry_run=True).to_json().encode(), "dry run"),
    (lambda: _report(dry_run=True).to_parquet(), "dry run"),
    (lambda: _report(restore=False).to_parquet(), "report of a scan"),
    (lambda: _report().plan.to_json().encode(), "is a plan, not a report"),
    (lambda: _report().plan.to_parquet(), "is a plan, not a report"),
    (lambda: b'{"rows": []}', "not an airflow-fuse report"),
    (lambda: b"PAR1 not really", "not an airflow-fuse report"),
    (lambda: "\u00e9t\u00e9".encode("latin-1"), "not an airflow-fuse report"),
    (lambda: _report().to_json().replace('"t/b"', '"elsewhere/b"').encode(), "not inside the table"),
    (lambda: _report().to_json().replace('"c2"', '"v2"').encode(), "names its source version"),
])
def test_anything_but_a_restore_report_is_refused(make, message):
    with pytest.raises(BadInputError, match=message):
        parse_report(make(), source="r")


# against the servers -----------------------------------------------------------------------------------------

def _prefix_table(s3, bucket: str, n: int = 8) -> dict[str, bytes]:
    objects = {f"t/part={i % 2}/f{i:02d}.parquet": os.urandom(64 + i) for i in range(n)}
    put_objects(s3, bucket, objects)
    return objects


def _results(result) -> dict[str, str]:
    return {o.key: o.result for o in result.outcomes}


@pytest.mark.parametrize("strategy, fmt", [("auto", "parquet"), ("copy", "json")])
def test_undo_puts_a_prefix_table_back_to_its_broken_state(s3, bucket, tmp_path, strategy, fmt):
    objects = _prefix_table(s3, bucket)
    gone = sorted(objects)[:5]
    delete_keys(s3, bucket, gone)
    broken = all_versions(s3, bucket)
    report = tmp_path / f"restore.{fmt}"
    restored = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy=strategy, report_uri=str(report)))
    assert restored.summary()["restored"] == 5
    assert all(read(s3, bucket, k) == objects[k] for k in gone)

    after_restore = all_versions(s3, bucket)
    dry = undo(s3, str(report), dry_run=True)
    assert set(_results(dry).values()) == {"would undo"}, dry.render()
    assert all_versions(s3, bucket) == after_restore  # a dry run writes nothing

    done = undo(s3, str(report), report_uri=str(tmp_path / "undo.json"))
    assert _results(done) == {k: "undone" for k in gone}, done.render()
    assert [read(s3, bucket, k) for k in gone] == [None] * 5  # deleted again
    assert all(read(s3, bucket, k) == objects[k] for k in sorted(objects)[5:])  # never touched
    assert set(data_versions(s3, bucket)) >= {(k, v) for k, v, m in broken if not m}  # nothing older removed
    if strategy == "copy":  # exactly the restore's copies were deleted
        assert data_versions(s3, bucket) == [(k, v) for k, v, m in broken if not m]
    saved = json.loads((tmp_path / "undo.json").read_text())
    assert saved["summary"]["undone"] == 5 and len(saved["rows"]) == 5

    before_second = all_versions(s3, bucket)
    again = undo(s3, str(report))
    assert set(_results(again).values()) == {ALREADY_UNDONE}, again.render()
    assert all_versions(s3, bucket) == before_second
    assert again.requests.get("DeleteObjects", 0) == 0

    amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy=strategy))
    assert all(sha(read(s3, bucket, k)) == sha(objects[k]) for k in objects)


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_undo_puts_a_databend_table_back_to_its_broken_state(s3, tmp_path, strategy):
    bucket, expect = broken_table(s3, "fuse_basic")
    data_before = set(data_versions(s3, bucket))
    report = tmp_path / "restore.json"
    table = f"s3://{bucket}/{expect['storage_root']}"
    amend(s3, table=table, options=AmendOptions(strategy=strategy, report_uri=str(report)))
    assert_restored(s3, bucket, "fuse_basic", expect)

    done = undo(s3, str(report))
    assert set(_results(done)) == set(expect["referenced_keys"]) and set(_results(done).values()) == {"undone"}
    assert all(read(s3, bucket, k) is None for k in expect["referenced_keys"])
    assert data_before <= set(data_versions(s3, bucket))
    if strategy == "copy":
        assert set(data_versions(s3, bucket)) == data_before

    amend(s3, table=table, options=AmendOptions(strategy=strategy))
    assert_restored(s3, bucket, "fuse_basic", expect)


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_a_writers_data_survives_the_undo(s3, bucket, tmp_path, strategy):
    objects = _prefix_table(s3, bucket)
    gone = sorted(objects)[:6]
    delete_keys(s3, bucket, gone)
    report = tmp_path / "restore.json"
    amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy=strategy, report_uri=str(report)))
    # after the restore a writer puts new data on one key and the source's very bytes again on another
    new_data, same_bytes = gone[0], gone[1]
    writes = put_objects(s3, bucket, {new_data: b"the writer's new data", same_bytes: objects[same_bytes]})

    done = undo(s3, str(report))
    results = _results(done)
    assert results[new_data] == results[same_bytes] == LEFT_ALONE, done.render()
    assert {results[k] for k in gone[2:]} == {"undone"}
    assert read(s3, bucket, new_data) == b"the writer's new data"
    assert read(s3, bucket, same_bytes) == objects[same_bytes]
    assert set(writes.items()) <= set(data_versions(s3, bucket))
    assert all(read(s3, bucket, k) is None for k in gone[2:])
    detail = next(o.detail for o in done.outcomes if o.key == new_data)
    assert writes[new_data] in detail


def test_a_writer_racing_the_undo_keeps_its_data_live(s3, s3_server, bucket, tmp_path):
    """A writer's put lands between the undo's listing and its marker: the marker comes off again."""
    objects = _prefix_table(s3, bucket, 4)
    delete_keys(s3, bucket, list(objects))
    report = tmp_path / "restore.parquet"
    amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(report_uri=str(report)))
    raced = sorted(objects)[0]
    writer = s3_server.client()
    calls = []

    def write_first(**_):
        if not calls:
            calls.append(writer.put_object(Bucket=bucket, Key=raced, Body=b"written during the undo")["VersionId"])

    s3.meta.events.register("before-call.s3.DeleteObjects", write_first, unique_id="undo-test-writer")
    try:
        done = undo(s3, str(report))
    finally:
        s3.meta.events.unregister("before-call.s3.DeleteObjects", unique_id="undo-test-writer")
    results = _results(done)
    assert results[raced] == LEFT_ALONE and "written while the undo ran" in \
        next(o.detail for o in done.outcomes if o.key == raced), done.render()
    assert read(s3, bucket, raced) == b"written during the undo"
    assert all(read(s3, bucket, k) is None for k in sorted(objects)[1:])


def test_copies_without_a_version_id_are_undone_only_with_the_scan_time(s3, bucket, tmp_path):
    """Some servers (Ceph) do not return the copy's version id: the report's scan time proves it, else hands off."""
    objects = _prefix_table(s3, bucket, 4)
    delete_keys(s3, bucket, list(objects))
    broken = all_versions(s3, bucket)
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy"))
    for outcome in report.restore.outcomes:
        outcome.new_version_id = ""
    report.save(str(tmp_path / "r.parquet"))
    report.save(str(tmp_path / "r.json"))
    no_scan_time = json.loads((tmp_path / "r.json").read_text())
    no_scan_time["summary"].pop("listed_at")
    no_scan_time["plan"]["listed_at"] = ""
    (tmp_path / "r-no-scan-time.json").write_text(json.dumps(no_scan_time))
    after_restore = all_versions(s3, bucket)

    unproven = undo(s3, str(tmp_path / "r-no-scan-time.json"))  # a report that does not say when the scan listed
    assert set(_results(unproven).values()) == {LEFT_ALONE}
    assert all("no new_version_id" in o.detail for o in unproven.outcomes)
    assert all_versions(s3, bucket) == after_restore

    proven = undo(s3, str(tmp_path / "r.parquet"))
    assert set(_results(proven).values()) == {"undone"}, proven.render()
    assert all_versions(s3, bucket) == broken
    assert set(_results(undo(s3, str(tmp_path / "r.json"))).values()) == {ALREADY_UNDONE}


def test_a_same_size_version_with_other_bytes_is_never_taken_for_the_copy(s3, bucket, tmp_path):
    """The restore's copy was removed and a writer put other bytes of the same size: only reading tells them apart."""
    put_objects(s3, bucket, {"t/a.parquet": b"A" * 100})
    delete_keys(s3, bucket, ["t/a.parquet"])
    report = amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy"))
    report.restore.outcomes[0].new_version_id = ""
    report.save(str(tmp_path / "r.json"))
    copy = s3.head_object(Bucket=bucket, Key="t/a.parquet")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="t/a.parquet", VersionId=copy)
    # same size, other bytes, uploaded in parts so that its ETag is not comparable with the source's
    upload = s3.create_multipart_upload(Bucket=bucket, Key="t/a.parquet")
    part = s3.upload_part(Bucket=bucket, Key="t/a.parquet", UploadId=upload["UploadId"], PartNumber=1,
                          Body=b"B" * 100)
    s3.complete_multipart_upload(Bucket=bucket, Key="t/a.parquet", UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    before = all_versions(s3, bucket)
    done = undo(s3, str(tmp_path / "r.json"))
    assert _results(done) == {"t/a.parquet": LEFT_ALONE}, done.render()
    assert "does not hold the bytes" in done.outcomes[0].detail
    assert all_versions(s3, bucket) == before and read(s3, bucket, "t/a.parquet") == b"B" * 100


def test_a_multipart_copy_is_compared_by_its_bytes(s3, bucket, tmp_path):
    """Above the multipart threshold the copy's ETag differs from its source's: the bytes decide."""
    body = os.urandom(6 * 1024**2)
    put_objects(s3, bucket, {"t/big.parquet": body, "t/small.parquet": b"small"})
    delete_keys(s3, bucket, ["t/big.parquet", "t/small.parquet"])
    broken = all_versions(s3, bucket)
    amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(strategy="copy", multipart_threshold=5 * 1024**2,
                                                              report_uri=str(tmp_path / "r.json")))
    etags = {v["VersionId"]: v["ETag"] for v in s3.list_object_versions(Bucket=bucket, Prefix="t/big")["Versions"]}
    assert len(set(etags.values())) == 2  # the multipart copy does not share its source's ETag
    done = undo(s3, str(tmp_path / "r.json"))
    assert _results(done) == {"t/big.parquet": "undone", "t/small.parquet": "undone"}, done.render()
    assert "bytes compared" in next(o.detail for o in done.outcomes if o.key == "t/big.parquet")
    assert all_versions(s3, bucket) == broken
    assert done.requests["GetObject"] == 2


def test_undo_refuses_unless_versioning_is_enabled(s3, bucket, tmp_path):
    objects = _prefix_table(s3, bucket, 3)
    delete_keys(s3, bucket, list(objects))
    amend(s3, table=f"s3://{bucket}/t/", options=AmendOptions(report_uri=str(tmp_path / "r.json")))
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    before = all_versions(s3, bucket)
    with pytest.raises(PreconditionError, match="Suspended.*nothing was changed"):
        undo(s3, str(tmp_path / "r.json"))
    assert all_versions(s3, bucket) == before


# front doors -----------------------------------------------------------------------------------------------

def test_cli_undo_dry_run_then_undo_and_refusals(moto_server, tmp_path):
    from tests.test_cli import _run

    s3 = moto_server.client()
    bucket = new_bucket(s3)
    objects = _prefix_table(s3, bucket, 4)
    delete_keys(s3, bucket, list(objects))
    dry_report, report = tmp_path / "dry.json", tmp_path / "r.parquet"
    assert _run(moto_server, "amend", f"s3://{bucket}/t/", "--dry-run", "--report", str(dry_report)).returncode == 4
    assert _run(moto_server, "amend", f"s3://{bucket}/t/", "--report", str(report)).returncode == 0
    restored = all_versions(s3, bucket)

    refused = _run(moto_server, "undo", "--report", str(dry_report))
    assert refused.returncode == 2 and "dry run" in refused.stderr
    not_a_report = tmp_path / "notes.json"
    not_a_report.write_text('{"hello": 1}')
    refused = _run(moto_server, "undo", "--report", str(not_a_report))
    assert refused.returncode == 2 and "not an airflow-fuse report" in refused.stderr
    assert all_versions(s3, bucket) == restored

    dry = _run(moto_server, "undo", "--report", str(report), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would undo 4" in dry.stdout and all_versions(s3, bucket) == restored
    done = _run(moto_server, "undo", "--report", str(report), "--json", "--undo-report", str(tmp_path / "u.parquet"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["undone"] == 4
    assert all(read(s3, bucket, k) is None for k in objects)
    assert (tmp_path / "u.parquet").stat().st_size > 0
    undo_of_undo = _run(moto_server, "undo", "--report", str(tmp_path / "u.parquet"))
    assert undo_of_undo.returncode == 2 and "report of an undo" in undo_of_undo.stderr


def test_undo_operator_in_a_dag(airflow_db, moto_server, tmp_path):
    from tests.conftest import run_dag, write_dag

    s3 = moto_server.client()
    bucket = new_bucket(s3)
    objects = _prefix_table(s3, bucket, 4)
    delete_keys(s3, bucket, list(objects))
    broken = all_versions(s3, bucket)
    report = tmp_path / "restore.json"
    dag = write_dag("amend_then_undo", f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from airflow_fuse.operators.amend import FuseAmendOperator
        from airflow_fuse.operators.undo import FuseUndoOperator

        with DAG("amend_then_undo", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
            amend = FuseAmendOperator(task_id="amend", table="s3://{bucket}/t/", strategy="copy",
                                      report_uri={str(report)!r}, aws_conn_id="fuse_moto")
            undo = FuseUndoOperator(task_id="undo", report="{{{{ ti.xcom_pull(task_ids='amend')['report'] }}}}",
                                    undo_report_uri={str(tmp_path / "undo.parquet")!r}, aws_conn_id="fuse_moto")
            amend >> undo
    """)
    run, states = run_dag(dag)
    assert states == {"amend": "success", "undo": "success"}, states
    summary = [ti for ti in run.get_task_instances() if ti.task_id == "undo"][0].xcom_pull(task_ids="undo")
    assert summary["undone"] == 4 and summary["report"] == str(tmp_path / "undo.parquet")
    assert all_versions(s3, bucket) == broken
