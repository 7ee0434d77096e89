"""A scan spread over workers: the table's key space cut into ranges, each listed into an inventory shard.

For a table whose listing alone takes too long on one worker: :func:`split_key_space` cuts the key space into
ranges ``(after, end]`` that meet at existing keys (found by the same probes as the parallel listing,
:mod:`airflow_fuse.listing_ranges`); :func:`list_shard` lists one range (one mapped Airflow task each) and
:func:`write_shard` saves it as a Parquet file (the :class:`~airflow_fuse.inventory.Inventory`'s Arrow table,
with the range in its metadata); :func:`read_shards` checks that the shards cover the key space exactly, once
each, and joins them into one inventory for planning. Each key with all its entries lies in exactly one range,
so the shards joined hold the entries of one sequential listing.

A shard is a listing taken at some moment: a plan made from shards is re-checked with a listing before the
restore writes anything, and the plan's ``listed_at`` is when the oldest shard's listing began.
"""

from __future__ import annotations

import concurrent.futures as futures
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_fuse.documents import read_document, write_document
from airflow_fuse.errors import BadInputError
from airflow_fuse.inventory import SCHEMA, Inventory
from airflow_fuse.listing import compact, finish, iter_pages, list_page, markers_first_on_ties, sort_entries
from airflow_fuse.listing_ranges import _guesses, in_range
from airflow_fuse.location import TableLocation, parse_table_uri
from airflow_fuse.s3 import explain
from airflow_fuse.times import isoformat, parse_time

__all__ = ["SHARD_FORMAT", "KeyRange", "list_shard", "read_shards", "shard_name", "split_key_space", "write_shard"]

SHARD_FORMAT = "airflow-fuse-inventory-shard/1"
_META = b"airflow_fuse.inventory_shard"
_PROBES_PER_SHARD = 4


@dataclass(frozen=True)
class KeyRange:
    """Keys ``after < key <= end`` (None: from the start / to the end of the table), shard ``index`` of
    ``count``. Plain data: it goes through XCom to one mapped task."""

    index: int
    count: int
    after: str | None
    end: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> KeyRange:
        if isinstance(value, KeyRange):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, dict) or not {"index", "count", "after", "end"} <= set(value):
            raise BadInputError(f"key range {value!r} is not one of the ranges split_key_space made "
                                "(index, count, after, end)")
        try:
            index, count = int(value["index"]), int(value["count"])
        except (TypeError, ValueError):
            raise BadInputError(f"key range {value!r} has an index or count that is not a number") from None
        if not 0 <= index < count:
            raise BadInputError(f"key range {value!r}: index must be in 0..count-1")
        return cls(index, count, value["after"], value["end"])

    def contains(self, key: str) -> bool:
        return (self.after is None or key > self.after) and (self.end is None or key <= self.end)


def shard_name(key_range: KeyRange) -> str:
    return f"shard-{key_range.index:05d}-of-{key_range.count:05d}.parquet"


# splitting ----------------------------------------------------------------------------------------------

def split_key_space(client: Any, bucket: str, prefix: str, shards: int, *, page_size: int = 1000) -> list[KeyRange]:
    """Up to ``shards`` ranges covering every key under ``prefix``, meeting at existing keys.

    One listing page shows the names' alphabet; probes (``KeyMarker=<guess>``, ``MaxKeys=1``) find existing keys
    across the key space (as :mod:`airflow_fuse.listing_ranges` does); the boundaries are spread evenly over the
    keys found. A table that fits in one page is one range. Ranges balance by key space, not by count: a folder
    much bigger than its siblings makes a bigger shard.
    """
    if shards < 1:
        raise BadInputError(f"shards={shards} must be at least 1")
    first = list_page(client, Bucket=bucket, Prefix=prefix, MaxKeys=page_size)
    keys = sorted(pc.unique(first.entries.column("key")).to_pylist())
    if shards == 1 or not first.truncated or not keys:
        return [KeyRange(0, 1, None, None)]

    def probe(guess: str) -> str | None:
        page = list_page(client, Bucket=bucket, Prefix=prefix, MaxKeys=1, KeyMarker=guess)
        found = page.entries.column("key")
        return found[0].as_py() if len(found) else None

    guesses = _guesses(keys, prefix, shards * _PROBES_PER_SHARD)
    with futures.ThreadPoolExecutor(min(16, max(1, len(guesses))), thread_name_prefix="fuse-split") as pool:
        found = {k for k in pool.map(probe, guesses) if k is not None}
    # The first page's last key is a boundary too (a moto probe may answer with the key after a guess: still an
    # existing key, so still a boundary).
    candidates = sorted(found | {keys[-1]})
    wanted = min(shards - 1, len(candidates))
    step = len(candidates) / wanted
    bounds = sorted({candidates[min(len(candidates) - 1, int(i * step + step / 2))] for i in range(wanted)})
    edges: list[str | None] = [None, *bounds, None]
    count = len(edges) - 1
    return [KeyRange(i, count, edges[i], edges[i + 1]) for i in range(count)]


# one shard ----------------------------------------------------------------------------------------------

def list_shard(client: Any, bucket: str, prefix: str, key_range: KeyRange | dict[str, Any], *,
               page_size: int = 1000, on_page: Callable[[int], None] | None = None) -> tuple[Inventory, set[str]]:
    """The entries of the keys in ``key_range``, in listing order, and the orders its pages showed.

    The listing starts at ``KeyMarker=after`` (an existing key: entries of keys ≤ it that a server lists anyway
    are dropped) and stops at the first page showing a key past ``end``.
    """
    key_range = KeyRange.from_dict(key_range)
    started, listed_at = time.monotonic(), datetime.now(timezone.utc)
    chunks, orders, pages = [], set(), 0
    try:
        for page in iter_pages(client, bucket, prefix, page_size=page_size, key_marker=key_range.after,
                               on_page=on_page):
            pages += 1
            table, past = in_range(page.entries, key_range.after, key_range.end)
            if table.num_rows:
                chunks.append(compact(table))
                orders.add(page.order)
            if past:
                break
    except Exception as exc:
        raise explain(exc, bucket=bucket, client=client,
                      action=f"list the versions under {prefix!r} (shard {key_range.index}) in") from None
    listing = finish(chunks, orders)
    return Inventory(bucket, prefix, listing, pages=pages, seconds=time.monotonic() - started,
                     listed_at=listed_at), orders


def shard_bytes(inventory: Inventory, key_range: KeyRange, orders: Iterable[str]) -> bytes:
    """A shard as Parquet: the inventory's rows (SCHEMA) and, in the file's metadata, what it covers."""
    meta = {"format": SHARD_FORMAT, "bucket": inventory.bucket, "prefix": inventory.prefix,
            **key_range.as_dict(), "listed_at": isoformat(inventory.listed_at), "pages": inventory.pages,
            "orders": sorted(orders), "entries": len(inventory), "keys": inventory.key_count}
    table = inventory.table.replace_schema_metadata({_META: json.dumps(meta).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def write_shard(client: Any, table: str, key_range: KeyRange | dict[str, Any], location: str, *,
                allow_bucket_root: bool = False, page_size: int = 1000,
                on_page: Callable[[int], None] | None = None) -> dict[str, Any]:
    """List one range of ``table`` and save it as ``location/shard-IIIII-of-NNNNN.parquet`` (a local folder or
    ``s3://``, outside the table). Running it again overwrites the same file."""
    key_range = KeyRange.from_dict(key_range)
    where = parse_table_uri(table, allow_bucket_root=allow_bucket_root)
    inventory, orders = list_shard(client, where.bucket, where.prefix, key_range, page_size=page_size,
                                   on_page=on_page)
    uri = location.rstrip("/") + "/" + shard_name(key_range)
    saved = write_document(uri, shard_bytes(inventory, key_range, orders), client=client, table=where)
    return {"shard": saved, "index": key_range.index, "count": key_range.count, "keys": inventory.key_count,
            "entries": len(inventory), "pages": inventory.pages}


# all shards ---------------------------------------------------------------------------------------------

def _shard_uris(client: Any, shards: Any) -> list[str]:
    """Shard files: the locations given (XCom of the mapped tasks: URIs or their summaries), or every
    ``*.parquet`` in a folder."""
    if isinstance(shards, str):
        text = shards.strip()
        if text.startswith("["):
            try:
                return _shard_uris(client, json.loads(text))
            except ValueError:
                pass
        if text.endswith(".parquet"):
            return [text]
        return _folder(client, text)
    uris = []
    for item in list(shards or []):
        uri = item.get("shard") if isinstance(item, dict) else item
        if not isinstance(uri, str) or not uri:
            raise BadInputError(f"inventory_shards holds {item!r}: give shard locations, or the folder holding them")
        uris.append(uri)
    return uris


def _folder(client: Any, folder: str) -> list[str]:
    if folder.startswith("s3://"):
        where = parse_table_uri(folder.rstrip("/") + "/", allow_bucket_root=True)
        uris = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=where.bucket, Prefix=where.prefix):
                uris += [f"s3://{where.bucket}/{o['Key']}" for o in page.get("Contents", [])
                         if o["Key"].endswith(".parquet")]
        except Exception as exc:
            raise explain(exc, bucket=where.bucket, client=client, action="list the inventory shards in") from None
        return uris
    path = Path(folder)
    if not path.is_dir():
        raise BadInputError(f"inventory_shards {folder!r} is not a folder nor a shard file: give the folder the "
                            "FuseInventoryShardOperator tasks wrote to, or their shard files")
    return [str(p) for p in sorted(path.glob("*.parquet"))]


def _read_one(client: Any, uri: str, location: TableLocation) -> tuple[dict[str, Any], pa.Table]:
    data = read_document(uri, client=client, what="inventory shard")
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise BadInputError(f"inventory shard {uri} is not a Parquet file ({exc}): it is damaged; list that shard "
                            "again") from None
    try:
        meta = json.loads((table.schema.metadata or {}).get(_META, b"{}"))
    except ValueError:
        meta = {}
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
        raise BadInputError(f"{uri} is not an airflow-fuse inventory shard (no {SHARD_FORMAT} metadata)")
    if meta.get("bucket") != location.bucket or meta.get("prefix") != location.prefix:
        raise BadInputError(f"inventory shard {uri} was listed from s3://{meta.get('bucket')}/{meta.get('prefix')}, "
                            f"not from the table {location.uri}")
    if table.schema.remove_metadata() != SCHEMA:
        raise BadInputError(f"inventory shard {uri} does not have the inventory's columns: list that shard again")
    return meta, table


def read_shards(client: Any, location: TableLocation, shards: Any) -> tuple[Inventory, dict[str, Any]]:
    """The inventory of the table from its shards, once they are checked to cover its key space exactly: one
    shard per range of the same split, the ranges meeting end to end, every key inside its shard's range."""
    uris = _shard_uris(client, shards)
    if not uris:
        raise BadInputError(f"no inventory shard found in {shards!r}: run the shard tasks first (their locations, "
                            "or the folder they wrote to)")
    with futures.ThreadPoolExecutor(min(8, len(uris)), thread_name_prefix="fuse-shards") as pool:
        read = list(pool.map(lambda uri: (uri, *_read_one(client, uri, location)), uris))
    ranges = [(uri, KeyRange.from_dict(meta), meta, table) for uri, meta, table in read]
    counts = {key_range.count for _, key_range, _, _ in ranges}
    if len(counts) > 1:
        raise BadInputError(f"inventory shards come from different splits (of {sorted(counts)} shards): give the "
                            "shards of one run")
    count = counts.pop()
    by_index: dict[int, tuple[str, KeyRange, dict[str, Any], pa.Table]] = {}
    for uri, key_range, meta, table in ranges:
        if key_range.index in by_index:
            raise BadInputError(f"inventory shards {by_index[key_range.index][0]} and {uri} are both shard "
                                f"{key_range.index}: give each shard once (from one split)")
        by_index[key_range.index] = (uri, key_range, meta, table)
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise BadInputError(f"inventory shards {', '.join(map(str, missing[:10]))} of {count} are missing: the "
                            "keys in their ranges would be left out; run those shard tasks (or all) again")
    ordered = [by_index[i] for i in range(count)]
    previous_end: str | None = None
    for uri, key_range, _, table in ordered:
        if key_range.after != previous_end or (key_range.index == count - 1 and key_range.end is not None):
            raise BadInputError(f"inventory shard {uri} covers keys after {key_range.after!r}, but the previous "
                                f"shard ends at {previous_end!r}: the shards leave a gap or overlap; split and "
                                "list again")
        keys = table.column("key")
        if len(keys):
            low, high = pc.min(keys).as_py(), pc.max(keys).as_py()
            if not (key_range.contains(low) and key_range.contains(high)):
                raise BadInputError(f"inventory shard {uri} holds keys outside its range ({key_range.after!r}, "
                                    f"{key_range.end!r}]: it is not what list_shard wrote; list it again")
        previous_end = key_range.end
    orders = {o for _, _, meta, _ in ordered for o in meta.get("orders", [])}
    entries = pa.concat_tables([t.replace_schema_metadata(None) for _, _, _, t in ordered]) if ordered else \
        SCHEMA.empty_table()
    # Ties between a version and a marker follow what every page of the table showed (as one listing would).
    entries = sort_entries(entries, markers_first=markers_first_on_ties(orders))
    times = [parse_time(meta["listed_at"], name="listed_at", allow_future=True) for _, _, meta, _ in ordered]
    oldest = min(t for t in times if t is not None)
    newest = max(t for t in times if t is not None)
    inventory = Inventory(location.bucket, location.prefix, entries,
                          pages=sum(int(meta.get("pages", 0)) for _, _, meta, _ in ordered), listed_at=oldest)
    info = {"source": "shards", "shards": count, "listed_from": isoformat(oldest), "listed_until": isoformat(newest)}
    return inventory, info
