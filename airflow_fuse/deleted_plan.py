"""The plan of a prefix table's deleted keys, computed on the inventory's columns (pyarrow compute), not per key.

Without ``as_of``, the prefix layout needs every key whose current entry is a delete marker (inside the incident
window, if one is given), with no metadata checks. For such a key ``plan.plan_object`` decides:

- no version holding data is listed: ``unrecoverable`` (only delete markers are left);
- else the newest data version comes back by ``undelete``: the entries above it are the key's leading delete
  markers, and they are the ones removed.

That is computed here for a batch of keys at a time, straight from the listing's sorted columns (keys ascending,
each key's entries newest first). A key whose history holds a version id ``null`` (versioning was Suspended), or
whose newest data version's id is repeated above it, is left to ``plan_object`` (returned apart): the rows are
the same either way (tests/test_deleted_plan.py compares them on random histories). Keys deleted outside the
window come back as ``skipped`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from airflow_fuse.inventory import Inventory, KeyHistory
from airflow_fuse.listing import VersionEntry, entry_rows
from airflow_fuse.plan import ONLY_MARKERS_LEFT, PLAN_SCHEMA
from airflow_fuse.plan_columns import CURRENT, DELETED_AT, SMALL_TEXT, TEXT, iso_times

__all__ = ["DeletedKeys", "DeletedPlan", "iso_times", "plan_batch", "plan_deleted"]


@dataclass(frozen=True)
class DeletedKeys:
    """What a layout asks to be planned on the columns: the keys whose current entry is a delete marker created
    inside ``[since, before)`` (either end open), with no metadata checks; the other deleted keys are skipped."""

    since: datetime | None = None
    before: datetime | None = None


@dataclass
class DeletedPlan:
    """The rows (``plan.PLAN_SCHEMA`` column names) for a batch of keys, and the keys left to ``plan_object``."""

    needed: pa.Table  # rows of the needed keys, key order; with "_index", the key's index in the inventory
    slow: list[int]  # inventory indices of needed keys whose history needs the per-key decision
    skipped: pa.Table  # rows of the keys deleted outside the window (skipped)
    histories: list[KeyHistory] = field(default_factory=list)  # of the ``slow`` keys, in their order


def _per_key(cumulative: pa.Array, starts: pa.Array) -> pa.Array:
    """Per key, how many rows a 0/1 column counts in the key's rows, from its cumulative sum (with a 0 first)."""
    return pc.subtract(cumulative.take(starts.slice(1)), cumulative.take(starts.slice(0, len(starts) - 1)))


def _cumulative(flags: pa.Array) -> pa.Array:
    """0, then the running count of the true flags: ``out[r]`` is the number of true flags before row ``r``."""
    return pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(flags.cast(pa.int64()))])


def plan_batch(keys: pa.Array, starts: pa.Array, entries: pa.Table, window: DeletedKeys,
               first_index: int = 0) -> DeletedPlan:
    n_keys, n_rows = len(keys), entries.num_rows
    heads = starts.slice(0, n_keys)
    version_id = entries.column("version_id").combine_chunks()
    is_marker = entries.column("is_delete_marker").combine_chunks()
    modified = entries.column("last_modified").combine_chunks()
    group = pc.list_parent_indices(pa.LargeListArray.from_arrays(starts, pa.nulls(n_rows)))

    current_marker = is_marker.take(heads)
    current_modified = modified.take(heads)
    in_window = pc.is_valid(heads)
    if window.since is not None:
        in_window = pc.and_(in_window, pc.greater_equal(current_modified, pa.scalar(window.since, modified.type)))
    if window.before is not None:
        in_window = pc.and_(in_window, pc.less(current_modified, pa.scalar(window.before, modified.type)))
    needed = pc.and_(current_marker, in_window)

    # Per row: data versions before it in its key; a leading delete marker has none.
    is_data = pc.invert(is_marker)
    data_before = _cumulative(is_data)
    key_base = data_before.take(heads)
    leading = pc.and_(is_marker, pc.equal(data_before.slice(0, n_rows), key_base.take(group)))
    n_leading = _per_key(_cumulative(leading), starts)
    has_data = pc.greater(_per_key(data_before, starts), 0)
    wanted = pc.add(heads, n_leading)  # the newest data version's row (when the key has one)

    # Left to plan_object: a 'null' version id anywhere in the key, or the wanted id repeated above it.
    odd = pc.greater(_per_key(_cumulative(pc.equal(version_id, "null")), starts), 0)
    leading_rows = pc.indices_nonzero(leading)
    leading_groups = group.take(leading_rows)
    wanted_ids = version_id.take(pc.if_else(has_data, wanted, heads))
    repeated = pc.and_(pc.equal(version_id.take(leading_rows), wanted_ids.take(leading_groups)),
                       has_data.take(leading_groups))
    if pc.any(repeated).as_py():
        hits = pc.unique(leading_groups.filter(repeated))
        odd = pc.or_(odd, pc.is_in(pa.array(range(n_keys), pa.int64()), value_set=hits.cast(pa.int64())))

    fast = pc.and_(needed, pc.invert(odd))
    slow = pc.indices_nonzero(pc.and_(needed, odd))
    rows = pc.indices_nonzero(fast)
    row_heads = heads.take(rows)
    restore = has_data.take(rows)
    wanted_rows = pc.if_else(restore, wanted.take(rows), None)
    n = len(rows)
    n_markers = pc.if_else(restore, n_leading.take(rows), 0)
    # The markers removed: the leading markers of the keys that come back (all of a key with no data version
    # are leading markers, and none is removed).
    marker_rows = leading_rows.filter(pc.and_(fast, has_data).take(leading_groups))
    offsets = _cumulative(n_markers)
    which = pc.if_else(restore, 0, 1)  # 0: comes back (undelete), 1: only markers are left

    def codes(indices: pa.Array, names: list[str], kind: pa.DataType) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(indices.cast(kind.index_type), pa.array(names, pa.string()))

    def wanted_column(name: str, empty: object) -> pa.Array:
        return pc.fill_null(entries.column(name).take(wanted_rows), empty)

    # Compact columns (airflow_fuse.plan_columns): the texts a few codes, the times timestamps, the reason of a
    # key that comes back "deleted at" its current time.
    table = pa.table({
        # Every key of the batch: the listing's own key column (no copy).
        "key": keys if n == n_keys else keys.take(rows),
        "status": codes(which, ["restore", "unrecoverable"], SMALL_TEXT),
        "kind": codes(pa.repeat(pa.scalar(0, pa.int8()), n), ["object"], SMALL_TEXT),
        "action": codes(which, ["undelete", ""], SMALL_TEXT),
        "version_id": wanted_column("version_id", ""),
        "size": wanted_column("size", 0),
        "etag": wanted_column("etag", ""),
        "reason": codes(which, [DELETED_AT, ONLY_MARKERS_LEFT], TEXT),
        # A key that comes back: its current entry is its first marker (plan_columns.CURRENT: held once).
        "current_version_id": version_id.take(pc.if_else(restore, pa.scalar(None, row_heads.type),
                                                         row_heads)).cast(CURRENT),
        "current_is_delete_marker": pa.repeat(pa.scalar(True), n),
        "current_etag": entries.column("etag").take(row_heads),
        "current_size": entries.column("size").take(row_heads),
        "current_last_modified": current_modified.take(rows),
        "last_modified": modified.take(wanted_rows),
        "delete_markers": pa.ListArray.from_arrays(offsets.cast(pa.int32()), version_id.take(marker_rows)),
        "expected_size": pa.nulls(n),
        "row_count": pa.nulls(n),
        "_index": pc.add(rows.cast(pa.int64()), first_index),
    })
    skipped_rows = pc.indices_nonzero(pc.and_(current_marker, pc.invert(in_window)))
    reasons = pc.binary_join_element_wise("deleted at ", iso_times(current_modified.take(skipped_rows)),
                                          ", outside the incident window", "")
    return DeletedPlan(table,
                       [first_index + i for i in slow.to_pylist()], _skipped(keys.take(skipped_rows), reasons))


def _skipped(keys: pa.Array | pa.ChunkedArray, reasons: pa.Array) -> pa.Table:
    """Rows of keys left alone: every other field empty, as ``PlanItem(key, "skipped", reason=...)`` has it."""
    if not len(keys):
        return PLAN_SCHEMA.empty_table()
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    given = {"key": keys, "status": "skipped", "kind": "object", "reason": reasons}
    empty = {pa.string(): "", pa.int64(): 0, pa.bool_(): False, pa.list_(pa.string()): []}
    columns = []
    for f in PLAN_SCHEMA:
        value = given.get(f.name, None if f.name in ("expected_size", "row_count") else empty[f.type])
        columns.append(value if isinstance(value, pa.Array) else pa.repeat(pa.scalar(value, f.type), len(keys)))
    return pa.table(columns, schema=PLAN_SCHEMA)


def _histories(keys: pa.Array | pa.ChunkedArray, starts: pa.Array, entries: pa.Table,
               indices: list[int]) -> list[KeyHistory]:
    """The histories of a batch's keys at these indices (in the batch), from the batch's own columns."""
    out = []
    for i in indices:
        key, row, end = keys[i].as_py(), starts[i].as_py(), starts[i + 1].as_py()
        out.append(KeyHistory(key, tuple(VersionEntry(key, *values)
                                         for values in entry_rows(entries.slice(row, end - row)))))
    return out


def plan_deleted(inventory: Inventory, window: DeletedKeys, *, batch: int = 4096,
                 release: bool = False) -> Iterator[DeletedPlan]:
    """The deleted keys' rows, a batch of keys at a time, in key order (a batch's temporary columns are a few
    megabytes: the plan's own columns are what memory holds once it is made). With ``release``, the inventory's
    rows are given back as the batches go (``Inventory.release_batches``): a caller keeps nothing of a batch's
    columns but the rows made of them."""
    batches = inventory.release_batches(batch) if release else inventory.key_batches(batch)
    for first, keys, starts, entries in batches:
        part = plan_batch(keys, starts, entries, window, first)
        if part.slow:
            part.histories = _histories(keys, starts, entries, [i - first for i in part.slow])
        yield part
        del part, keys, starts, entries
