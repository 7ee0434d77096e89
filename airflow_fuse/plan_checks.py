"""The checks of a saved plan's rows, made on Arrow columns: does every row pass them all?

Loading a plan checks the type and value of every field of every row (``plan._check_row``) and refuses it naming
the first row and field that fails. Made one row at a time that costs a Python object per value; here the same
rules are checked on the columns of the rows as read (``PLAN_SCHEMA``). This answers only "all pass": when any row
may fail, the plan is checked row by row as before, which names the row, the field and the problem. Whatever
these checks let through, the row-by-row checks let through too (tests/test_plan_checks.py).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from airflow_fuse.plan_columns import TIMESTAMP, iso_times

# A time as airflow-fuse writes it (times.isoformat: UTC, "Z", no fraction or 6 digits), from year 0001.
_TIME = r"^(000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d\d\d)-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$"
_NOT_NULL = ("key", "status", "kind", "action", "version_id", "size", "etag", "reason", "current_version_id",
             "current_is_delete_marker", "current_etag", "current_size", "current_last_modified", "last_modified",
             "delete_markers")


def _all(mask: pa.ChunkedArray | pa.Array) -> bool:
    return bool(pc.all(pc.fill_null(mask, False)).as_py() is not False)


def _times_pass(column: pa.Array) -> bool:
    """Every value empty or a time written as airflow-fuse writes them, which ``times.parse_time`` reads."""
    given = column.filter(pc.not_equal(column, ""))
    if not len(given):
        return True
    if not _all(pc.match_substring_regex(given, _TIME)):
        return False
    try:
        stamps = given.cast(TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return _all(pc.equal(iso_times(stamps), given))  # a real date and time: it reads back as the same text


def _markers_pass(markers: pa.Array, action: pa.Array, version_id: pa.Array, current: pa.Array,
                  current_is_marker: pa.Array) -> bool:
    """Delete markers only on an undelete row, each a non-empty string, never the wanted version nor the current
    version when that holds data."""
    lengths = pc.list_value_length(markers)
    if not _all(pc.or_(pc.equal(lengths, 0), pc.equal(action, "undelete"))):
        return False
    flat = pc.list_flatten(markers)
    if not len(flat):
        return True
    if flat.null_count or not _all(pc.greater(pc.utf8_length(flat), 0)):
        return False
    parents = pc.list_parent_indices(markers)
    if not _all(pc.not_equal(flat, version_id.take(parents))):
        return False
    holds_data = pc.and_(pc.invert(current_is_marker.take(parents)), pc.not_equal(current.take(parents), ""))
    return _all(pc.or_(pc.invert(holds_data), pc.not_equal(flat, current.take(parents))))


def rows_pass(table: pa.Table, prefix: str, *, unique_keys: bool = True) -> bool:
    """Does every row of ``table`` (columns exactly ``PLAN_SCHEMA``) pass the row checks of a saved plan, and is
    every key planned once (``unique_keys``)? False when any may not (then check row by row to name it)."""
    from airflow_fuse.plan import ACTIONS, PLAN_SCHEMA, STATUSES  # this module checks that module's rows

    if table.schema.remove_metadata() != PLAN_SCHEMA:
        return False
    if not table.num_rows:
        return True
    columns = {name: table.column(name).combine_chunks() for name in table.column_names}
    if any(columns[name].null_count for name in _NOT_NULL):
        return False
    key, status, action = columns["key"], columns["status"], columns["action"]
    actionable = pc.is_in(status, value_set=pa.array(["restore", "damaged"]))
    checks = [
        lambda: _all(pc.starts_with(key, prefix)) and _all(pc.greater(pc.utf8_length(key), 0)),
        lambda: _all(pc.is_in(status, value_set=pa.array(list(STATUSES)))),
        lambda: _all(pc.greater(pc.utf8_length(columns["kind"]), 0)),
        lambda: _all(pc.if_else(actionable, pc.is_in(action, value_set=pa.array(list(ACTIONS))),
                                pc.equal(action, ""))),
        lambda: _all(pc.or_(pc.not_equal(status, "damaged"), pc.equal(action, "copy"))),
        lambda: _all(pc.or_(pc.invert(actionable), pc.greater(pc.utf8_length(columns["version_id"]), 0))),
        lambda: all(_all(pc.fill_null(pc.greater_equal(columns[name], 0), True))
                    for name in ("size", "current_size", "expected_size", "row_count")
                    if columns[name].null_count < len(columns[name])),
        lambda: _times_pass(columns["current_last_modified"]) and _times_pass(columns["last_modified"]),
        lambda: _markers_pass(columns["delete_markers"], action, columns["version_id"],
                              columns["current_version_id"], columns["current_is_delete_marker"]),
        lambda: not unique_keys or keys_unique(key),
    ]
    return all(check() for check in checks)


def keys_unique(keys: pa.Array | pa.ChunkedArray) -> bool:
    """Is every key there once?"""
    return bool(pc.count_distinct(keys).as_py() == len(keys))
