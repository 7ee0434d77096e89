"""How a plan's rows are held in memory: ``PLAN_SCHEMA``'s values in compact Arrow columns.

A plan of millions of keys is mostly repeated or derived text: the status, kind and action take a few values
(dictionary-encoded, one byte a row); the times are timestamps (8 bytes, not a 24-byte ISO string), made ISO
strings again when read; a reason that is ``deleted at`` the key's current time is a code pointing at that time;
a column with no value (``expected_size`` of a prefix table) takes no memory. Reading a batch of rows
(``decoded``) gives exactly the ``PLAN_SCHEMA`` values the plan was made with: the digest, the saved files and
the ``PlanItem`` objects do not change.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MICROS = 1_000_000
TIMESTAMP = pa.timestamp("us", tz="UTC")
SMALL_TEXT = pa.dictionary(pa.int8(), pa.string())  # status, kind, action
TEXT = pa.dictionary(pa.int32(), pa.string())  # reason
# The reason "deleted at <current_last_modified>", held as this code (never a reason's text: a NUL character).
DELETED_AT = "\x00deleted at"
# current_version_id when it is the key's first delete marker listed (a deleted key's marker on top, removed by an
# undelete): held as binary, null for "the first of delete_markers" (the id is held once, in the markers).
CURRENT = pa.binary()
_SMALL = ("status", "kind", "action")
_TIMES = ("current_last_modified", "last_modified")
_OPTIONAL = ("expected_size", "row_count")


def iso_times(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``times.isoformat`` of each timestamp (microseconds, UTC): ``2026-01-02T03:04:05Z`` or ``….123456Z``."""
    micros = values.cast(pa.int64())
    seconds = pc.divide(micros, _MICROS)
    fraction = pc.subtract(micros, pc.multiply(seconds, _MICROS))
    base = pc.strftime(seconds.cast(pa.timestamp("s", tz="UTC")), format="%Y-%m-%dT%H:%M:%S")
    digits = pc.utf8_lpad(fraction.cast(pa.string()), width=6, padding="0")
    fractions = pc.if_else(pc.equal(fraction, 0), "", pc.binary_join_element_wise(".", digits, ""))
    return pc.binary_join_element_wise(base, fractions, "Z", "")


def _first_markers(markers: pa.Array) -> pa.Array:
    """Each row's first delete marker id, null for a row with none."""
    if isinstance(markers, pa.ChunkedArray):
        markers = markers.combine_chunks()
    offsets = markers.offsets.slice(0, len(markers)).cast(pa.int64())
    at = pc.if_else(pc.greater(pc.list_value_length(markers), 0), offsets, None)
    return markers.values.take(at)


def _current_coded(current: pa.Array | pa.ChunkedArray, markers: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``current_version_id`` held as ``CURRENT``: null where it is the row's first delete marker."""
    if isinstance(current, pa.ChunkedArray):
        current = current.combine_chunks()
    same = pc.fill_null(pc.equal(current, _first_markers(markers)), False)
    # A take with null indices (if_else would keep every value's bytes).
    rows = pc.if_else(same, pa.scalar(None, pa.int64()), pa.array(np.arange(len(current), dtype=np.int64)))
    return current.take(rows).cast(CURRENT)


def _current_text(current: pa.Array | pa.ChunkedArray, markers: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``current_version_id`` as text again (``_current_coded`` undone)."""
    if isinstance(current, pa.ChunkedArray):
        current = current.combine_chunks()
    return pc.coalesce(current, _first_markers(markers).cast(CURRENT)).cast(pa.string())


def _times_text(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """ISO strings of timestamps, "" where there is none."""
    return pc.fill_null(iso_times(values), "")


def decoded(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The rows with ``schema``'s types (``PLAN_SCHEMA``), whatever compact columns hold them."""
    if table.schema.remove_metadata() == schema:
        return table
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for f in schema:
        column = table.column(f.name)
        if column.type == f.type:
            columns[f.name] = column
        elif f.name == "current_version_id" and column.type == CURRENT:
            columns[f.name] = _current_text(column, table.column("delete_markers"))
        elif pa.types.is_timestamp(column.type):
            columns[f.name] = _times_text(column)
        else:
            columns[f.name] = column.cast(f.type)
    reason = columns["reason"]
    derived = pc.equal(reason, DELETED_AT)
    if pc.any(derived).as_py():
        at = pc.binary_join_element_wise("deleted at ", columns["current_last_modified"], "")
        columns["reason"] = pc.if_else(derived, at, reason)
    return pa.table([columns[f.name] for f in schema], schema=schema)


def encoded(table: pa.Table) -> pa.Table:
    """The rows (``PLAN_SCHEMA``) in compact columns; ``decoded`` gives them back exactly (checked for the times:
    a time that would not come back as the same text stays text)."""
    n = table.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {name: table.column(name) for name in table.column_names}
    for name in _SMALL:
        columns[name] = columns[name].cast(SMALL_TEXT)
    for name in _TIMES:
        text = table.column(name)
        try:
            stamps = pc.if_else(pc.equal(text, ""), None, text).cast(TIMESTAMP) if n else pa.array([], TIMESTAMP)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # not a time Arrow reads: kept as text
        if pc.all(pc.equal(_times_text(stamps), text)).as_py() is not False:
            columns[name] = stamps
    columns["current_version_id"] = _current_coded(table.column("current_version_id"), table.column("delete_markers"))
    for name in _OPTIONAL:
        if columns[name].null_count == n:
            columns[name] = pa.nulls(n)
    reason = table.column("reason")
    at = pc.binary_join_element_wise("deleted at ", table.column("current_last_modified"), "")
    columns["reason"] = pc.if_else(pc.equal(reason, at), DELETED_AT, reason).cast(TEXT)
    return pa.table(columns)


def joined(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Compact parts (``encoded``) as one table; parts held differently (a time kept as text in one) are made
    alike first."""
    parts = [p for p in parts if p.num_rows] or parts[:1]
    if not parts:
        return encoded(schema.empty_table())
    first = parts[0].schema.remove_metadata()
    if all(p.schema.remove_metadata() == first for p in parts):
        return pa.concat_tables([p.replace_schema_metadata(None) for p in parts])
    return encoded(pa.concat_tables([decoded(p, schema) for p in parts]))
