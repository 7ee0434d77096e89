"""Shards: a plan cut by key range (properties of the cut, no server), a shard's range listing, and a restore
applied shard by shard on the real servers, its reports merged."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_fuse.engine import AmendOptions, amend, scan
from airflow_fuse.errors import EXIT_ERROR, EXIT_OK, BadInputError
from airflow_fuse.listing import iter_object_versions, iter_range_versions
from airflow_fuse.location import TableLocation
from airflow_fuse.plan import Plan, PlanItem, load_plan, open_plan, save_plan
from airflow_fuse.restore import Restorer
from airflow_fuse.shards import (
    SHARD_INFO,
    KeyRange,
    merge_reports,
    save_merged,
    save_shards,
    shard_count,
    shard_info,
    shard_label,
    split_plan,
)
from tests.helpers import all_versions, data_versions, delete_keys, put_objects, read
from tests.test_plan_properties import PROPERTIES, names, plan_items

# the cut (no server) ------------------------------------------------------------------------------------


@st.composite
def big_plans(draw: st.DrawFn) -> Plan:
    keys = draw(st.lists(names, min_size=1, max_size=40, unique=True))
    return Plan(bucket="lake", prefix="t/", table_format="prefix", items=[draw(plan_items("t/" + k)) for k in keys],
                listed_at="2026-01-01T00:00:00Z")


def _weight(items: list[PlanItem], keys: int, size: int) -> float:
    return sum(1 / keys + (i.size / size if size else 0) for i in items if i.actionable)


@PROPERTIES
@given(plan=big_plans(), shards=st.integers(1, 9))
def test_shards_partition_the_plan_in_key_order_and_balance_keys_and_bytes(plan, shards):
    parts = split_plan(plan, shards)
    work = plan.actionable()
    assert 1 <= len(parts) <= max(1, min(shards, len(work)))
    # union = the plan, disjoint: every row in exactly one shard, unchanged
    rows = sorted((asdict(i) for part in parts for i in part.items), key=lambda r: r["key"])
    assert rows == sorted((asdict(i) for i in plan.items), key=lambda r: r["key"])
    infos = [shard_info(part) for part in parts]
    assert [i.index for i in infos] == list(range(len(parts))) and {i.count for i in infos} == {len(parts)}
    # ranges follow each other in key order and cover every key
    assert infos[0].range.after is None and infos[-1].range.end is None
    for before, after in zip(infos, infos[1:], strict=False):
        assert before.range.end == after.range.after and before.range.end is not None
    for part, info in zip(parts, infos, strict=True):
        assert all(item.key in info.range for item in part.items)
        assert [i.key for i in part.items] == sorted(i.key for i in part.items)
        assert info.parent_digest == plan.digest
        assert info.keys == len(part.actionable()) and info.bytes == part.bytes_to_restore()
        if len(parts) > 1:
            assert part.actionable(), "a shard with nothing to restore"
    # balanced: no shard weighs more than its share plus one row (weight: its share of keys + of bytes)
    if work:
        keys, size = len(work), sum(i.size for i in work)
        total, heaviest = _weight(work, keys, size), max(_weight([i], keys, size) for i in work)
        for part in parts:
            assert _weight(part.items, keys, size) <= total / len(parts) + heaviest + 1e-9
    # each shard is a plan: same header, loads back from either form with its digest
    for part in parts:
        assert part.header() | {"info": {}} == plan.header() | {"info": {}}
        assert {k: v for k, v in part.info.items() if k != SHARD_INFO} == plan.info
        assert Plan.from_parquet(part.to_parquet()).digest == part.digest
        assert Plan.from_json(part.to_json()).digest == part.digest


def test_equal_keys_split_evenly_and_bytes_count_too():
    plan = Plan(bucket="lake", prefix="t/", table_format="prefix", listed_at="2026-01-01T00:00:00Z", items=[
        PlanItem(key=f"t/k{i:04d}", status="restore", action="undelete", version_id="v", size=10,
                 current_version_id="m", current_is_delete_marker=True, delete_markers=["m"]) for i in range(1000)])
    assert [len(p.items) for p in split_plan(plan, 4)] == [250, 250, 250, 250]
    assert shard_count(plan, shard_keys=300) == 4 and shard_count(plan, shard_keys=5000) == 1
    # one key holds half the bytes: its shard gets fewer keys
    plan.items[0] = replace(plan.items[0], size=9990)
    sizes = [len(p.items) for p in split_plan(plan, 4)]
    assert sum(sizes) == 1000 and sizes[0] < 250


def _shard_plan(tmp_path: Path) -> tuple[Plan, list[Plan]]:
    plan = Plan(bucket="lake", prefix="t/", table_format="prefix", listed_at="2026-01-01T00:00:00Z", items=[
        PlanItem(key=f"t/k{i}", status="restore", action="undelete", version_id="v", size=1, current_version_id="m",
                 current_is_delete_marker=True, delete_markers=["m"]) for i in range(6)])
    return plan, split_plan(plan, 3)


def test_a_shard_is_refused_for_another_table_or_when_changed(tmp_path):
    plan, parts = _shard_plan(tmp_path)
    # a client whose every request would fail to connect: a refusal must come before any
    nowhere = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1", aws_access_key_id="x",
                           aws_secret_access_key="y")
    path = save_plan(parts[1], str(tmp_path / "s.parquet"))
    with pytest.raises(BadInputError, match="is for s3://lake/t/, not s3://lake/other/"):
        open_plan(path, table=TableLocation("lake", "other/"), max_age=None)
    # its range widened without the digest: the digest says so
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"airflow_fuse.plan"])
    meta["info"][SHARD_INFO]["end"] = None
    pq.write_table(table.replace_schema_metadata({b"airflow_fuse.plan": json.dumps(meta)}), path)
    with pytest.raises(BadInputError, match="does not match its digest"):
        load_plan(path)
    # a row of another shard added and the digest recomputed (it is no signature): refused before any request
    forged = replace(parts[1], items=[*parts[1].items, parts[2].items[0]])
    save_plan(forged, path)
    with pytest.raises(BadInputError, match=r"lies outside its range .*split the plan again"):
        amend(nowhere, plan=path, options=AmendOptions(max_plan_age=None))
    with pytest.raises(BadInputError, match="does not match its place"):
        Restorer(None, replace(parts[1], info={SHARD_INFO: {**parts[1].info[SHARD_INFO], "after": None}}))
    with pytest.raises(BadInputError, match="already a shard"):
        split_plan(parts[0], 2)
    assert shard_label(parts[1]) == "shard 2/3: after k1 … k3 (2 keys)"
    assert shard_label(plan) is None


# a key range's listing (real servers) ---------------------------------------------------------------------

KEYS = ["t/a 1", "t/a+2", "t/b", "t/b/é", "t/c%3", "t/d", "t/e", "t/f~", "t/g"]


def test_a_range_lists_exactly_its_keys(s3, bucket):
    put_objects(s3, bucket, {key: key.encode() for key in KEYS} | {"t/b": b"again", "u/outside": b"x"})
    delete_keys(s3, bucket, ["t/c%3", "t/d"])
    whole = [(e.key, e.version_id, e.is_delete_marker) for e in iter_object_versions(s3, bucket, "t/", page_size=3)]
    for after, end in [(None, "t/b"), ("t/a 1", "t/c%3"), ("t/b", "t/b/é"), ("t/c%3", None), ("t/d", "t/f~"),
                       (None, None), ("t/f~", "t/g")]:
        pages: list[int] = []
        got = [(e.key, e.version_id, e.is_delete_marker)
               for e in iter_range_versions(s3, bucket, "t/", after=after, end=end, page_size=3, on_page=pages.append)]
        assert got == [row for row in whole if row[0] in KeyRange(after, end)], (after, end)
        # it stops at the first page past its end: never more than one page beyond its own entries
        assert len(pages) <= len(got) // 3 + 2


# a restore by shards (real servers) -----------------------------------------------------------------------

def _table(s3, bucket: str) -> dict[str, bytes]:
    objects = {f"t/part={i % 4}/f{i:03d}.parquet": f"row {i} ".encode() * (1 + i % 7) for i in range(48)}
    put_objects(s3, bucket, objects | {"t/_keep": b"k", "u/not-the-table": b"u"})
    lost = sorted(objects)[::2] + sorted(objects)[1:12:2]
    delete_keys(s3, bucket, lost)
    return {key: objects[key] for key in lost}


def test_a_restore_by_shards_restores_each_key_once(s3, bucket, tmp_path):
    lost = _table(s3, bucket)
    plan = scan(s3, f"s3://{bucket}/t/")
    assert len(plan.actionable()) == len(lost)
    plan_path = save_plan(plan, str(tmp_path / "plan.parquet"))
    data_before = data_versions(s3, bucket)
    shards = save_shards(load_plan(plan_path), plan_path, 4, report_uri=str(tmp_path / "report.parquet"))
    assert len(shards) == 4 and (tmp_path / "plan.shards.json").exists()
    assert [Path(s["plan"]).name for s in shards] == [f"plan.shard-000{i}-of-0004.parquet" for i in range(1, 5)]

    def apply(shard: dict) -> dict:
        return amend(s3, plan=shard["plan"], options=AmendOptions(plan_digest=shard["plan_digest"],
                                                                  report_uri=shard["report_uri"])).summary()

    with ThreadPoolExecutor(4) as pool:  # the shards at once, as the executor's workers run them
        summaries = list(pool.map(apply, shards))
    assert [s["exit_status"] for s in summaries] == [EXIT_OK] * 4
    assert sum(s["restored"] for s in summaries) == len(lost)
    merged = merge_reports(shards, plan_uri=plan_path, plan_digest=plan.digest)
    assert merged.summary["restored"] == len(lost) and merged.exit_status() == EXIT_OK
    assert merged.summary["plan_digest"] == plan.digest and merged.summary["shards_not_done"] == []
    restored = [row["key"] for row in merged.rows if row["result"] == "undeleted"]
    assert sorted(restored) == sorted(lost)  # each key restored once, by one shard
    for key, body in lost.items():
        assert read(s3, bucket, key) == body
    assert data_versions(s3, bucket) == data_before  # versions intact: no data version added or removed
    merged_path = save_merged(merged, str(tmp_path / "report.parquet"))
    from airflow_fuse.undo import load_report

    assert sorted(k.key for k in load_report(merged_path).keys) == sorted(lost)  # undo reads the merged report

    before = all_versions(s3, bucket)
    again = [apply(shard) for shard in shards]  # a second run of every shard writes nothing
    assert all_versions(s3, bucket) == before
    assert sum(s["restored"] for s in again) == 0
    assert sum(s["results"].get("already restored", 0) for s in again) == len(lost)


def test_merge_reports_says_which_shard_did_not_finish(s3, bucket, tmp_path):
    lost = _table(s3, bucket)
    plan = scan(s3, f"s3://{bucket}/t/")
    plan_path = save_plan(plan, str(tmp_path / "plan.json"))
    shards = save_shards(plan, plan_path, 3, report_uri=str(tmp_path / "report.json"))
    for shard in shards[:2]:
        amend(s3, plan=shard["plan"], options=AmendOptions(plan_digest=shard["plan_digest"],
                                                           report_uri=shard["report_uri"]))
    merged = merge_reports(shards)
    assert merged.exit_status() == EXIT_ERROR
    assert merged.summary["shards_not_done"] == [f"shard 3/3 (no report at {shards[2]['report_uri']}: its task did "
                                                 "not finish)"]
    left = len(load_plan(shards[2]["plan"]).actionable())
    assert merged.summary["remaining"] == left and merged.summary["restored"] == len(lost) - left


def test_cli_shards_a_plan_and_amend_applies_a_shard(s3, conn_id, bucket, tmp_path, capsys):
    from airflow_fuse.cli import main

    lost = _table(s3, bucket)
    plan_path = save_plan(scan(s3, f"s3://{bucket}/t/"), str(tmp_path / "plan.parquet"))
    assert main(["shard", "--plan", plan_path, "--shards", "2", "--json",
                 "--report", str(tmp_path / "report.parquet")]) == 0
    shards = json.loads(capsys.readouterr().out)
    assert len(shards) == 2
    endpoint = ["--aws-conn-id", conn_id]
    for shard in shards:
        assert main(["amend", f"s3://{bucket}/t/", "--plan", shard["plan"], "--plan-digest", shard["plan_digest"],
                     "--report", shard["report_uri"], *endpoint]) == 0
    capsys.readouterr()
    assert main(["merge-reports", *(s["report_uri"] for s in shards), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["restored"] == len(lost)
    assert all(read(s3, bucket, key) == body for key, body in lost.items())
