"""The ``prefix`` layout: the table is every object under a prefix (plain Parquet datasets, Hive layouts).

What counts as lost:
- by default, every key whose current entry is a delete marker;
- ``deleted_since`` / ``deleted_before``: only keys whose delete marker was created inside that window
  (the incident), so objects the table's own housekeeping deleted before or after stay deleted;
- ``as_of``: the keys that held data at that time and do not now; each comes back as the version that
  was current then.
Keys written after ``as_of`` and keys overwritten after it are reported, not touched, unless
``rollback_overwrites=True``; pointer files (hint files, ``version-hint.text``, ``_last_checkpoint``)
are never rolled back unless listed in ``rollback_keys``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow_fuse.deleted_plan import DeletedKeys
from airflow_fuse.formats import ScanTimes, TableFormat
from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.base import LayoutResult, NeededObject, SkippedKey, VersionReader, is_pointer_file
from airflow_fuse.times import isoformat


class PrefixLayout:
    name = "prefix"

    def __init__(
        self,
        *,
        as_of: datetime | None = None,
        deleted_since: datetime | None = None,
        deleted_before: datetime | None = None,
        rollback_overwrites: bool = False,
        rollback_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.as_of = as_of
        self.deleted_since = deleted_since
        self.deleted_before = deleted_before
        self.rollback_overwrites = rollback_overwrites
        self.rollback_keys = rollback_keys

    def _in_window(self, when: datetime) -> bool:
        if self.deleted_since is not None and when < self.deleted_since:
            return False
        return not (self.deleted_before is not None and when >= self.deleted_before)

    def needed(self, inventory: Inventory, reader: VersionReader | None = None) -> LayoutResult:
        info = {"as_of": isoformat(self.as_of), "deleted_since": isoformat(self.deleted_since),
                "deleted_before": isoformat(self.deleted_before)}
        info = {k: v for k, v in info.items() if v}
        if self.as_of is None:
            # The deleted keys (inside the window): planned on the inventory's columns, with no object per key.
            return LayoutResult(needed=[], info=info,
                                deleted=DeletedKeys(since=self.deleted_since, before=self.deleted_before))
        needed: list[NeededObject] = []
        skipped: list[SkippedKey] = []
        for history in inventory.histories():
            current = history.current
            then = history.at(self.as_of)
            if then is None or then.is_delete_marker:
                if not current.is_delete_marker:
                    skipped.append(SkippedKey(history.key, f"written after as_of ({isoformat(self.as_of)}); "
                                                           "left as it is"))
                continue  # did not exist at as_of, or was already deleted then
            if current.is_delete_marker:
                needed.append(NeededObject(history.key, as_of=self.as_of))
            elif current.version_id != then.version_id:
                pointer = is_pointer_file(history.key)
                allowed = history.key in self.rollback_keys or (self.rollback_overwrites and not pointer)
                if allowed:
                    needed.append(NeededObject(history.key, as_of=self.as_of))
                elif pointer:
                    skipped.append(SkippedKey(history.key, "pointer file overwritten after as_of; never rolled "
                                                           "back unless named in rollback_keys"))
                else:
                    skipped.append(SkippedKey(history.key, "overwritten after as_of; pass rollback_overwrites=True "
                                                           "to bring back the older version"))
        return LayoutResult(needed=needed, skipped=skipped, info=info)


def deleted_per_key(inventory: Inventory, layout: PrefixLayout) -> LayoutResult:
    """The deleted keys as objects, one history at a time: what ``LayoutResult.deleted`` stands for (the reference
    the columnar planning is tested against)."""
    needed: list[NeededObject] = []
    skipped: list[SkippedKey] = []
    for history in inventory.histories():
        current = history.current
        if not current.is_delete_marker:
            continue  # present: nothing to do, nothing to report per key
        if not layout._in_window(current.last_modified):
            skipped.append(SkippedKey(history.key, f"deleted at {isoformat(current.last_modified)}, "
                                                   "outside the incident window"))
            continue
        needed.append(NeededObject(history.key))
    return LayoutResult(needed=needed, skipped=skipped)


def _build(layout_options: Any, times: ScanTimes) -> PrefixLayout:
    return PrefixLayout(as_of=times.as_of, deleted_since=times.deleted_since, deleted_before=times.deleted_before,
                        rollback_overwrites=bool(layout_options.get("rollback_overwrites")),
                        rollback_keys=frozenset(layout_options.get("rollback_keys") or ()))


FORMAT = TableFormat(
    name="prefix",
    title="Every object under the prefix",
    build=_build,
    options={"rollback_overwrites": "with as_of, also roll back keys overwritten after it (never pointer files)",
             "rollback_keys": "with as_of, keys to roll back even if they are pointer files"},
    time_window=True,
    referenced=False,
)
