"""Verify: the table reads whole again.

pyarrow mode (default): for every data file the layout lists, read the Parquet footer through the same
S3 client (endpoint, credentials) with ranged GETs; compare each file's rows with the metadata and the
total with the snapshot's ``row_count``; optionally read every file in full and compute ``expect``
aggregates (``row_count``, ``sum(a)``, ``min(b)``, ``max(b)``, ``count(c)``) with pyarrow compute.
SQL mode: run a query on any DB-API connection and compare its first row with ``expect``.
"""

from __future__ import annotations

import decimal
import io
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_fuse import formats
from airflow_fuse.engine import ScanOptions, scan
from airflow_fuse.errors import BadInputError
from airflow_fuse.parquet import read_parquet
from airflow_fuse.plan import Plan

FOOTER_PREFETCH = 64 * 1024
_AGGREGATE_RE = re.compile(r"^\s*(sum|min|max|count)\s*\(\s*([^)]+?)\s*\)\s*$", re.IGNORECASE)


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable file over one object version, read with ranged GETs (footer prefetched)."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, version_id: str | None = None) -> None:
        self.client, self.bucket, self.key, self.size, self.version_id = client, bucket, key, size, version_id
        self.position = 0
        self.requests = 0
        self._tail_start = max(0, size - FOOTER_PREFETCH)
        self._tail: bytes | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _get(self, start: int, end: int) -> bytes:
        self.requests += 1
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{end - 1}"}
        if self.version_id:
            kwargs["VersionId"] = self.version_id
        return self.client.get_object(**kwargs)["Body"].read()

    def readinto(self, buffer: Any) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        if self.position >= self._tail_start:
            if self._tail is None:
                self._tail = self._get(self._tail_start, self.size)
            data = self._tail[self.position - self._tail_start:end - self._tail_start]
        else:
            data = self._get(self.position, end)
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)


@dataclass
class FileCheck:
    key: str
    ok: bool
    rows: int | None = None
    expected_rows: int | None = None
    problem: str = ""


@dataclass
class VerifyResult:
    table: str
    table_format: str
    files: list[FileCheck] = field(default_factory=list)
    total_rows: int = 0
    expected_rows: int | None = None
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {expected, actual, ok}
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "table": self.table, "table_format": self.table_format, "ok": self.ok,
            "files_checked": len(self.files), "files_failed": sum(1 for f in self.files if not f.ok),
            "total_rows": self.total_rows, "expected_rows": self.expected_rows,
            "checks": self.checks, "problems": self.problems[:10],
        }

    def render(self) -> str:
        lines = [f"verification of {self.table} ({self.table_format}): {'OK' if self.ok else 'FAILED'}",
                 f"  {len(self.files)} data files read, {self.total_rows} rows"
                 + (f" (metadata says {self.expected_rows})" if self.expected_rows is not None else "")]
        for name, check in self.checks.items():
            lines.append(f"  {name}: expected {check['expected']!r}, got {check['actual']!r} "
                         f"{'ok' if check['ok'] else 'MISMATCH'}")
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        return "\n".join(lines)


def _normalise(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value.normalize()) if value == value.to_integral() else str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _same(expected: Any, actual: Any) -> bool:
    actual = _normalise(actual)
    if isinstance(expected, float) or isinstance(actual, float):
        try:
            return abs(float(expected) - float(actual)) <= 1e-9 * max(1.0, abs(float(expected)))
        except (TypeError, ValueError):
            return False
    if isinstance(expected, str) and not isinstance(actual, str):
        return expected == str(actual)
    return expected == actual


def aggregate(table: pa.Table, expression: str) -> Any:
    """``row_count`` or ``func(column)`` for func in sum, min, max, count (non-null values)."""
    if expression.strip().lower() in ("row_count", "count(*)"):
        return table.num_rows
    match = _AGGREGATE_RE.match(expression)
    if not match:
        raise BadInputError(f"expect key {expression!r} is not row_count or sum/min/max/count(column)")
    func, column = match.group(1).lower(), match.group(2)
    if column not in table.column_names:
        raise BadInputError(f"expect key {expression!r}: the table has no column {column!r} "
                            f"(columns: {', '.join(table.column_names)})")
    values = table.column(column)
    if pa.types.is_string_view(values.type) or pa.types.is_binary_view(values.type):
        values = values.cast(pa.string() if pa.types.is_string_view(values.type) else pa.binary())  # no kernels
    if func == "count":
        return pc.count(values).as_py()
    return {"sum": pc.sum, "min": pc.min, "max": pc.max}[func](values).as_py()


def data_files(plan: Plan) -> list[tuple[str, int | None, int | None]]:
    """(key, expected size, expected rows) of every Parquet data file the plan says the table needs."""
    out = []
    row_kinds = formats.get(plan.table_format).row_kinds
    for item in plan.items:
        if item.status == "skipped":
            continue
        if item.kind in row_kinds or (not row_kinds and item.key.endswith(".parquet")):
            out.append((item.key, item.expected_size, item.row_count))
    return out


def verify_table(client: Any, table: str, options: ScanOptions | None = None, *, full_read: bool = False,
                 expect: dict[str, Any] | None = None, conn_id: str | None = None, max_workers: int = 16,
                 log: Callable[[str], None] | None = None) -> VerifyResult:
    """Scan the table, then verify it (:func:`verify_plan`)."""
    return verify_plan(client, scan(client, table, options, conn_id=conn_id), full_read=full_read, expect=expect,
                       max_workers=max_workers, log=log, table=table)


def verify_plan(client: Any, plan: Plan, *, full_read: bool = False, expect: dict[str, Any] | None = None,
                max_workers: int = 16, log: Callable[[str], None] | None = None,
                table: str | None = None) -> VerifyResult:
    """Read every data file a scan's plan says the table needs; a problem is named with expected and actual.

    Takes the plan (what the table needs, from its own metadata) rather than scanning: the stages flow one way.
    """
    expect = dict(expect or {})
    result = VerifyResult(table=table or plan.location.uri, table_format=plan.table_format)
    words = {"restore": "missing, restorable", "damaged": "damaged, restorable", "unrecoverable": "missing"}
    for item in plan.items:
        if item.status in words:
            result.problems.append(f"{item.key}: {words[item.status]} ({item.reason})")
    if not formats.get(plan.table_format).row_kinds:  # no metadata lists the data files: every live one
        files = _live_parquet_files(client, plan)
        sizes = {key: size for key, size, _ in files}
    else:
        files = data_files(plan)
        sizes = {i.key: i.size for i in plan.items if i.status == "present"}
    if plan.tables:
        rows = [t.row_count for t in plan.tables]
        result.expected_rows = sum(r for r in rows if r is not None) if any(r is not None for r in rows) else None
    need_tables = full_read or any(k != "row_count" for k in expect)

    def check(entry: tuple[str, int | None, int | None]) -> tuple[FileCheck, pa.Table | None]:
        key, _, expected_rows = entry
        size = sizes[key]
        try:
            if need_tables:
                body = client.get_object(Bucket=plan.bucket, Key=key)["Body"].read()
                data = read_parquet(body)
                rows = data.num_rows
            else:
                data = None
                rows = pq.ParquetFile(S3RangeFile(client, plan.bucket, key, size)).metadata.num_rows
        except Exception as exc:
            return FileCheck(key, False, expected_rows=expected_rows,
                             problem=f"not readable as Parquet: {type(exc).__name__}: {exc}"), None
        if expected_rows is not None and rows != expected_rows:
            return FileCheck(key, False, rows, expected_rows,
                             f"{rows} rows, the metadata says {expected_rows}"), data
        return FileCheck(key, True, rows, expected_rows), data

    tables: list[pa.Table] = []
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        # Keys that are not present were reported above (restore, damaged, unrecoverable).
        for file_check, data in pool.map(check, [f for f in files if f[0] in sizes]):
            result.files.append(file_check)
            if not file_check.ok:
                result.problems.append(f"{file_check.key}: {file_check.problem}")
            if file_check.rows is not None:
                result.total_rows += file_check.rows
            if data is not None:
                tables.append(data)
    if log is not None:
        log(f"read {len(result.files)} data files, {result.total_rows} rows")
    if result.expected_rows is not None and result.total_rows != result.expected_rows:
        result.problems.append(f"the data files hold {result.total_rows} rows, the snapshot says "
                               f"{result.expected_rows}")
    if expect:
        combined = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
        for name, expected in expect.items():
            actual = result.total_rows if name == "row_count" else aggregate(combined, name)
            ok = _same(expected, actual)
            result.checks[name] = {"expected": expected, "actual": _normalise(actual), "ok": ok}
            if not ok:
                result.problems.append(f"{name}: expected {expected!r}, got {_normalise(actual)!r}")
    return result


def _live_parquet_files(client: Any, plan: Plan) -> list[tuple[str, int | None, int | None]]:
    """Prefix tables: every live ``.parquet`` key under the prefix (from a listing of current objects)."""
    out: list[tuple[str, int | None, int | None]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=plan.bucket, Prefix=plan.prefix):
        out += [(o["Key"], o["Size"], None) for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
    return out


def verify_sql(cursor: Any, sql: str, expect: dict[str, Any] | list[Any] | None) -> VerifyResult:
    """Run ``sql`` on a DB-API cursor and compare the first row with ``expect`` (by column name or position)."""
    cursor.execute(sql)
    row = cursor.fetchone()
    names = [d[0] for d in (cursor.description or [])]
    result = VerifyResult(table=sql, table_format="sql")
    if row is None:
        result.problems.append(f"the query returned no row: {sql}")
        return result
    expected_items: Iterable[tuple[str, Any, Any]]
    if isinstance(expect, dict):
        lowered = {n.lower(): v for n, v in zip(names, row, strict=False)}
        expected_items = []
        for name, value in expect.items():
            if name.lower() not in lowered:
                result.problems.append(f"the query has no column {name!r} (columns: {', '.join(names)})")
                continue
            expected_items.append((name, value, lowered[name.lower()]))
    else:
        expected_items = [(names[i] if i < len(names) else str(i), v, row[i] if i < len(row) else None)
                          for i, v in enumerate(expect or [])]
    for name, value, actual in expected_items:
        ok = _same(value, actual)
        result.checks[name] = {"expected": value, "actual": _normalise(actual), "ok": ok}
        if not ok:
            result.problems.append(f"{name}: expected {value!r}, got {_normalise(actual)!r}")
    return result
