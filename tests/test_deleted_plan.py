"""The deleted keys of a prefix table are planned on the inventory's columns (airflow_fuse.deleted_plan): the
rows must be exactly those ``plan_object`` gives one history at a time, for any history (markers only, data
versions between markers, 'null' version ids, repeated ids, a deletion window), in any batching."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_fuse.deleted_plan import DeletedKeys, iso_times, plan_deleted
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.prefix import PrefixLayout, deleted_per_key
from airflow_fuse.listing import VersionEntry
from airflow_fuse.plan import Plan, PlanItem, build_plan, load_plan, save_plan
from airflow_fuse.times import isoformat

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
times = st.integers(0, 3 * 86400 * 10**6).map(
    lambda us: START + timedelta(microseconds=us if us % 3 else us - us % 10**6))  # whole seconds a third of the time
entries = st.tuples(st.booleans(), st.sampled_from(["v1", "v2", "v3", "null", "m1", "m2"]),
                    st.integers(0, 50), times, st.sampled_from(["", "e1", "e2", "abc-2"]))
histories = st.lists(entries, min_size=1, max_size=6)
tables = st.dictionaries(st.text("ab/_é ", min_size=1, max_size=5).map(lambda k: "t/" + k), histories,
                         min_size=1, max_size=12)
windows = st.tuples(st.one_of(st.none(), times), st.one_of(st.none(), times))


def _inventory(table: dict[str, list[tuple]], *, unique_ids: bool) -> Inventory:
    rows = []
    for key in sorted(table, key=lambda k: k.encode()):
        seen: set[str] = set()
        for n, (marker, vid, size, when, etag) in enumerate(table[key]):
            if unique_ids and (vid in seen):
                vid = f"{vid}.{n}"  # S3's ids are unique per key; 'null' repeats only on odd servers
            seen.add(vid)
            rows.append(VersionEntry(key, vid, marker, n == 0, 0 if marker else size, when, "" if marker else etag))
    return Inventory.from_entries("lake", "t/", rows)


def _rows(plan: Plan) -> list[dict]:
    return [asdict(item) for item in plan.items]


def _both(inventory: Inventory, window: tuple) -> tuple[Plan, Plan]:
    since, before = sorted(window, key=lambda t: (t is None, t)) if all(window) else window
    layout = PrefixLayout(deleted_since=since, deleted_before=before)
    columns = build_plan(inventory, layout.needed(inventory), table_format="prefix")
    per_key = build_plan(inventory, deleted_per_key(inventory, layout), table_format="prefix")
    per_key.created_at, per_key.info = columns.created_at, columns.info
    return columns, per_key


@settings(max_examples=300, deadline=None)
@given(table=tables, unique_ids=st.booleans(), window=windows)
def test_columnar_plan_equals_plan_object_for_any_history(table, unique_ids, window):
    inventory = _inventory(table, unique_ids=unique_ids)
    columns, per_key = _both(inventory, window)
    assert _rows(columns) == _rows(per_key)
    assert columns.digest == per_key.digest
    assert columns.counts() == per_key.counts() and columns.summary() == per_key.summary()


@settings(max_examples=60, deadline=None)
@given(table=tables, batch=st.integers(1, 5))
def test_batches_of_keys_give_the_same_rows(table, batch):
    inventory = _inventory(table, unique_ids=True)
    whole = list(plan_deleted(inventory, DeletedKeys()))
    parts = list(plan_deleted(inventory, DeletedKeys(), batch=batch))
    assert pa.concat_tables([p.needed for p in parts]).to_pylist() == pa.concat_tables(
        [p.needed for p in whole]).to_pylist()
    assert sum((p.slow for p in parts), []) == sum((p.slow for p in whole), [])


@given(st.lists(times, max_size=20))
def test_times_read_as_isoformat_writes_them(values):
    assert iso_times(pa.array(values, pa.timestamp("us", tz="UTC"))).to_pylist() == [isoformat(v) for v in values]


def test_a_deleted_table_plans_undeletes_with_the_markers_above(tmp_path):
    inventory = _inventory({
        "t/a": [(True, "m2", 0, START, ""), (True, "m1", 0, START, ""), (False, "v1", 3, START, "e1")],
        "t/b": [(False, "v2", 4, START, "e2")],
        "t/c": [(True, "m1", 0, START, "")],
    }, unique_ids=True)
    plan, _ = _both(inventory, (None, None))
    assert [(i.key, i.status, i.action, i.version_id, i.delete_markers) for i in plan.items] == [
        ("t/a", "restore", "undelete", "v1", ["m2", "m1"]), ("t/c", "unrecoverable", "", "", [])]
    assert [i.row for i in plan.actionable_items()] == [0]  # each row knows where it is in the plan
    for name in ("plan.json", "plan.parquet"):  # saved and loaded (as a list of items): the same plan
        save_plan(plan, str(tmp_path / name))
        loaded = load_plan(str(tmp_path / name))
        assert loaded.digest == plan.digest and _rows(loaded) == _rows(plan)
        assert loaded.to_parquet() == plan.to_parquet()
    listed = Plan(**{**plan.__dict__, "items": list(plan.items)})
    assert listed.to_parquet() == plan.to_parquet() and listed.items == list(plan.items)
    assert isinstance(plan.items[0], PlanItem) and plan.items[-1].key == "t/c" and len(plan.items[0:5]) == 2
