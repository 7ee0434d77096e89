"""The restore's pure decisions, tested without a server: whatever happened to a key since the scan, a restore
writes only on top of the entry the plan saw, removes only delete markers, and never takes a ``null`` version id
for an identity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_fuse.inventory import KeyHistory
from airflow_fuse.layouts.base import NeededObject
from airflow_fuse.listing import VersionEntry
from airflow_fuse.plan import plan_object
from airflow_fuse.restore import STRATEGIES, copy_landed, decide, recheck, same_entry

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _entry(version_id: str, marker: bool, etag: str, size: int, seconds: int) -> VersionEntry:
    return VersionEntry("t/k", version_id, marker, False, 0 if marker else size, T0 + timedelta(seconds=seconds),
                        "" if marker else etag)


# A key's history, oldest first: (is a delete marker, etag, size); version ids are unique, or "null" for the oldest
# (written before versioning was enabled) or the newest (written or deleted while versioning was Suspended).
_ops = st.lists(st.tuples(st.booleans(), st.sampled_from(["e1", "e2", "e3"]), st.integers(1, 3)), min_size=1,
                max_size=6)


def _history(ops: list[tuple[bool, str, int]], null_at: str, start: int = 0) -> list[VersionEntry]:
    null_index = {"bottom": 0, "top": len(ops) - 1}.get(null_at)
    entries = [_entry("null" if i == null_index else f"v{start + i}", marker, etag, size, start + i)
               for i, (marker, etag, size) in enumerate(ops)]
    return entries[::-1]  # newest first, as listed


def _key(entries: list[VersionEntry]) -> KeyHistory:
    return KeyHistory("t/k", tuple(entries))


@st.composite
def _scenario(draw):
    """A history as scanned, the plan for it, and the history at restore time (what happened since)."""
    scanned = _history(draw(_ops), draw(st.sampled_from(["none", "bottom", "top"])))
    item = plan_object(NeededObject("t/k"), _key(scanned))
    since = draw(st.sampled_from(["nothing", "written", "deleted", "null replaced", "expired"]))
    now = list(scanned)
    if since in ("written", "deleted"):
        now = _history(draw(_ops), "none", start=100) + now
    elif since == "null replaced" and now[0].version_id == "null":  # Suspended: a write replaces the 'null' entry
        marker, etag, size = draw(st.tuples(st.booleans(), st.sampled_from(["e1", "e2", "e9"]), st.integers(1, 3)))
        now = [_entry("null", marker, etag, size, 50)] + now[1:]
    elif since == "expired" and len(now) > 1:
        now = now[:-1]
    return item, _key(scanned), _key(now), since


def _unchanged(scanned: KeyHistory, now: KeyHistory) -> bool:
    """The oracle: the whole current entry (id, kind, ETag, size, time) is the one scanned."""
    return now.current == scanned.current


@settings(max_examples=400, deadline=None)
@given(_scenario(), st.sampled_from(STRATEGIES))
def test_a_restore_writes_only_on_the_entry_the_plan_saw(scenario, strategy):
    item, scanned, now, since = scenario
    if not item.actionable:
        return
    step = decide(strategy, item, now, checked=True)
    if step.kind == "record":
        return
    # Something will be written: the key's current entry is exactly the one the plan saw...
    assert _unchanged(scanned, now), (since, item, now)
    # ...and the wanted version is still there, with the data the plan chose.
    assert any(same_entry(e, item.version_id, False, item.etag, item.size, item.last_modified)
               for e in now.entries)
    if step.kind == "undelete":
        # Only delete markers, and exactly those above the wanted version.
        above = now.above(item.version_id)
        assert step.markers == tuple(e.version_id for e in above)
        assert all(e.is_delete_marker for e in above) and step.markers


@settings(max_examples=300, deadline=None)
@given(_scenario())
def test_anything_written_or_deleted_since_the_scan_is_left_alone(scenario):
    item, scanned, now, since = scenario
    if not item.actionable or since == "nothing":
        return
    outcome = recheck(item, now)
    if since in ("written", "deleted", "null replaced") and not _unchanged(scanned, now):
        assert outcome is not None and outcome.result in ("changed since scan", "already restored")


def test_a_null_version_replaced_while_suspended_is_a_change():
    """The review's case: a 'null' marker on top when scanned; a writer's 'null' data version replaced it."""
    scanned = _key([_entry("null", True, "", 0, 10), _entry("v1", False, "e1", 5, 1)])
    item = plan_object(NeededObject("t/k"), scanned)
    assert item.action == "undelete" and item.delete_markers == ["null"]
    now = _key([_entry("null", False, "writer", 7, 20), _entry("v1", False, "e1", 5, 1)])
    outcome = recheck(item, now)
    assert outcome is not None and outcome.result == "changed since scan"
    # and a same-id, same-kind 'null' entry written at another time is a change too
    remarked = _key([_entry("null", True, "", 0, 30), _entry("v1", False, "e1", 5, 1)])
    assert recheck(item, remarked).result == "changed since scan"
    assert recheck(item, scanned) is None


def test_an_unconfirmed_copy_landed_only_if_a_new_version_holds_the_source():
    scanned = _key([_entry("m1", True, "", 0, 10), _entry("v1", False, "e1", 5, 1)])
    item = plan_object(NeededObject("t/k"), scanned)
    assert copy_landed(item, scanned, multipart=False) is None  # nothing new
    landed = _key([_entry("v9", False, "e1", 5, 20), *scanned.entries])
    assert copy_landed(item, landed, multipart=False).version_id == "v9"
    other = _key([_entry("v9", False, "e2", 5, 20), *scanned.entries])
    assert copy_landed(item, other, multipart=False) is None  # a writer's data, not our copy
    assert copy_landed(item, other, multipart=True).version_id == "v9"  # multipart: ETag not comparable
    assert copy_landed(item, _key([_entry("v9", False, "e1", 6, 20), *scanned.entries]), multipart=True) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 7), st.randoms(use_true_random=False))
def test_copies_are_checked_range_after_range_in_key_order_whatever_order_they_finish(n, size, rng):
    """The post-copy check lists one key range at a time, in key order, each only once every copy in it is done:
    each copied key is looked at exactly once, after its own copy."""
    from airflow_fuse.restore import Outcome, _Segments, _Settled

    keys = [f"t/k{i:03d}" for i in range(n)]
    segments = _Segments([keys[i:i + size] for i in range(0, n, size)])
    finished: set[str] = set()
    copies: set[str] = set()  # keys whose copy landed (the others failed: nothing to look at)
    checked: list[str] = []
    order = keys[:]
    rng.shuffle(order)
    for key in order:
        finished.add(key)
        result = "copied" if rng.random() < 0.8 else "failed"
        copies |= {key} if result == "copied" else set()
        segments.done(Outcome(key, result))  # type: ignore[arg-type]
        while (ready := segments.ready()) is not None:
            cursor, last, copied = ready
            assert segments.ready() is None  # one range at a time
            assert all(k in finished for k in keys if k <= last)  # listed only after every copy up to it is done
            assert all(cursor is None or k > cursor[0] for k in copied)
            checked += sorted(copied)
            segments.listed(_Settled((last, "v"), set()))
    assert checked == sorted(copies)  # every copy looked at once, in key order
