"""A scan gives the listing's rows back as it plans them (``build_plan(release=True)``, what ``engine.scan`` and a
fresh ``amend`` do): the plan must be exactly the plan made with the whole listing held, for any history, and
the spent inventory must still answer the re-check of every key planned as a copy (and refuse any other key
rather than answer "not listed")."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from hypothesis import given, settings

from airflow_fuse.inventory import Inventory
from airflow_fuse.layouts.prefix import PrefixLayout
from airflow_fuse.plan import Plan, build_plan
from tests.test_deleted_plan import START, _inventory, tables


def _plan(table: dict, *, release: bool) -> tuple[Plan, Inventory]:
    inventory = _inventory(table, unique_ids=False)
    layout = PrefixLayout()
    return build_plan(inventory, layout.needed(inventory), table_format="prefix", release=release), inventory


@settings(max_examples=150, deadline=None)
@given(table=tables)
def test_a_plan_made_while_giving_the_listing_back_is_the_same_plan(table):
    held, _ = _plan(table, release=False)
    released, inventory = _plan(table, release=True)
    assert [asdict(i) for i in released.items] == [asdict(i) for i in held.items]
    released.created_at, released.listed_at = held.created_at, held.listed_at
    assert released.digest == held.digest
    assert released.to_json() == held.to_json() and released.to_parquet() == held.to_parquet()
    assert (released.keys_listed, released.versions_listed) == (held.keys_listed, held.versions_listed)
    assert inventory.released
    copies = {i.key for i in released.items if i.action == "copy"}
    for item in released.items:
        if item.key in copies:
            history = inventory.history(item.key)
            assert history is not None and history.key == item.key
            assert history.current.version_id == item.current_version_id
        else:
            with pytest.raises(LookupError, match="given back"):
                inventory.history(item.key)


@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_release_batches_walks_every_row_once_in_key_order(size):
    table = {f"t/{k}": [(True, "m1", 0, START, ""), (False, "v1", 3, START, "e1")] for k in "abcdefg"}
    table["t/h"] = [(False, "v1", 5, START, "e2")]
    inventory = _inventory(table, unique_ids=True)
    whole = [(first, keys.to_pylist(), starts.to_pylist(), entries.to_pylist())
             for first, keys, starts, entries in inventory.key_batches(size)]
    walked = [(first, keys.to_pylist(), starts.to_pylist(), entries.to_pylist())
              for first, keys, starts, entries in inventory.release_batches(size)]
    assert walked == whole
    assert (inventory.key_count, len(inventory)) == (8, 15)
    assert list(inventory.keys()) == []
