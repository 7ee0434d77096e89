"""Plan integrity, as properties (no server): a saved plan loads back with the same digest in either form,
and any single change to it, of a value or of a type, is refused on load, before anything could be written."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_fuse.errors import BadInputError
from airflow_fuse.location import TableLocation
from airflow_fuse.parquet import read_parquet
from airflow_fuse.plan import (
    ACTIONS,
    ITEM_FIELDS,
    RESCAN,
    STATUSES,
    Plan,
    PlanItem,
    check_plan_applies,
    load_plan,
    open_plan,
    parse_max_plan_age,
    parse_plan_digest,
    save_plan,
)

PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# The types a row field may hold (JSON view): a replacement of another type must be named on load.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "key": (str,), "status": (str,), "kind": (str,), "action": (str,), "version_id": (str,), "size": (int,),
    "etag": (str,), "reason": (str,), "current_version_id": (str,), "current_is_delete_marker": (bool,),
    "current_etag": (str,), "current_size": (int,), "current_last_modified": (str,), "last_modified": (str,),
    "delete_markers": (list,), "expected_size": (int, type(None)), "row_count": (int, type(None)),
}
OTHER_TYPES = ["big", 7, 1.5, True, None, ["x"], {"a": 1}]

version_ids = st.one_of(st.just("null"), st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/._-",
                                                   min_size=1, max_size=32))
names = st.text(min_size=1, max_size=24).filter(lambda s: "\x00" not in s)
sizes = st.integers(min_value=0, max_value=2**53)
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                     timezones=st.just(timezone.utc)).map(lambda d: d.isoformat().replace("+00:00", "Z"))
json_scalars = st.one_of(st.text(max_size=12), st.booleans(), st.integers(-(2**40), 2**40), st.none())


@st.composite
def plan_items(draw: st.DrawFn, key: str) -> PlanItem:
    status = draw(st.sampled_from(STATUSES))
    actionable = status in ("restore", "damaged")
    action = "copy" if status == "damaged" else draw(st.sampled_from(ACTIONS)) if actionable else ""
    version_id = draw(version_ids) if actionable else draw(st.one_of(st.just(""), version_ids))
    current_is_marker = False if status == "damaged" else draw(st.booleans())
    current = draw(st.one_of(st.just(""), version_ids))
    markers = draw(st.lists(version_ids, max_size=3)) if action == "undelete" else []
    markers = [m for m in markers if m != version_id and (current_is_marker or m != current)]
    return PlanItem(key=key, status=status, kind=draw(st.sampled_from(["object", "block", "segment", "hint"])),
                    action=action, version_id=version_id, size=draw(sizes), etag=draw(st.text(max_size=34)),
                    reason=draw(st.text(max_size=40)), current_version_id=current,
                    current_is_delete_marker=current_is_marker, current_etag=draw(st.text(max_size=34)),
                    current_size=draw(sizes), current_last_modified=draw(st.one_of(st.just(""), times)),
                    last_modified=draw(st.one_of(st.just(""), times)), delete_markers=markers,
                    expected_size=draw(st.one_of(st.none(), sizes)), row_count=draw(st.one_of(st.none(), sizes)))


@st.composite
def plans(draw: st.DrawFn, min_items: int = 0) -> Plan:
    prefix = draw(st.sampled_from(["", "t/", "warehouse/db 1/tåble/"]))
    keys = draw(st.lists(names, min_size=min_items, max_size=6, unique=True))
    return Plan(
        bucket=draw(st.sampled_from(["lake", "my-lake.prod", "t-0123456789abcdef"])),
        prefix=prefix,
        table_format=draw(st.sampled_from(["prefix", "fuse", "iceberg"])),
        items=[draw(plan_items(prefix + key)) for key in keys],
        created_at=draw(times),
        listed_at=draw(times),
        options=draw(st.dictionaries(st.text(max_size=10), st.one_of(json_scalars, st.lists(st.text(max_size=6),
                                                                                              max_size=3)),
                                     max_size=3)),
        info=draw(st.dictionaries(st.text(max_size=10), json_scalars, max_size=3)),
        tables=draw(st.lists(st.dictionaries(st.text(max_size=8), json_scalars, max_size=3), max_size=2)),
        keys_listed=draw(sizes), versions_listed=draw(sizes), listing_pages=draw(st.integers(0, 10**6)),
    )


def _same(a: Plan, b: Plan) -> None:
    assert b.digest == a.digest
    assert [asdict(i) for i in b.items] == [asdict(i) for i in a.items]
    assert b.header() == json.loads(json.dumps(a.header()))


def _refusal(load, *args) -> str:
    with pytest.raises(BadInputError) as caught:
        load(*args)
    message = str(caught.value)
    assert RESCAN in message
    return message


# round trips ----------------------------------------------------------------------------------------

@PROPERTIES
@given(plan=plans())
def test_json_and_parquet_round_trips_keep_the_digest(plan):
    from_json = Plan.from_json(plan.to_json(), source="p.json")
    from_parquet = Plan.from_parquet(plan.to_parquet(), source="p.parquet")
    _same(plan, from_json)
    _same(plan, from_parquet)
    # the saved digest is the one both forms carry
    assert json.loads(plan.to_json())["digest"] == plan.digest
    meta = json.loads(read_parquet(plan.to_parquet()).schema.metadata[b"airflow_fuse.plan"])
    assert meta["digest"] == plan.digest
    assert plan.summary()["plan_digest"] == plan.digest


def test_the_digest_is_the_same_through_files_in_either_form(tmp_path):
    plan = Plan(bucket="lake", prefix="t/", table_format="prefix", created_at="2026-01-01T00:00:00Z",
                listed_at="2026-01-01T00:00:00Z",
                items=[PlanItem(key="t/a", status="restore", action="undelete", version_id="v1", size=3,
                                current_version_id="m1", current_is_delete_marker=True, delete_markers=["m1"])])
    for name in ("p.json", "p.parquet"):
        save_plan(plan, str(tmp_path / name))
        assert load_plan(str(tmp_path / name)).digest == plan.digest
    # a digest is sha256 hex over the plan: any other plan has another
    other = Plan(**{**plan.__dict__, "items": [PlanItem(**{**asdict(plan.items[0]), "size": 4})]})
    assert len(plan.digest) == 64 and other.digest != plan.digest


# single-field changes -------------------------------------------------------------------------------

def _other_value(data: st.DataObject, old):
    """A different value of the same JSON type as ``old`` (a value change, not a type change)."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return data.draw(sizes.filter(lambda v: v != old))
    if isinstance(old, str):
        return data.draw(st.text(max_size=20).filter(lambda v: v != old))
    if isinstance(old, list):
        return data.draw(st.lists(version_ids, max_size=3).filter(lambda v: v != old))
    return data.draw(sizes)  # None (an optional count)


def _changed(data: st.DataObject, old, *, types: tuple[type, ...]):
    """(new value, whether its type is one the field may not hold)."""
    if data.draw(st.booleans(), label="change the type"):
        candidates = [v for v in OTHER_TYPES if type(v) is not type(old)]
        new = data.draw(st.sampled_from(candidates), label="new value")
        return new, not (isinstance(new, types) and not (isinstance(new, bool) and bool not in types))
    return _other_value(data, old), False


@PROPERTIES
@given(plan=plans(min_items=1), data=st.data())
def test_any_single_change_of_a_row_is_refused_on_load(plan, data, tmp_path):
    saved = json.loads(plan.to_json())
    index = data.draw(st.integers(0, len(saved["items"]) - 1), label="row")
    name = data.draw(st.sampled_from(ITEM_FIELDS), label="field")
    new, wrong_type = _changed(data, saved["items"][index][name], types=FIELD_TYPES[name])
    saved["items"][index][name] = new
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(saved))
    message = _refusal(load_plan, str(path))
    assert str(path) in message
    if wrong_type:  # the message points at the row and the field to look at
        assert f"items[{index}]" in message and f"'{name}'" in message, message


@PROPERTIES
@given(plan=plans(min_items=1), data=st.data())
def test_a_row_added_or_removed_is_refused(plan, data, tmp_path):
    saved = json.loads(plan.to_json())
    if data.draw(st.booleans(), label="remove"):
        saved["items"].pop(data.draw(st.integers(0, len(saved["items"]) - 1)))
    else:
        row = data.draw(plan_items(plan.prefix + "added-" + data.draw(names)))
        saved["items"].insert(data.draw(st.integers(0, len(saved["items"]))), asdict(row))
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(saved))
    _refusal(load_plan, str(path))


HEADER_CHANGES = {
    "bucket": "other-lake", "prefix": "u/", "table_format": "delta", "listed_at": "2031-01-01T00:00:00Z",
    "created_at": "2031-01-01T00:00:00Z", "options": {"as_of": "2020-01-01T00:00:00Z"}, "keys_listed": 10**7,
    "versions_listed": 10**7, "listing_pages": 10**7, "info": {"edited": True}, "tables": [{"edited": True}],
}


@PROPERTIES
@given(plan=plans(), name=st.sampled_from(sorted(HEADER_CHANGES)), wrong_type=st.booleans())
def test_any_change_of_the_table_or_listing_facts_is_refused(plan, name, wrong_type, tmp_path):
    saved = json.loads(plan.to_json())
    new = 12.5 if wrong_type else HEADER_CHANGES[name]
    if saved[name] == new:
        return
    saved[name] = new
    if name == "prefix" and not wrong_type:  # the rows move with it: only the table changes
        saved["items"] = [{**row, "key": "u/" + row["key"][len(plan.prefix):]} for row in saved["items"]]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(saved))
    message = _refusal(load_plan, str(path))
    if wrong_type:
        assert f"'{name}'" in message


@PROPERTIES
@given(plan=plans(min_items=1), data=st.data())
def test_any_single_value_change_in_a_parquet_plan_is_refused(plan, data, tmp_path):
    table = read_parquet(plan.to_parquet())
    rows = table.to_pylist()
    index = data.draw(st.integers(0, len(rows) - 1), label="row")
    name = data.draw(st.sampled_from(ITEM_FIELDS), label="field")
    rows[index][name] = _other_value(data, rows[index][name])
    path = tmp_path / "edited.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    message = _refusal(load_plan, str(path))
    assert str(path) in message


@pytest.mark.parametrize("name", ITEM_FIELDS)
def test_a_column_of_another_type_in_a_parquet_plan_is_refused_naming_it(name, tmp_path):
    plan = Plan(bucket="lake", prefix="t/", table_format="prefix", listed_at="2026-01-01T00:00:00Z",
                items=[PlanItem(key="t/a", status="restore", action="undelete", version_id="v1", size=3,
                                current_version_id="m1", current_is_delete_marker=True, delete_markers=["m1"],
                                expected_size=3, row_count=1)])
    table = read_parquet(plan.to_parquet())
    other = {str: 7, int: "big", bool: 1, list: "m1"}[FIELD_TYPES[name][0]]
    table = table.set_column(table.schema.get_field_index(name), name, pa.array([other] * table.num_rows))
    path = tmp_path / "edited.parquet"
    pq.write_table(table, path)
    message = _refusal(load_plan, str(path))
    assert "items[0]" in message and f"'{name}'" in message, message


@PROPERTIES
@given(plan=plans(min_items=1), data=st.data())
def test_a_plan_changed_in_memory_is_refused_before_it_is_applied(plan, data):
    index = data.draw(st.integers(0, len(plan.items) - 1), label="row")
    name = data.draw(st.sampled_from(ITEM_FIELDS), label="field")
    old = getattr(plan.items[index], name)
    candidates = [v for v in OTHER_TYPES if not isinstance(v, FIELD_TYPES[name])
                  or (isinstance(v, bool) and bool not in FIELD_TYPES[name])]
    setattr(plan.items[index], name, data.draw(st.sampled_from(candidates)))
    message = _refusal(open_plan, plan)
    assert f"items[{index}]" in message and f"'{name}'" in message, (old, message)


# the exact messages a user reads --------------------------------------------------------------------

def _saved_plan(tmp_path: Path, changes: dict[tuple[int, str], object] | None = None) -> Path:
    plan = Plan(bucket="lake", prefix="t/", table_format="prefix", created_at="2026-01-01T00:00:00Z",
                listed_at="2026-01-01T00:00:00Z",
                items=[PlanItem(key="t/a", status="present", version_id="v2", size=2),
                       PlanItem(key="t/b", status="restore", action="undelete", version_id="v1", size=3,
                                current_version_id="m1", current_is_delete_marker=True, delete_markers=["m1"])])
    saved = json.loads(plan.to_json())
    for (index, name), value in (changes or {}).items():
        saved["items"][index][name] = value
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(saved))
    return path


def test_a_size_that_is_not_a_number_is_named(tmp_path):
    path = _saved_plan(tmp_path, {(1, "size"): "big"})
    message = _refusal(load_plan, str(path))
    assert message == (f"plan {path} is refused: items[1] (key 't/b'), field 'size', must be an integer, not "
                       f"'big' (str); scan again to make a new plan")


def test_a_hand_edit_with_the_right_types_fails_the_digest(tmp_path):
    path = _saved_plan(tmp_path, {(0, "status"): "damaged", (0, "action"): "copy",
                                  (0, "version_id"): "v1", (0, "current_version_id"): "v2"})
    message = _refusal(load_plan, str(path))
    assert f"plan {path} does not match its digest" in message and "changed after the scan" in message


def test_a_plan_without_a_digest_is_refused(tmp_path):
    path = _saved_plan(tmp_path)
    saved = json.loads(path.read_text())
    del saved["digest"]
    path.write_text(json.dumps(saved))
    assert "field 'digest' is missing" in _refusal(load_plan, str(path))


def test_rules_between_fields(tmp_path):
    cases = {
        (1, "delete_markers"): (["v1"], "lists the wanted version 'v1', which holds data"),
        (0, "action"): ("copy", "must be empty for a row with status present"),
        (1, "action"): ("", "must be undelete or copy for a row with status restore"),
        (1, "version_id"): ("", "field 'version_id', must not be empty"),
        (0, "key"): ("u/a", "'u/a' is outside the table's prefix 't/'"),
        (1, "key"): ("t/a", "items[1] (key 't/a') repeats the key of items[0]"),
        (1, "status"): ("lost", "must be one of present, restore, damaged, unrecoverable, skipped"),
        (1, "current_is_delete_marker"): (1, "must be true or false, not 1 (int)"),
        (0, "size"): (-1, "must be >= 0, not -1"),
    }
    for (index, name), (value, text) in cases.items():
        path = _saved_plan(tmp_path, {(index, name): value})
        assert text in _refusal(load_plan, str(path)), (name, value)


# where and when a plan applies ----------------------------------------------------------------------

def _plan_listed_at(listed_at: datetime) -> Plan:
    stamp = listed_at.isoformat().replace("+00:00", "Z")
    return Plan(bucket="lake", prefix="t/", table_format="prefix", items=[], created_at=stamp, listed_at=stamp)


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


@PROPERTIES
@given(age_minutes=st.integers(0, 60 * 24 * 10), limit_minutes=st.integers(1, 60 * 24 * 10))
def test_a_plan_older_than_max_plan_age_is_refused_and_none_lifts_the_limit(age_minutes, limit_minutes):
    plan = _plan_listed_at(NOW - timedelta(minutes=age_minutes))
    limit = parse_max_plan_age(f"{limit_minutes}m")
    if age_minutes > limit_minutes:
        with pytest.raises(BadInputError, match="ago .* more than max_plan_age .*--max-plan-age"):
            check_plan_applies(plan, source="p.json", max_age=limit, now=NOW)
    else:
        check_plan_applies(plan, source="p.json", max_age=limit, now=NOW)
    check_plan_applies(plan, source="p.json", max_age=parse_max_plan_age("none"), now=NOW)


def test_the_age_message_says_how_old_and_what_to_do():
    plan = _plan_listed_at(NOW - timedelta(hours=30))
    with pytest.raises(BadInputError) as caught:
        check_plan_applies(plan, source="p.json", max_age=parse_max_plan_age("24h"), now=NOW)
    assert str(caught.value) == (
        "plan p.json was made from a listing taken 30.0 h ago (2026-05-31T06:00:00Z), more than max_plan_age "
        "(24.0 h): the table may have changed since. scan again to make a new plan, or apply it anyway with "
        "--max-plan-age 72h or max_plan_age='72h' to allow older plans, or none for any age")


@pytest.mark.parametrize(("given_age", "expected"), [
    ("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)), ("2d", timedelta(days=2)),
    ("36", timedelta(hours=36)), (1.5, timedelta(hours=1.5)), ("30s", timedelta(seconds=30)),
    (" 12 H ", timedelta(hours=12)),
    (timedelta(hours=3), timedelta(hours=3)), ("none", None), ("None", None), (None, None),
])
def test_max_plan_age_forms(given_age, expected):
    assert parse_max_plan_age(given_age) == expected


@pytest.mark.parametrize("given_age", ["0", 0, "0h", "-3h", "soon", "24 hours", True, timedelta(0)])
def test_max_plan_age_that_means_nothing_is_refused(given_age):
    with pytest.raises(BadInputError, match="max_plan_age"):
        parse_max_plan_age(given_age)


def test_a_plan_from_the_future_is_refused():
    with pytest.raises(BadInputError, match="in the future: check the clocks"):
        check_plan_applies(_plan_listed_at(NOW + timedelta(hours=1)), source="p.json", now=NOW)


def test_a_plan_applies_only_to_its_table_and_its_pinned_digest():
    plan = _plan_listed_at(NOW)
    check_plan_applies(plan, source="p.json", table=TableLocation("lake", "t/"), digest=plan.digest, now=NOW)
    with pytest.raises(BadInputError, match="plan p.json is for s3://lake/t/, not s3://lake/u/: scan this table"):
        check_plan_applies(plan, source="p.json", table=TableLocation("lake", "u/"), now=NOW)
    with pytest.raises(BadInputError, match="not the pinned 0{64}"):
        check_plan_applies(plan, source="p.json", digest="0" * 64, now=NOW)
    assert parse_plan_digest(f"sha256:{plan.digest.upper()}") == plan.digest
    for bad in ("", "None", "abc", "g" * 64):
        with pytest.raises(BadInputError, match="not a sha256 digest"):
            parse_plan_digest(bad)
