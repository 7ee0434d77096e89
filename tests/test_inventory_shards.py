"""A scan spread over tasks: key ranges listed into inventory shards, joined for planning."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from airflow_fuse.engine import AmendOptions, ScanOptions, amend, scan
from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import Inventory
from airflow_fuse.inventory_shards import (
    KeyRange,
    list_shard,
    read_shards,
    shard_bytes,
    split_key_space,
    write_shard,
)
from airflow_fuse.location import parse_table_uri
from airflow_fuse.plan import load_plan
from tests.conftest import new_bucket, run_dag, write_dag
from tests.helpers import data_versions, delete_keys, put_objects, read

PAGE = 40  # small pages: a table of a few hundred entries spans many, as a big one does at 1000


def _table(s3, bucket) -> dict[str, bytes]:
    objects = {f"t/{'abcdef'[i % 6]}{i:03x}/part-{i:04d}.parquet": f"data {i}".encode() for i in range(120)}
    objects["t/a b+c.parquet"] = b"odd name"
    put_objects(s3, bucket, objects)
    put_objects(s3, bucket, {k: b"second " + v for k, v in list(objects.items())[::5]})  # two versions
    objects.update({k: b"second " + v for k, v in list(objects.items())[::5]})
    put_objects(s3, bucket, {"t2/next-door.parquet": b"not the table"})
    delete_keys(s3, bucket, [*list(objects)[::3], "t2/next-door.parquet"])
    return objects


def test_shards_joined_equal_one_listing_and_plan_the_same(s3, bucket):
    objects = _table(s3, bucket)
    table = f"s3://{bucket}/t/"
    ranges = split_key_space(s3, bucket, "t/", 4, page_size=PAGE)
    assert 2 <= len(ranges) <= 4
    folder = f"s3://{bucket}/shards/run-1"
    written = [write_shard(s3, table, r.as_dict(), folder, page_size=PAGE) for r in ranges]

    joined, info = read_shards(s3, parse_table_uri(table), f"{folder}/")
    listed = Inventory.sweep(s3, bucket, "t/")
    assert joined.table.equals(listed.table)  # every entry once, in listing order
    assert sum(w["keys"] for w in written) == listed.key_count and all(w["keys"] for w in written)
    assert info["shards"] == len(ranges)

    from_shards = scan(s3, table, ScanOptions(inventory_shards=[w["shard"] for w in written]))
    from_listing = scan(s3, table)
    assert [asdict(i) for i in from_shards.items] == [asdict(i) for i in from_listing.items]
    assert from_shards.counts()["restore"] == len(list(objects)[::3])

    before = set(data_versions(s3, bucket))
    report = amend(s3, table=table, scan_options=ScanOptions(inventory_shards=f"{folder}/"),
                   options=AmendOptions())
    assert all(read(s3, bucket, k) == v for k, v in objects.items())  # bytes back
    assert read(s3, bucket, "t2/next-door.parquet") is None
    assert before <= set(data_versions(s3, bucket))  # versions intact
    assert "inventory shards listed from" in report.render()


def test_a_shard_lists_only_its_range(moto_server):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    _table(s3, bucket)
    keys = list(Inventory.sweep(s3, bucket, "t/").keys())
    middle = KeyRange(1, 3, keys[30], keys[70])

    shard, _ = list_shard(s3, bucket, "t/", middle.as_dict(), page_size=PAGE)

    assert list(shard.keys()) == keys[31:71]


def test_shards_that_do_not_cover_the_table_exactly_are_refused(moto_server, tmp_path):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    _table(s3, bucket)
    table = f"s3://{bucket}/t/"
    location = parse_table_uri(table)
    ranges = split_key_space(s3, bucket, "t/", 3, page_size=PAGE)
    assert len(ranges) == 3
    run = tmp_path / "run"
    shards = [write_shard(s3, table, r, str(run), page_size=PAGE)["shard"] for r in ranges]

    def refused(given) -> str:
        with pytest.raises(BadInputError) as error:
            read_shards(s3, location, given)
        return str(error.value)

    assert "shards 1 of 3 are missing" in refused([shards[0], shards[2]])
    assert "are both shard 0" in refused([shards[0], *shards])
    other = split_key_space(s3, bucket, "t/", 2, page_size=PAGE)
    assert "different splits" in refused([*shards, write_shard(s3, table, other[0], str(tmp_path / "b"))["shard"]])
    # A range that does not start where the previous one ended: a gap.
    gap = KeyRange(1, 3, ranges[1].after + "0", ranges[1].end)
    inventory, orders = list_shard(s3, bucket, "t/", gap)
    Path(shards[1]).write_bytes(shard_bytes(inventory, gap, orders))
    assert "leave a gap or overlap" in refused(str(run))
    # Keys outside the range the shard says it covers.
    inventory, orders = list_shard(s3, bucket, "t/", ranges[0])
    Path(shards[1]).write_bytes(shard_bytes(inventory, ranges[1], orders))
    assert "holds keys outside its range" in refused(str(run))
    elsewhere = new_bucket(s3)
    put_objects(s3, elsewhere, {"t/x": b"x"})
    assert "not from the table" in refused(write_shard(s3, f"s3://{elsewhere}/t/", KeyRange(0, 1, None, None),
                                                       str(tmp_path / "c"))["shard"])
    with pytest.raises(BadInputError, match="give inventory_manifest .* or inventory_shards"):
        scan(s3, table, ScanOptions(inventory_shards=str(run), inventory_manifest=f"s3://{bucket}/m.json"))


def test_mapped_shard_tasks_feed_the_scan(airflow_db, moto_server, tmp_path):
    s3 = moto_server.client()
    bucket = new_bucket(s3)
    objects = _table(s3, bucket)
    dag = write_dag("fuse_sharded_scan", f"""
        import pendulum
        from airflow.sdk import DAG
        from airflow_fuse.operators.inventory import FuseInventoryShardOperator, FuseKeyRangesOperator
        from airflow_fuse.operators.scan import FuseScanOperator

        TABLE = "s3://{bucket}/t/"
        with DAG("fuse_sharded_scan", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            ranges = FuseKeyRangesOperator(task_id="split", table=TABLE, shards=2, page_size=40,
                                           aws_conn_id="fuse_moto")
            shards = FuseInventoryShardOperator.partial(
                task_id="list", table=TABLE, shard_location="{tmp_path}/shards/{{{{ run_id }}}}",
                page_size=40, aws_conn_id="fuse_moto").expand(key_range=ranges.output)
            FuseScanOperator(task_id="scan", table=TABLE, inventory_shards=shards.output,
                             plan_uri="{tmp_path}/plan.json", aws_conn_id="fuse_moto")
    """)

    run, states = run_dag(dag)

    assert states == {"split": "success", "list": "success", "scan": "success"}, states
    assert len(list((tmp_path / "shards").rglob("shard-*-of-00002.parquet"))) == 2  # one file per mapped task
    plan = load_plan(str(tmp_path / "plan.json"))
    assert plan.info["inventory"]["source"] == "shards"
    assert {i.key for i in plan.actionable()} == set(list(objects)[::3])
