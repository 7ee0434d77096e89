"""A synthetic Databend Fuse table, encoded as Databend v1.2.895 writes one (see tests/fixtures/databend).

    python -m bench.fuse_writer [--blocks 200] [--blocks-per-segment 100]   # write into moto and self-check

Per table root ``<storage root><database id>/<table id>/``:

- ``_b/h<uuid7>_v2.parquet``: a small real Parquet block (columns ``a`` int32, ``b`` string), its
  ``file_size`` and ``row_count`` recorded in the segment;
- ``_i_b_v2/<uuid7>_v4.parquet``: its bloom index (one row, a ``Bloom(i)`` large_binary column per column);
- ``_sg/h<uuid7>_v4.mpk``: ``u64 4 | u8 2 (MessagePack) | u8 1 (zstd) | u64 blocks_len | u64 summary_len |
  blocks | summary``, both payloads zstd(MessagePack maps keyed by field name, as in the fixtures);
- ``_hs/<segment uuid7>_v0.mpk``: the segment's HLL statistics (``u64 0 | u8 2 | u8 1 | u64 len | payload``);
- ``_ss/h<uuid7>_v4.mpk``: ``u64 4 | u8 2 | u8 1 | u64 payload_len | zstd(MessagePack)``; the current
  snapshot references every segment, the previous one (its ``prev_snapshot_id``, left unreferenced) all
  but the newest;
- ``last_snapshot_location_hint_v2``: JSON ``snapshot_full_path``, written after each commit;
- ``<storage root>_v_d77aa11285c22e0e1d4593a035c98c0d``: the 1-byte storage probe, outside the table root.

zstd frames are written without a content size, like Databend's.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from bench.common import sha

SNAPSHOT_HEADER = struct.Struct("<QBBQ")
SEGMENT_HEADER = struct.Struct("<QBBQQ")
MSGPACK, ZSTD = 2, 1
PROBE = "_v_d77aa11285c22e0e1d4593a035c98c0d"
HINT = "last_snapshot_location_hint_v2"
BASE_TIME = datetime(2026, 11, 24, tzinfo=timezone.utc)
REFERENCED_KINDS = ("snapshot", "segment", "segment_stats", "block", "bloom_index")

_zstd = zstandard.ZstdCompressor(level=3, write_content_size=False)


class Uuid7:
    """Time-ordered UUID v7 ids (48-bit milliseconds | 7 | 12-bit sequence | variant | 62 random bits)."""

    def __init__(self, rng: random.Random, start: datetime = BASE_TIME) -> None:
        self.rng = rng
        self.ms = int(start.timestamp() * 1000)
        self.seq = 0

    def next(self, *, step_ms: int = 0) -> bytes:
        self.ms += step_ms
        self.seq = (self.seq + 1) & 0xFFF
        if self.seq == 0:
            self.ms += 1
        value = (self.ms << 80) | (0x7 << 76) | (self.seq << 64) | (0b10 << 62) | self.rng.getrandbits(62)
        return value.to_bytes(16, "big")


def _mpk(value: Any) -> bytes:
    return _zstd.compress(msgpack.packb(value, use_bin_type=True))


def encode_snapshot(body: dict, *, version: int = 4) -> bytes:
    payload = _mpk(body)
    return SNAPSHOT_HEADER.pack(version, MSGPACK, ZSTD, len(payload)) + payload


def encode_segment(blocks: list[dict], summary: dict) -> bytes:
    b, s = _mpk(blocks), _mpk(summary)
    return SEGMENT_HEADER.pack(4, MSGPACK, ZSTD, len(b), len(s)) + b + s


def _int_stats(lo: int, hi: int, n: int) -> dict:
    return {"distinct_of_values": n, "in_memory_size": 4 * n + 125, "max": {"Number": {"Int32": hi}},
            "min": {"Number": {"Int32": lo}}, "null_count": 0}


def _str_stats(lo: str, hi: str, n: int, size: int) -> dict:
    return {"distinct_of_values": n, "in_memory_size": size, "max": {"String": list(hi.encode())},
            "min": {"String": list(lo.encode())}, "null_count": 0}


def _summary(*, rows: int, blocks: int, compressed: int, uncompressed: int, index: int, col_stats: dict,
             stats_meta: dict) -> dict:
    return {"additional_stats_meta": stats_meta, "block_count": blocks, "bloom_index_size": index,
            "cluster_stats": None, "col_stats": col_stats, "compressed_byte_size": compressed, "index_size": index,
            "inverted_index_size": None, "ngram_index_size": None, "perfect_block_count": 0, "row_count": rows,
            "spatial_index_size": None, "spatial_stats": None, "uncompressed_byte_size": uncompressed,
            "vector_index_size": None, "virtual_block_count": None, "virtual_col_stats": None,
            "virtual_column_size": None}


SCHEMA = {"fields": [
    {"auto_increment_expr": None, "column_id": 0, "computed_expr": None,
     "data_type": {"Nullable": {"Number": "Int32"}}, "default_expr": None, "name": "a"},
    {"auto_increment_expr": None, "column_id": 1, "computed_expr": None, "data_type": {"Nullable": "String"},
     "default_expr": None, "name": "b"}], "metadata": {}, "next_column_id": 2}


@dataclass
class FuseTable:
    """What was written: every object's bytes, and the keys the current snapshot references, by kind."""

    bucket_root: str  # storage root, e.g. "bench/"
    table_prefix: str  # "1/6"
    objects: dict[str, bytes] = field(default_factory=dict)  # key -> body, in write order
    referenced: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in REFERENCED_KINDS})
    snapshot_key: str = ""
    previous_snapshot_key: str = ""
    row_count: int = 0
    hint_versions: list[bytes] = field(default_factory=list)  # the hint is written once per commit

    @property
    def table_root(self) -> str:
        return f"{self.bucket_root}{self.table_prefix}/"

    @property
    def snapshot_location(self) -> str:
        return self.snapshot_key[len(self.bucket_root):]

    def referenced_keys(self) -> set[str]:
        return {key for keys in self.referenced.values() for key in keys}

    @property
    def blocks(self) -> list[str]:
        return self.referenced["block"]

    def digests(self, keys: Iterable[str]) -> dict[str, str]:
        return {key: sha(self.objects[key]) for key in keys}


def _block(index: int, rows: int) -> tuple[bytes, int]:
    start = index * rows
    table = pa.table({"a": pa.array(range(start, start + rows), pa.int32()),
                      "b": pa.array([f"row{i}" for i in range(start, start + rows)], pa.string())})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue(), table.nbytes


def _bloom(rng: random.Random) -> bytes:
    table = pa.table({"Bloom(0)": pa.array([rng.randbytes(64)], pa.large_binary()),
                      "Bloom(1)": pa.array([rng.randbytes(64)], pa.large_binary())})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _col_metas(parquet: bytes, rows: int) -> dict:
    meta = pq.ParquetFile(pa.BufferReader(parquet)).metadata.row_group(0)
    out = {}
    for i in range(meta.num_columns):
        column = meta.column(i)
        offset = column.dictionary_page_offset or column.data_page_offset
        out[i] = {"Parquet": {"len": column.total_compressed_size, "num_values": rows, "offset": offset}}
    return out


def build_table(*, blocks: int = 10_000, blocks_per_segment: int = 1000, rows_per_block: int = 8,
                storage_root: str = "bench/", table_prefix: str = "1/6", seed: int = 42) -> FuseTable:
    """Encode the whole table in memory (nothing is written yet): two commits, the second adding the last
    segment; the hint file then names the second snapshot."""
    if blocks < 1 or blocks_per_segment < 1:
        raise ValueError("blocks and blocks_per_segment must be at least 1")
    rng = random.Random(seed)
    ids = Uuid7(rng)
    table = FuseTable(storage_root, table_prefix)
    root = table.table_root
    table.objects[storage_root + PROBE] = b"\x00"
    with ThreadPoolExecutor(4) as pool:  # pyarrow writes release the GIL for part of the work
        parquet_blocks = list(pool.map(lambda i: _block(i, rows_per_block), range(blocks)))
    segments: list[tuple[str, int]] = []  # (location, first block index)
    snapshots: list[tuple[bytes, str]] = []
    segment_sizes = [min(blocks_per_segment, blocks - s) for s in range(0, blocks, blocks_per_segment)]
    commits = [segment_sizes[:-1], segment_sizes[-1:]] if len(segment_sizes) > 1 else [segment_sizes]
    first = 0
    totals = {"rows": 0, "blocks": 0, "compressed": 0, "uncompressed": 0, "index": 0}
    for commit in commits:
        for size in commit:
            metas = []
            seg = {"rows": 0, "compressed": 0, "uncompressed": 0, "index": 0}
            for index in range(first, first + size):
                data, uncompressed = parquet_blocks[index]
                block_id = ids.next(step_ms=1).hex()
                block_key = f"{root}_b/h{block_id}_v2.parquet"
                bloom_key = f"{root}_i_b_v2/{block_id}_v4.parquet"
                bloom = _bloom(rng)
                table.objects[block_key] = data
                table.objects[bloom_key] = bloom
                table.referenced["block"].append(block_key)
                table.referenced["bloom_index"].append(bloom_key)
                lo, hi = index * rows_per_block, (index + 1) * rows_per_block - 1
                when = BASE_TIME + timedelta(milliseconds=ids.ms - int(BASE_TIME.timestamp() * 1000))
                metas.append({
                    "block_size": uncompressed,
                    "bloom_filter_index_location": [bloom_key[len(storage_root):], 4],
                    "bloom_filter_index_size": len(bloom),
                    "cluster_stats": None,
                    "col_metas": _col_metas(data, rows_per_block),
                    "col_stats": {0: _int_stats(lo, hi, rows_per_block),
                                  1: _str_stats(f"row{lo}", f"row{hi}", rows_per_block, uncompressed // 2)},
                    "compression": "Zstd",
                    "create_on": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z",
                    "file_size": len(data),
                    "inverted_index_size": None,
                    "location": [block_key[len(storage_root):], 2],
                    "ngram_filter_index_size": None,
                    "row_count": rows_per_block,
                    "spatial_index_location": None,
                    "spatial_index_size": None,
                    "spatial_stats": None,
                    "vector_index_location": None,
                    "vector_index_size": None,
                    "virtual_block_meta": None,
                })
                seg["rows"] += rows_per_block
                seg["compressed"] += len(data)
                seg["uncompressed"] += uncompressed
                seg["index"] += len(bloom)
            lo, hi = first * rows_per_block, (first + size) * rows_per_block - 1
            col_stats = {0: _int_stats(lo, hi, seg["rows"]),
                         1: _str_stats(f"row{lo}", f"row{hi}", seg["rows"], seg["uncompressed"] // 2)}
            segment_id = ids.next(step_ms=1).hex()
            hs_key = f"{root}_hs/{segment_id}_v0.mpk"
            hs_payload = _mpk({"block_hlls": [list(rng.randbytes(24)) for _ in range(size)], "format_version": 0})
            hs = SNAPSHOT_HEADER.pack(0, MSGPACK, ZSTD, len(hs_payload)) + hs_payload
            stats_meta = {"hll": None, "location": [hs_key[len(storage_root):], 0], "row_count": 0, "size": len(hs),
                          "unstats_rows": 0}
            segment_key = f"{root}_sg/h{segment_id}_v4.mpk"
            table.objects[segment_key] = encode_segment(metas, _summary(
                rows=seg["rows"], blocks=size, compressed=seg["compressed"], uncompressed=seg["uncompressed"],
                index=seg["index"], col_stats=col_stats, stats_meta=stats_meta))
            table.objects[hs_key] = hs
            segments.insert(0, (segment_key[len(storage_root):], first))  # newest segment first, as Databend
            for key, value in (("rows", seg["rows"]), ("blocks", size), ("compressed", seg["compressed"]),
                               ("uncompressed", seg["uncompressed"]), ("index", seg["index"])):
                totals[key] += value
            first += size
        snapshot_id = ids.next(step_ms=1)
        snapshot_key = f"{root}_ss/h{snapshot_id.hex()}_v4.mpk"
        top = totals["rows"] - 1
        table.objects[snapshot_key] = encode_snapshot({
            "cluster_key_meta": None, "cluster_type": None, "format_version": 4,
            "prev_snapshot_id": [snapshots[-1][0], 4] if snapshots else None,
            "prev_table_seq": 10 + len(snapshots), "schema": SCHEMA,
            "segments": [[location, 4] for location, _ in segments],
            "snapshot_id": snapshot_id,
            "summary": _summary(
                rows=totals["rows"], blocks=totals["blocks"], compressed=totals["compressed"],
                uncompressed=totals["uncompressed"], index=totals["index"],
                col_stats={0: _int_stats(0, top, totals["rows"]),
                           1: _str_stats("row0", f"row{top}", totals["rows"], totals["uncompressed"] // 2)},
                stats_meta={"hll": list(rng.randbytes(64)), "location": ["", 0], "row_count": totals["rows"],
                            "size": 0, "unstats_rows": 0}),
            "table_statistics_location": None,
            "timestamp": (BASE_TIME + timedelta(minutes=len(snapshots) + 1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
        })
        snapshots.append((snapshot_id, snapshot_key))
        table.hint_versions.append(json.dumps({
            "snapshot_full_path": "/" + snapshot_key,
            "entity_comments": {"table_comment": "", "field_comments": ["", ""]}, "indexes": {}},
            separators=(",", ":")).encode())
    table.snapshot_key = snapshots[-1][1]
    table.previous_snapshot_key = snapshots[-2][1] if len(snapshots) > 1 else ""
    table.row_count = totals["rows"]
    table.referenced["snapshot"] = [table.snapshot_key]
    table.referenced["segment"] = [f"{storage_root}{location}" for location, _ in segments]
    table.referenced["segment_stats"] = [f"{root}_hs/{location.rsplit('/', 1)[-1][1:33]}_v0.mpk"
                                         for location, _ in segments]
    table.objects[root + HINT] = table.hint_versions[-1]
    return table


def write_table(client: Any, bucket: str, table: FuseTable, *, workers: int = 32) -> dict[str, str]:
    """Put every object (the hint once per commit, as Databend rewrites it); returns key -> version id."""
    hint_key = table.table_root + HINT
    items = [(k, v) for k, v in table.objects.items() if k != hint_key]
    with ThreadPoolExecutor(workers) as pool:
        ids = list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]).get("VersionId"),
                            items))
    for body in table.hint_versions:
        client.put_object(Bucket=bucket, Key=hint_key, Body=body)
    return {k: v for (k, _), v in zip(items, ids, strict=True)}


def delete_table_root(client: Any, bucket: str, table: FuseTable) -> int:
    """Delete every key under the table root like a careless job: DeleteObjects without version ids."""
    keys = sorted(k for k in table.objects if k.startswith(table.table_root))
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                     "Quiet": True})
    return len(keys)


def layout_needed(client: Any, bucket: str, table: FuseTable) -> tuple[set[str], dict]:
    """The keys airflow-fuse's Fuse layout says the table needs (one listing + metadata reads)."""
    from airflow_fuse.inventory import Inventory
    from airflow_fuse.layouts.fuse import FuseLayout
    from airflow_fuse.reader import S3VersionReader

    inventory = Inventory.sweep(client, bucket, table.table_root)
    result = FuseLayout().needed(inventory, S3VersionReader(client, bucket))
    return {obj.key for obj in result.needed}, {"tables": result.tables, **result.info}


def check_layout(needed: set[str], table: FuseTable) -> list[str]:
    """Differences between what the layout needs and what the writer referenced (empty: identical)."""
    expected = table.referenced_keys()
    problems = [f"needed but not referenced by the writer: {k}" for k in sorted(needed - expected)[:10]]
    problems += [f"referenced by the writer but not needed: {k}" for k in sorted(expected - needed)[:10]]
    return problems


def main(argv: list[str] | None = None) -> int:
    from bench.common import start_server

    parser = argparse.ArgumentParser(prog="python -m bench.fuse_writer", description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--blocks-per-segment", type=int, default=100)
    args = parser.parse_args(argv)
    started = time.monotonic()
    table = build_table(blocks=args.blocks, blocks_per_segment=args.blocks_per_segment)
    built = time.monotonic() - started
    server = start_server(fast_listing=True)
    try:
        client = server.client()
        client.create_bucket(Bucket="fuse-writer")
        client.put_bucket_versioning(Bucket="fuse-writer", VersioningConfiguration={"Status": "Enabled"})
        write_table(client, "fuse-writer", table)
        needed, info = layout_needed(client, "fuse-writer", table)
    finally:
        server.stop()
    summary = info["tables"][0]
    print(f"built {len(table.objects)} objects in {built:.1f} s; layout: snapshot {summary['snapshot_key']} "
          f"(from {summary['snapshot_source']}), {summary['row_count']} rows, {summary['block_count']} blocks, "
          f"{summary['segment_count']} segments; {len(needed)} keys needed, warnings {info['warnings']}")
    problems = check_layout(needed, table)
    if summary["row_count"] != table.row_count or summary["block_rows"] != table.row_count:
        problems.append(f"row counts: layout {summary['row_count']}/{summary['block_rows']}, "
                        f"written {table.row_count}")
    for problem in problems:
        print(f"  MISMATCH {problem}", file=sys.stderr)
    if not problems:
        print(f"the layout needs exactly the {len(needed)} keys the writer referenced "
              f"({', '.join(f'{len(v)} {k}' for k, v in table.referenced.items())})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
