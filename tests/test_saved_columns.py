"""Plans and reports saved from Arrow columns hold the same bytes as when written row by row, and a plan's rows
checked on the columns pass exactly when the row-by-row checks pass (no server)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from airflow_fuse import plan_checks
from airflow_fuse.errors import BadInputError
from airflow_fuse.plan import ITEM_FIELDS, PLAN_SCHEMA, Plan, PlanItem, PlanRows, _check_rows, _hash_items
from airflow_fuse.plan_digest import hash_rows
from airflow_fuse.report import Report
from airflow_fuse.restore import Outcome, Outcomes, Restorer, RestoreResult
from airflow_fuse.shards import shard_info, split_plan
from tests.test_plan_properties import PROPERTIES, plans

# Text json.dumps escapes: quotes, backslashes, control characters, DEL, accents, emoji.
odd_text = st.text(alphabet='ab/"\\\n\t\x00\x1f\x7fé€😀 ', max_size=8)


def _as_rows(plan: Plan) -> Plan:
    return Plan(**{**{k: getattr(plan, k) for k in ("bucket", "prefix", "table_format", "created_at", "listed_at",
                                                      "options", "info", "tables", "keys_listed", "versions_listed",
                                                      "listing_pages")}, "items": PlanRows.from_items(plan.items)})


def _row_by_row_parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@PROPERTIES
@given(plan=plans())
def test_a_plan_held_as_columns_saves_the_bytes_and_digest_of_its_rows(plan):
    columns = _as_rows(plan)
    assert columns.digest == plan.digest
    assert columns.json_bytes() == json.dumps({**plan.meta(), "items": [asdict(i) for i in plan.items]},
                                              indent=1).encode()
    expected = PlanRows.from_items(plan.items).plain_table().combine_chunks().replace_schema_metadata(
        {"airflow_fuse.plan": json.dumps(plan.meta())})
    assert columns.to_parquet() == _row_by_row_parquet(expected)


@PROPERTIES
@given(texts=st.lists(st.tuples(odd_text, odd_text, st.integers(0, 2**63 - 1), st.lists(odd_text.filter(bool),
                                                                                          max_size=3)), max_size=20))
def test_the_digest_on_columns_hashes_the_bytes_of_the_rows_for_any_text(texts):
    items = [PlanItem(key=f"t/{i}{key}", status="restore", action="undelete", version_id="v", etag=etag, size=size,
                      reason=key + etag, delete_markers=markers) for i, (key, etag, size, markers) in enumerate(texts)]
    by_rows, by_columns = hashlib.sha256(), hashlib.sha256()
    _hash_items(by_rows, items)
    hash_rows(by_columns, PlanRows.from_items(items).plain_batches(3))
    assert by_columns.hexdigest() == by_rows.hexdigest()


@PROPERTIES
@given(plan=plans(min_items=1), data=st.data())
def test_rows_pass_on_the_columns_exactly_when_they_pass_row_by_row(plan, data):
    table = PlanRows.from_items(plan.items).plain_table()
    assert plan_checks.rows_pass(table, plan.prefix)
    index = data.draw(st.integers(0, len(plan.items) - 1), label="row")
    name = data.draw(st.sampled_from(ITEM_FIELDS), label="field")
    kind = PLAN_SCHEMA.field(name).type
    texts = ["", "restore", "damaged", "copy", "undelete", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00+02:00",
             "0000-01-01T00:00:00Z", plan.items[0].key]
    value = data.draw(
        st.one_of(st.text(max_size=30), st.sampled_from(texts))
        if kind == pa.string() else st.integers(-3, 3) if kind == pa.int64() else st.booleans()
        if kind == pa.bool_() else st.lists(st.sampled_from(["", "m", plan.items[index].version_id or "v",
                                                            plan.items[index].current_version_id or "c"]),
                                            max_size=2), label="value")
    rows = table.to_pylist()
    rows[index][name] = value
    changed = pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)
    try:
        _check_rows(changed.to_pylist(), plan.prefix, "p")
        passes = True
    except BadInputError:
        passes = False
    # what the columns let through, the rows let through; and a plan written as airflow-fuse writes them passes
    assert not plan_checks.rows_pass(changed, plan.prefix) or passes
    assert plan_checks.rows_pass(changed, plan.prefix) or not passes or name.endswith("last_modified")


def _report_items() -> list[PlanItem]:
    items = [PlanItem(key=f"t/{i:02d}é", status="restore", action="undelete" if i % 4 else "copy",
                      version_id=f"v{i}", size=10 + i, reason=f'deleted "{i}"', current_version_id=f"m{i}",
                      current_is_delete_marker=True, delete_markers=[f"m{i}", f"n{i}"][:1 + i % 2] if i % 4 else [])
             for i in range(12)]
    items += [PlanItem(key="t/p", status="present", version_id="v"), PlanItem(key="t/s", status="skipped",
                                                                               reason="not in the window"),
              PlanItem(key="t/u", status="unrecoverable", reason="only delete markers are left")]
    return items


def _outcomes(items: list[PlanItem], dry_run: bool) -> list[Outcome]:
    out = []
    for item in items[:12]:
        n = int(item.key[2:4])
        if item.action == "copy":
            out.append(Outcome(item.key, "would copy", "copy", item.version_id, item.size) if dry_run else
                       Outcome(item.key, "copied", "copy", item.version_id, item.size, new_version_id=f"c{n}"))
        elif n == 5:
            out.append(Outcome(item.key, "changed since scan", "undelete", item.version_id, 0, "written since"))
        elif n == 7 and not dry_run:  # another marker on top: not the plan's markers
            out.append(Outcome(item.key, "undeleted", "undelete", item.version_id, item.size,
                               "removed 3 delete marker(s)", markers_removed=[*item.delete_markers, "m99"]))
        elif n != 9:  # 9: no outcome (the run stopped)
            out.append(Outcome(item.key, "would undelete" if dry_run else "undeleted", "undelete", item.version_id,
                               item.size, "" if dry_run else f"removed {len(item.delete_markers)} delete marker(s)",
                               markers_removed=list(item.delete_markers)))
    return out[::-1]


def _reports(dry_run: bool, items: list[PlanItem]) -> tuple[Report, Report]:
    plan = Plan(bucket="lake", prefix="t/", table_format="prefix", items=items)
    as_objects = Report(plan, RestoreResult("auto", dry_run, _outcomes(items, dry_run)), location="r")
    rows = PlanRows.from_items(items)
    kept = RestoreResult("auto", dry_run, Outcomes(plan_rows=rows))
    by_key = {i.key: i for i in rows}
    for outcome in _outcomes(items, dry_run):
        kept.record(outcome, by_key[outcome.key])
    return as_objects, Report(Plan(bucket="lake", prefix="t/", table_format="prefix", items=rows), kept,
                              location="r")


def test_a_report_saved_from_columns_holds_the_bytes_of_its_rows():
    for dry_run in (False, True):
        for items in (_report_items(), [i for i in _report_items() if not i.delete_markers][:3]):
            as_objects, as_columns = _reports(dry_run, items)
            assert as_objects.restore is not None and as_columns.restore is not None
            assert len(as_columns.restore.outcomes.objects()) < len(as_objects.restore.outcomes.objects()) or len(
                items) == 3  # some kept as plain codes
            assert as_columns.json_bytes() == as_objects.to_json().encode()
            assert as_columns.to_parquet() == as_objects.to_parquet()
            assert pq.read_table(io.BytesIO(as_columns.to_parquet())).to_pylist() == as_objects.rows()
    no_restore = Report(Plan(bucket="lake", prefix="t/", table_format="prefix", items=PlanRows.from_items(
        _report_items())))
    plain = Report(Plan(bucket="lake", prefix="t/", table_format="prefix", items=_report_items()))
    assert no_restore.json_bytes() == plain.to_json().encode() and no_restore.to_parquet() == plain.to_parquet()


@PROPERTIES
@given(sizes=st.lists(st.one_of(st.none(), st.integers(0, 10**12)), min_size=1, max_size=300),
       shards=st.integers(1, 40))
def test_a_plan_held_as_columns_is_split_into_the_shards_of_its_rows(sizes, shards):
    # None: a row with nothing to do; rows given out of key order
    items = [PlanItem(key=f"t/{(i * 7919) % 1000:04d}", status="present" if s is None else "restore",
                      action="" if s is None else "copy", version_id="v", size=s or 0) for i, s in enumerate(sizes)]
    items = list({i.key: i for i in items}.values())
    if not any(i.actionable for i in items):
        return
    as_objects = split_plan(Plan(bucket="b", prefix="t/", table_format="prefix", items=items), shards)
    as_columns = split_plan(Plan(bucket="b", prefix="t/", table_format="prefix", items=PlanRows.from_items(items)),
                            shards)
    assert [s.info for s in as_columns] == [s.info for s in as_objects]
    assert [s.to_parquet() for s in as_columns] == [s.to_parquet() for s in as_objects]
    for shard in as_columns:
        assert shard_info(Plan.from_parquet(shard.to_parquet())) == shard_info(shard)


def test_a_shard_weighs_a_listing_by_its_share_of_the_pages():
    rows = [PlanItem(key=f"t/{i:05d}", status="restore", action="copy", version_id="v", size=1) for i in range(2000)]
    plan = Plan(bucket="b", prefix="t/", table_format="prefix", items=PlanRows.from_items(rows), keys_listed=100_000,
                listing_pages=100)
    first = split_plan(plan, 4)[0]  # 500 rows of 100,000 keys: half a page of the listing
    # 500 copies: one request each costs more than a listing of the shard's range, not of the whole table
    assert Restorer(None, first)._listing_pays(500)
    assert not Restorer(None, plan)._listing_pays(2000)
