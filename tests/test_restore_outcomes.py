"""A restore's outcomes at scale, without a server: an outcome that is plainly what the plan said is kept as its
plan row (a few bytes), yet the result, the report and undo's input read exactly as when every outcome is an
object; the re-check walks the plan's keys alongside the listing without a map of every key."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_fuse import restore
from airflow_fuse.listing import VersionEntry
from airflow_fuse.plan import Plan, PlanItem, PlanRows
from airflow_fuse.report import Report
from airflow_fuse.restore import Outcome, Outcomes, Restorer, RestoreResult

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _items() -> list[PlanItem]:
    return [PlanItem(key=f"t/{i:02d}", status="restore", action="undelete" if i % 4 else "copy", version_id=f"v{i}",
                     size=10 + i, current_version_id=f"m{i}", current_is_delete_marker=True,
                     delete_markers=[f"m{i}"] if i % 4 else []) for i in range(12)]


def _plan(items) -> Plan:
    return Plan(bucket="lake", prefix="t/", table_format="prefix", items=items)


def _outcomes(items: list[PlanItem]) -> list[Outcome]:
    out = []
    for item in items:
        n = int(item.key[2:])
        if item.action == "copy":
            out.append(Outcome(item.key, "copied", "copy", item.version_id, item.size, new_version_id=f"c{n}"))
        elif n == 5:
            out.append(Outcome(item.key, "changed since scan", "undelete", item.version_id, 0, "written since"))
        elif n == 7:  # the re-check found another marker on top: not the plan's markers
            out.append(Outcome(item.key, "undeleted", "undelete", item.version_id, item.size,
                               "removed 2 delete marker(s)", markers_removed=[f"m{n}", "m99"]))
        else:
            out.append(Outcome(item.key, "undeleted", "undelete", item.version_id, item.size,
                               "removed 1 delete marker(s)", markers_removed=list(item.delete_markers)))
    return out[::-1]  # recorded in another order than the plan's


def test_plain_outcomes_are_kept_as_rows_and_read_back_the_same():
    rows = PlanRows.from_items(_items())
    items = list(rows)
    expected = _outcomes(items)
    kept = Outcomes(plan_rows=rows)
    for outcome in expected:
        kept.append(outcome, next(i for i in items if i.key == outcome.key))
    assert list(kept) == expected and [kept[i] for i in range(len(kept))] == expected
    # only what is not plainly the plan's is an object: the copies, the change, the extra marker
    assert sorted(o.key for o in kept.objects()) == ["t/00", "t/04", "t/05", "t/07", "t/08"]
    copy = kept.objects()[0]
    assert kept[expected.index(copy)] is copy  # copies stay the objects _settle_copies updates
    result = RestoreResult("auto", False, kept)
    assert result.counts() == {"undeleted": 8, "copied": 3, "changed since scan": 1}
    assert result.bytes_restored() == sum(o.size for o in expected if o.result in ("undeleted", "copied"))
    assert [o.key for o in result.not_done] == ["t/05"]


def test_a_report_reads_the_same_from_rows_as_from_objects():
    items = _items()
    as_objects = Report(_plan(items), RestoreResult("auto", False, _outcomes(items)))
    rows = PlanRows.from_items(items)
    kept = RestoreResult("auto", False, Outcomes(plan_rows=rows))
    plan_items = {i.key: i for i in rows}
    for outcome in _outcomes(items):
        kept.record(outcome, plan_items[outcome.key])
    as_rows = Report(_plan(rows), kept)
    assert as_rows.rows() == as_objects.rows()
    assert as_rows.summary() == as_objects.summary()
    assert as_rows.render() == as_objects.render()
    assert as_rows.to_json() == as_objects.to_json()


def _entry(key: str, version_id: str, marker: bool) -> VersionEntry:
    return VersionEntry(key, version_id, marker, False, 0, T0, "")


@pytest.mark.parametrize("listed", [
    ["t/00", "t/01", "t/02", "t/03", "t/x"],  # in order, with a key the plan does not hold
    ["t/01", "t/00", "t/03"],  # out of order (a server that does not sort), t/02 gone
    ["t/03", "t/02", "t/01", "t/00"],
    [],
])
def test_the_recheck_pairs_each_planned_key_with_its_fresh_listing(monkeypatch, listed):
    items = [PlanItem(key=f"t/{i:02d}", status="restore", action="undelete", version_id=f"v{i}") for i in (3, 0, 2, 1)]

    def listing(client, bucket, prefix, **_):
        for key in listed:
            yield _entry(key, "m", True)
            yield _entry(key, "v", False)

    monkeypatch.setattr(restore, "iter_object_versions", listing)
    for work in (items, PlanRows.from_items(items)):
        restorer = Restorer(None, _plan(work))
        pairs = {item.key: history for item, history in restorer._relisted(work, RestoreResult("auto", False))}
        assert sorted(pairs) == ["t/00", "t/01", "t/02", "t/03"]
        assert {k for k, h in pairs.items() if h is not None} == set(listed) - {"t/x"}
        assert all(h.key == k and [e.version_id for e in h.entries] == ["m", "v"] for k, h in pairs.items() if h)


def test_the_rendered_report_prints_long_keys_whole():
    """An Iceberg manifest list's key is ~90 characters: the report's table prints it whole (it is copied into
    commands), not cut at the left as it was ("…a/snap-13…avro")."""
    long_key = "db/orders/metadata/snap-3082810612439755681-0-88b8e689-82d8-4a52-92bc-c58f655fa390.avro"
    items = [PlanItem(key=long_key, status="restore", action="undelete", version_id="v1", size=10,
                      delete_markers=["m1"]),
             PlanItem(key="db/orders/data/a.parquet", status="unrecoverable", reason="no version left")]
    text = Report(Plan(bucket="lake", prefix="db/orders/", table_format="iceberg", items=items)).render()
    row = next(line for line in text.splitlines() if long_key in line)
    assert row.split()[:2] == [long_key, "restore"]
    assert "  db/orders/data/a.parquet " in text and "no version left" in text


def test_plain_marker_removals_are_fed_as_rows_and_the_rest_key_by_key(monkeypatch):
    """A fresh plan held as columns: the rows to undelete with no 'null' version id go to DeleteObjects as columns'
    values (with their plan rows); copies, and every row of a chunk holding a 'null' marker id, go key by key."""
    items = _items()
    items[6].delete_markers = ["null"]  # only a listing of the key can re-check a 'null' version id
    items[9].delete_markers = ["m9", "m9b"]
    plan = _plan(PlanRows.from_items(items))
    restorer = Restorer(object(), plan)
    restorer.key_history = lambda key: None  # type: ignore[method-assign]
    monkeypatch.setattr(restore, "_FEED_ROWS", 5)
    fed = list(restorer._feed(plan.actionable_items(), False, RestoreResult("auto", False)))
    rows = [part for part in fed if isinstance(part, restore._MarkerRows)]
    assert [(r.keys, r.markers, r.counts, r.rows, r.sizes) for r in rows] == [
        (["t/01", "t/02", "t/03"], ["m1", "m2", "m3"], [1, 1, 1], [1, 2, 3], [11, 12, 13]),
        (["t/10", "t/11"], ["m10", "m11"], [1, 1], [10, 11], [20, 21])]
    by_key = [(item.key, item.row, checked) for item, _, checked in (p for p in fed if isinstance(p, tuple))]
    assert by_key == [("t/00", 0, False), ("t/04", 4, False), ("t/05", 5, False), ("t/06", 6, True),
                      ("t/07", 7, False), ("t/08", 8, False), ("t/09", 9, False)]
    # removals are cut at DELETE_BATCH markers, never inside a key's markers
    head, tail = restore._MarkerRows(["a", "b", "c"], ["1", "2", "3", "4"], [1, 2, 1], [0, 1, 2], [0, 0, 0]).cut(2)
    assert (head.keys, head.markers, tail.keys, tail.markers) == (["a"], ["1"], ["b", "c"], ["2", "3", "4"])
    assert [pair for pair in tail.pairs()] == [("b", ["2", "3"]), ("c", ["4"])]
