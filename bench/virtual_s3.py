"""A versioned S3 endpoint that serves a VIRTUAL table: millions of entries, none of them stored.

Stock moto keeps every object in memory and lists in O(bucket) per page, so it cannot model a production
table. This server computes every entry from its index instead: key ``i`` of the table, the ``n``-th entry
of that key's history (its version id, size, ETag, LastModified, body) are pure functions of the
parameters. A ListObjectVersions page costs O(page): the start key is found by binary search over the key
index (names are computed, and sorted by construction), and the page is generated from there.

The table, under ``root`` (``t/`` by default), in ascending key order::

    t/_b/<32 hex digits>                     ``flat`` keys (a flat directory, Fuse-like block names)
    t/part=NNN/fNNNNNNN.parquet              ``keys - flat - odd`` keys, ``files_per_part`` per directory
    t/x y+ü&%/NNNN +ñ.parquet                ``odd`` keys (space, '+', unicode, XML and URL specials)

Each key's history is a string, oldest first, of ``v`` (a version holding data) and ``m`` (a delete
marker): ``histories`` cycles over the keys (default ``("vm",)``: one version under one marker), and
``heavy`` overrides single keys (``{7: "v" + "m" * 1500}`` makes listing pages of only delete markers).

Writes go to an in-memory overlay: DeleteObjects/DeleteObject remove delete markers (a data version is
refused with AccessDenied and counted as a violation), CopyObject puts a new version on top.
``check()`` says whether a restore was exact. Signatures are not checked (a local bench server).
botocore must use path-style addressing: ``Config(s3={"addressing_style": "path"})``.

Run alone: ``python -m bench.virtual_s3 --keys 500000 --latency-ms 20`` prints ``PORT <n>``.
Control endpoints: ``GET /__stats`` (requests by operation, JSON), ``GET /__check`` (the restore check,
JSON), ``POST /__reset`` (clears the overlay and the counters).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, overload
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

BUCKET = "bench"
_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_ODD_DIR = "x y+ü&%/"
_OWNER = "<Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>" \
         "<DisplayName>bench</DisplayName></Owner>"


def _h(*parts: int) -> int:
    """A cheap deterministic 64-bit hash of integers."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = ((x ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x


def _text(value: str) -> str:
    """XML text: ``escape`` only when there is something to escape (most keys and version ids have nothing)."""
    return escape(value) if "&" in value or "<" in value or ">" in value else value


def _upper(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: there is none)."""
    chars = list(prefix)
    while chars and chars[-1] == "\U0010ffff":
        chars.pop()
    if not chars:
        return None
    chars[-1] = chr(ord(chars[-1]) + 1)
    return "".join(chars)


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    version_id: str
    is_marker: bool
    size: int
    etag: str
    last_modified: datetime
    source: tuple[int, int] | None = None  # (key index, entry ordinal) whose bytes a data version holds


class _Names(Sequence[str]):
    """The table's key names by index, computed; ascending by construction (so ``bisect`` works)."""

    def __init__(self, table: VirtualTable) -> None:
        self.t = table

    def __len__(self) -> int:
        return self.t.keys

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.t.name(i)


@dataclass
class VirtualTable:
    """The table's parameters; every entry is computed from them. Version ids are unique per key and
    encode the entry's ordinal (``n``, 0 is the oldest) in their first 6 hex digits."""

    keys: int = 1000
    flat: int | None = None  # keys under _b/ (default: a tenth)
    odd: int = 0
    files_per_part: int = 1000
    histories: tuple[str, ...] = ("vm",)
    heavy: dict[int, str] = field(default_factory=dict)
    root: str = "t/"

    def __post_init__(self) -> None:
        if self.flat is None:
            self.flat = self.keys // 10
        self.parted = self.keys - self.flat - self.odd
        if self.parted < 0 or self.flat < 0 or self.odd < 0 or self.odd > 10_000:
            raise ValueError("keys must be at least flat + odd, odd at most 10,000")
        if not self.histories or any(not h or set(h) - {"v", "m"} for h in (*self.histories, *self.heavy.values())):
            raise ValueError("a history is a non-empty string of 'v' (data) and 'm' (delete marker)")
        if max(map(len, (*self.histories, *self.heavy.values()))) >= 1 << 24:
            raise ValueError("a history holds fewer than 16,777,216 entries (its ordinal is in the version id)")
        self._stride = (1 << 128) // max(1, self.flat)
        self._part_width = max(3, len(str(max(0, self.parted - 1) // self.files_per_part)))
        self.names = _Names(self)

    # keys ---------------------------------------------------------------------------------------------
    def name(self, i: int) -> str:
        if not 0 <= i < self.keys:
            raise IndexError(i)
        assert self.flat is not None
        if i < self.flat:
            return f"{self.root}_b/{i * self._stride + _h(i) % self._stride:032x}"
        i -= self.flat
        if i < self.parted:
            part, f = divmod(i, self.files_per_part)
            return f"{self.root}part={part:0{self._part_width}d}/f{f:07d}.parquet"
        return f"{self.root}{_ODD_DIR}{i - self.parted:04d} +ñ.parquet"

    def index(self, key: str) -> int | None:
        i = self._parsed_index(key)
        if i is None:  # not a name of the table's forms: found by binary search (or not at all)
            i = bisect.bisect_left(self.names, key)
        return i if 0 <= i < self.keys and self.name(i) == key else None

    def _parsed_index(self, key: str) -> int | None:
        """The index ``name`` made ``key`` from, read back from the name (O(1); checked by the caller), or None."""
        assert self.flat is not None
        rest = key[len(self.root):] if key.startswith(self.root) else ""
        try:
            if rest.startswith("_b/") and len(rest) == 35:
                return int(rest[3:], 16) // self._stride
            if rest.startswith("part=") and rest.endswith(".parquet"):
                part, _, file = rest[5:-8].partition("/f")
                if int(file) < self.files_per_part:
                    return self.flat + int(part) * self.files_per_part + int(file)
            if rest.startswith(_ODD_DIR) and rest.endswith(" +ñ.parquet"):
                return self.flat + self.parted + int(rest[len(_ODD_DIR):-len(" +ñ.parquet")])
        except ValueError:
            pass
        return None

    def history(self, i: int) -> str:
        return self.heavy.get(i) or self.histories[i % len(self.histories)]

    # entries ------------------------------------------------------------------------------------------
    def version_id(self, i: int, n: int) -> str:
        return f"{n:06x}{_h(i, n, 1):016x}{_h(i, n, 2) & 0xFFFFFFFFFF:010x}"

    def ordinal(self, i: int, version_id: str) -> int | None:
        """The entry ordinal a version id names in key ``i`` (None: not one of its base entries)."""
        try:
            n = int(version_id[:6], 16)
        except ValueError:
            return None
        if len(version_id) == 32 and n < len(self.history(i)) and self.version_id(i, n) == version_id:
            return n
        return None

    def body(self, i: int, n: int) -> bytes:
        size = 64 + _h(i, n, 3) % 448
        seed = f"{i}:{n}|".encode()
        return (seed * (size // len(seed) + 1))[:size]

    def entry(self, i: int, n: int, key: str | None = None) -> Entry:
        is_marker = self.history(i)[n] == "m"
        when = _T0 + timedelta(days=n, seconds=i % 86_400)
        key = key if key is not None else self.name(i)
        if is_marker:
            return Entry(key, self.version_id(i, n), True, 0, "", when)
        body = self.body(i, n)
        return Entry(key, self.version_id(i, n), False, len(body), hashlib.md5(body).hexdigest(), when, (i, n))

    def entry_count(self) -> int:
        cycle = len(self.histories)
        full, rest = divmod(self.keys, cycle)
        total = full * sum(len(h) for h in self.histories) + sum(len(h) for h in self.histories[:rest])
        return total + sum(len(h) - len(self.histories[i % cycle]) for i, h in self.heavy.items() if i < self.keys)

    def deleted_key_count(self) -> int:
        """Keys whose current entry is a delete marker above a data version (what a restore brings back)."""
        def lost(h: str) -> bool:
            return h.endswith("m") and "v" in h
        cycle = len(self.histories)
        full, rest = divmod(self.keys, cycle)
        total = full * sum(map(lost, self.histories)) + sum(map(lost, self.histories[:rest]))
        return total + sum(lost(h) - lost(self.histories[i % cycle]) for i, h in self.heavy.items() if i < self.keys)


class Overlay:
    """What clients changed: removed entries and versions put on top, per key index."""

    def __init__(self, table: VirtualTable) -> None:
        self.table = table
        # Removed entries: a base entry as one int (key index << 24 | ordinal: compact at millions of keys),
        # an entry put on top (copies, new markers) by its version id.
        self.removed: set[int] = set()
        self.removed_added: dict[int, set[str]] = {}
        self.added: dict[int, list[Entry]] = {}  # oldest first
        self.violations: list[str] = []
        self.lock = threading.Lock()
        self._clock = 0

    def entries(self, i: int, after: str | None = None) -> Iterator[Entry]:
        """Key ``i``'s entries, newest first; with ``after``, only those older than that version id (which
        may itself have been removed since: its place in the history is still known)."""
        removed = self.removed_added.get(i, ())
        key = self.table.name(i)
        added = self.added.get(i, [])
        top = len(self.table.history(i)) - 1
        start_added = len(added) - 1
        if after is not None:
            n = self.table.ordinal(i, after)
            if n is not None:
                start_added, top = -1, n - 1
            else:
                start_added = next((a - 1 for a in range(len(added)) if added[a].version_id == after), None)
                if start_added is None:
                    return  # an unknown version id: nothing of this key follows it
        for a in range(start_added, -1, -1):
            if added[a].version_id not in removed:
                yield added[a]
        for n in range(top, -1, -1):
            if (i << 24 | n) in self.removed:
                continue
            yield self.table.entry(i, n, key)

    def find(self, i: int, version_id: str) -> Entry | None:
        n = self.table.ordinal(i, version_id)
        if n is not None:
            return None if (i << 24 | n) in self.removed else self.table.entry(i, n)
        if version_id in self.removed_added.get(i, ()):
            return None
        return next((e for e in self.added.get(i, ()) if e.version_id == version_id), None)

    def current(self, i: int) -> Entry | None:
        return next(self.entries(i), None)

    def delete(self, key: str, version_id: str | None) -> tuple[str, str | None, str]:
        """One DeleteObjects entry: ("deleted", marker?, version id) or ("error", code, message)."""
        return self.delete_many([(key, version_id)])[0]

    def delete_many(self, objects: list[tuple[str, str | None]]) -> list[tuple[str, str | None, str]]:
        """``delete`` of each (key, version id), under one hold of the lock."""
        table = self.table
        found = [(key, version_id, table.index(key)) for key, version_id in objects]
        with self.lock:
            return [self._delete(key, version_id, i) for key, version_id, i in found]

    def _delete(self, key: str, version_id: str | None, i: int | None) -> tuple[str, str | None, str]:
        if i is None:
            return ("deleted", None, version_id or "")  # deleting what is not there succeeds, as on S3
        if not version_id:
            self._clock += 1
            vid = f"ff{self._clock:04x}{_h(i, self._clock, 9):026x}"
            self.added.setdefault(i, []).append(
                Entry(key, vid, True, 0, "", datetime.now(timezone.utc)))
            return ("deleted", "true", vid)
        n = self.table.ordinal(i, version_id)
        if n is not None:  # a base entry: its kind is read from the key's history (no entry is made)
            gone, is_marker = (i << 24 | n) in self.removed, self.table.history(i)[n] == "m"
        else:  # an entry put on top (a copy, a new marker)
            entry = self.find(i, version_id)
            gone, is_marker = entry is None, entry is not None and entry.is_marker
        if gone:
            return ("deleted", None, version_id)
        if not is_marker:
            self.violations.append(f"DeleteObjects asked to delete data version {version_id} of {key!r}")
            return ("error", "AccessDenied", "the bench server refuses to delete a version holding data")
        if n is not None:
            self.removed.add(i << 24 | n)
        else:
            self.removed_added.setdefault(i, set()).add(version_id)
        return ("deleted", "true", version_id)

    def copy(self, key: str, source_key: str, source_version: str | None) -> Entry | str:
        i, j = self.table.index(key), self.table.index(source_key)
        if i is None or j is None:
            return "NoSuchKey"
        with self.lock:
            src = self.find(j, source_version) if source_version else self.current(j)
            if src is None:
                return "NoSuchVersion"
            if src.is_marker:
                return "InvalidRequest"
            if not self._is_lost(i):
                self.violations.append(f"CopyObject over the live object {key!r}")
            self._clock += 1
            vid = f"fe{self._clock:04x}{_h(i, self._clock, 8):026x}"
            entry = Entry(key, vid, False, src.size, src.etag, datetime.now(timezone.utc), src.source)
            self.added.setdefault(i, []).append(entry)
            return entry

    def _is_lost(self, i: int) -> bool:
        current = self.current(i)
        return current is None or current.is_marker

    # the restore check -------------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """Was the restore exact? Every key whose newest data version lay under delete markers is current
        again (its markers removed, or a copy of that version on top); no data version was deleted; nothing
        was written over a live object. O(keys touched); the count of lost keys is computed."""
        table = self.table
        wrong: list[str] = []
        restored = 0
        for i in sorted({code >> 24 for code in self.removed} | set(self.removed_added) | set(self.added)):
            history = table.history(i)
            newest = history.rfind("v")
            lost = history.endswith("m") and newest >= 0
            current = self.current(i)
            if not lost:
                wrong.append(f"{table.name(i)!r} was not lost but was changed")
                continue
            if current is None or current.is_marker or current.source != (i, newest):
                wrong.append(f"{table.name(i)!r}: current entry is not its newest data version")
                continue
            restored += 1
        expected = table.deleted_key_count()
        problems = wrong[:20] + self.violations[:20]
        if restored != expected:
            problems.append(f"{expected - restored} lost keys were not restored")
        return {"exact": not wrong and not self.violations and restored == expected, "lost_keys": expected,
                "restored_keys": restored, "wrong_keys": len(wrong), "violations": len(self.violations),
                "problems": problems}


# listing --------------------------------------------------------------------------------------------------

@dataclass
class Page:
    items: list[Entry | str]  # an entry, or a common prefix (str); with IsLatest for entries
    latest: list[bool]
    truncated: bool
    next_key: str | None
    next_version: str | None


def list_versions(overlay: Overlay, prefix: str = "", key_marker: str = "", version_id_marker: str = "",
                  delimiter: str = "", max_keys: int = 1000) -> Page:
    """One ListObjectVersions page, S3's semantics, in O(page + log keys)."""
    table = overlay.table
    names = table.names
    upper = _upper(prefix) if prefix else None
    hi = bisect.bisect_left(names, upper) if upper is not None else table.keys
    i = bisect.bisect_left(names, prefix) if prefix else 0
    skip_in_first: str | None = None
    if key_marker:
        if version_id_marker:
            k = table.index(key_marker)
            if k is not None and k >= i:
                i, skip_in_first = k, version_id_marker
            else:
                i = max(i, bisect.bisect_right(names, key_marker))
        else:
            i = max(i, bisect.bisect_right(names, key_marker))
            rest = key_marker[len(prefix):] if key_marker.startswith(prefix) else ""
            if delimiter and rest.endswith(delimiter) and rest.find(delimiter) == len(rest) - len(delimiter):
                # The marker is a common prefix a page returned: its keys are not listed again.
                skip = _upper(key_marker)
                i = max(i, bisect.bisect_left(names, skip)) if skip is not None else table.keys
    items: list[Entry | str] = []
    latest: list[bool] = []
    want = max_keys + 1  # one more than the page, to know whether it is truncated
    while i < hi and len(items) < want:
        key = table.name(i)
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[:cut + len(delimiter)]
                items.append(common)
                latest.append(False)
                nxt = _upper(common)
                i = bisect.bisect_left(names, nxt, i + 1, hi) if nxt is not None else hi
                skip_in_first = None
                continue
        current = overlay.current(i) if skip_in_first is not None else None
        first = skip_in_first is None
        for entry in overlay.entries(i, skip_in_first):
            items.append(entry)
            latest.append(first or (current is not None and entry.version_id == current.version_id))
            first = False
            if len(items) >= want:
                break
        skip_in_first = None
        i += 1
    truncated = len(items) > max_keys
    del items[max_keys:], latest[max_keys:]
    next_key = next_version = None
    if truncated and items:
        last = items[-1]
        if isinstance(last, str):
            next_key = last
        else:
            next_key, next_version = last.key, last.version_id
    return Page(items, latest, truncated, next_key, next_version)


def _time(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def page_xml(page: Page, *, bucket: str, prefix: str, key_marker: str, version_id_marker: str, delimiter: str,
             max_keys: int, url: bool) -> bytes:
    last: list[str] = ["", ""]  # the last key and its encoding: a key's entries are consecutive

    def enc(s: str) -> str:
        if s != last[0]:
            last[0], last[1] = s, escape(quote(s, safe="/") if url else s)
        return last[1]

    out = ['<?xml version="1.0" encoding="UTF-8"?>', f'<ListVersionsResult xmlns="{_NS}">',
           f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix><KeyMarker>{enc(key_marker)}</KeyMarker>",
           f"<VersionIdMarker>{escape(version_id_marker)}</VersionIdMarker><MaxKeys>{max_keys}</MaxKeys>"]
    if delimiter:
        out.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if url:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>")
    if page.next_key is not None:
        out.append(f"<NextKeyMarker>{enc(page.next_key)}</NextKeyMarker>")
    if page.next_version is not None:
        out.append(f"<NextVersionIdMarker>{page.next_version}</NextVersionIdMarker>")
    for item, is_latest in zip(page.items, page.latest, strict=True):
        if isinstance(item, str):
            out.append(f"<CommonPrefixes><Prefix>{enc(item)}</Prefix></CommonPrefixes>")
        elif item.is_marker:
            out.append(f"<DeleteMarker><Key>{enc(item.key)}</Key><VersionId>{item.version_id}</VersionId>"
                       f"<IsLatest>{'true' if is_latest else 'false'}</IsLatest>"
                       f"<LastModified>{_time(item.last_modified)}</LastModified>{_OWNER}</DeleteMarker>")
        else:
            out.append(f"<Version><Key>{enc(item.key)}</Key><VersionId>{item.version_id}</VersionId>"
                       f"<IsLatest>{'true' if is_latest else 'false'}</IsLatest>"
                       f"<LastModified>{_time(item.last_modified)}</LastModified><ETag>&quot;{item.etag}&quot;</ETag>"
                       f"<Size>{item.size}</Size>{_OWNER}<StorageClass>STANDARD</StorageClass></Version>")
    out.append("</ListVersionsResult>")
    return "".join(out).encode()


# the HTTP server ------------------------------------------------------------------------------------------

class VirtualS3Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, table: VirtualTable, *, latency_ms: float = 0.0, bucket: str = BUCKET,
                 port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.table = table
        self.bucket = bucket
        self.latency = latency_ms / 1000.0
        self.overlay = Overlay(table)
        self.stats: dict[str, int] = {}
        self.stats_lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, op: str) -> None:
        with self.stats_lock:
            self.stats[op] = self.stats.get(op, 0) + 1

    def reset(self) -> None:
        self.overlay = Overlay(self.table)
        with self.stats_lock:
            self.stats = {}

    def start(self) -> VirtualS3Server:
        self.thread = threading.Thread(target=self.serve_forever, name="virtual-s3", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def client(self, **config: Any) -> Any:
        """A boto3 client for this server (path-style addressing, any credentials)."""
        import boto3
        from botocore.config import Config

        cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                     max_pool_connections=64, **config)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="bench",
                            aws_secret_access_key="bench", config=cfg)


class _Handler(BaseHTTPRequestHandler):
    server: VirtualS3Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass

    # plumbing ----------------------------------------------------------------------------------------
    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               content_type: str = "application/xml", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "bench")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and not head and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{escape(message)}</Message><RequestId>bench</RequestId></Error>").encode()
        self._reply(status, body, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _route(self) -> tuple[str, str, dict[str, str]]:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = unquote(parts.path)
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket, key, query

    def _dispatch(self) -> None:
        bucket, key, query = self._route()
        if bucket.startswith("__"):
            self._control(bucket)
            return
        body = self._body() if self.command in ("POST", "PUT") else b""
        op = self._operation(key, query)
        self.server.count(op)
        if self.server.latency:
            time.sleep(self.server.latency)
        if bucket != self.server.bucket:
            self._error(404, "NoSuchBucket", f"the bench server has only bucket {self.server.bucket!r}")
            return
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            self._error(501, "NotImplemented", f"{op} is not implemented by the bench server")
            return
        handler(key, query, body)

    def _operation(self, key: str, query: dict[str, str]) -> str:
        m = self.command
        if not key:
            for name, op in (("versions", "ListObjectVersions"), ("versioning", "GetBucketVersioning"),
                             ("lifecycle", "GetBucketLifecycleConfiguration"), ("delete", "DeleteObjects"),
                             ("object-lock", "GetObjectLockConfiguration"), ("uploads", "ListMultipartUploads"),
                             ("location", "GetBucketLocation")):
                if name in query:
                    return op if m in ("GET", "POST") else f"{m}Bucket?{name}"
            return {"HEAD": "HeadBucket", "GET": "ListObjects"}.get(m, f"{m}Bucket")
        if m == "PUT":
            return "CopyObject" if "x-amz-copy-source" in self.headers else "PutObject"
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(m, f"{m}Object")

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _control(self, name: str) -> None:
        if name == "__stats":
            with self.server.stats_lock:
                data: dict[str, Any] = dict(self.server.stats)
        elif name == "__check":
            data = self.server.overlay.check()
        elif name == "__reset":
            self.server.reset()
            data = {"reset": True}
        elif name == "__table":
            t = self.server.table
            data = {"keys": t.keys, "entries": t.entry_count(), "lost_keys": t.deleted_key_count(),
                    "root": t.root, "bucket": self.server.bucket}
        else:
            self._error(404, "NoSuchControl", name)
            return
        self._reply(200, json.dumps(data).encode(), content_type="application/json")

    # bucket operations -------------------------------------------------------------------------------
    def op_HeadBucket(self, key: str, query: dict[str, str], body: bytes) -> None:
        self._reply(200)

    def op_GetBucketVersioning(self, key: str, query: dict[str, str], body: bytes) -> None:
        self._reply(200, f'<?xml version="1.0" encoding="UTF-8"?><VersioningConfiguration xmlns="{_NS}">'
                         "<Status>Enabled</Status></VersioningConfiguration>".encode())

    def op_GetBucketLocation(self, key: str, query: dict[str, str], body: bytes) -> None:
        self._reply(200, f'<?xml version="1.0" encoding="UTF-8"?><LocationConstraint xmlns="{_NS}"/>'.encode())

    def op_GetBucketLifecycleConfiguration(self, key: str, query: dict[str, str], body: bytes) -> None:
        self._error(404, "NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist")

    def op_GetObjectLockConfiguration(self, key: str, query: dict[str, str], body: bytes) -> None:
        self._error(404, "ObjectLockConfigurationNotFoundError", "Object Lock configuration does not exist")

    def op_ListMultipartUploads(self, key: str, query: dict[str, str], body: bytes) -> None:
        self._reply(200, f'<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult xmlns="{_NS}">'
                         f"<Bucket>{self.server.bucket}</Bucket><IsTruncated>false</IsTruncated>"
                         "</ListMultipartUploadsResult>".encode())

    def op_ListObjectVersions(self, key: str, query: dict[str, str], body: bytes) -> None:
        try:
            max_keys = max(0, min(1000, int(query.get("max-keys") or 1000)))
        except ValueError:
            self._error(400, "InvalidArgument", "max-keys must be an integer")
            return
        args = {"prefix": query.get("prefix", ""), "key_marker": query.get("key-marker", ""),
                "version_id_marker": query.get("version-id-marker", ""), "delimiter": query.get("delimiter", "")}
        page = list_versions(self.server.overlay, max_keys=max_keys, **args)
        self._reply(200, page_xml(page, bucket=self.server.bucket, max_keys=max_keys,
                                  url=query.get("encoding-type") == "url", **args))

    def op_DeleteObjects(self, key: str, query: dict[str, str], body: bytes) -> None:
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            self._error(400, "MalformedXML", "the DeleteObjects body is not XML")
            return
        quiet = False
        objects: list[tuple[str, str | None]] = []
        for child in root:  # <Object> and <Quiet>, namespaced or not
            name = child.tag.rpartition("}")[2]
            if name == "Quiet":
                quiet = (child.text or "").lower() == "true"
            elif name == "Object":
                fields = {field.tag.rpartition("}")[2]: field.text or "" for field in child}
                objects.append((fields.get("Key", ""), fields.get("VersionId")))
        out = ['<?xml version="1.0" encoding="UTF-8"?>', f'<DeleteResult xmlns="{_NS}">']
        for (k, vid), result in zip(objects, self.server.overlay.delete_many(objects), strict=True):
            if result[0] == "deleted":
                if not quiet:
                    marker = "<DeleteMarker>true</DeleteMarker>" if result[1] else ""
                    version = f"<VersionId>{_text(vid)}</VersionId>" if vid else ""
                    created = f"<DeleteMarkerVersionId>{result[2]}</DeleteMarkerVersionId>" if not vid else ""
                    out.append(f"<Deleted><Key>{_text(k)}</Key>{version}{marker}{created}</Deleted>")
            else:
                out.append(f"<Error><Key>{_text(k)}</Key><VersionId>{_text(vid or '')}</VersionId>"
                           f"<Code>{result[1]}</Code><Message>{escape(result[2])}</Message></Error>")
        out.append("</DeleteResult>")
        self._reply(200, "".join(out).encode())

    # object operations -------------------------------------------------------------------------------
    def _object(self, key: str, query: dict[str, str]) -> tuple[Entry, int] | None:
        table, overlay = self.server.table, self.server.overlay
        i = table.index(key)
        vid = query.get("versionId")
        entry = None
        if i is not None:
            entry = overlay.find(i, vid) if vid else overlay.current(i)
        if entry is None:
            if vid:
                self._error(404, "NoSuchVersion", "The specified version does not exist.")
            else:
                self._error(404, "NoSuchKey", "The specified key does not exist.")
            return None
        assert i is not None
        if entry.is_marker:
            headers = {"x-amz-delete-marker": "true", "x-amz-version-id": entry.version_id}
            if vid:
                self._error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.",
                            headers)
            else:
                self._error(404, "NoSuchKey", "The specified key does not exist.", headers)
            return None
        return entry, i

    def _object_headers(self, entry: Entry) -> dict[str, str]:
        return {"ETag": f'"{entry.etag}"', "Last-Modified": format_datetime(entry.last_modified, usegmt=True),
                "x-amz-version-id": entry.version_id, "Accept-Ranges": "bytes"}

    def op_HeadObject(self, key: str, query: dict[str, str], body: bytes) -> None:
        found = self._object(key, query)
        if found is None:
            return
        entry, _ = found
        self.send_response(200)
        for name, value in self._object_headers(entry).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(entry.size))
        self.end_headers()

    def op_GetObject(self, key: str, query: dict[str, str], body: bytes) -> None:
        found = self._object(key, query)
        if found is None:
            return
        entry, _ = found
        assert entry.source is not None
        data = self.server.table.body(*entry.source)
        headers = self._object_headers(entry)
        status = 200
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            if first:
                start, stop = int(first), min(len(data), int(last) + 1 if last else len(data))
            else:
                start, stop = max(0, len(data) - int(last)), len(data)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            data, status = data[start:stop], 206
        self._reply(status, data, headers, content_type="application/octet-stream")

    def op_DeleteObject(self, key: str, query: dict[str, str], body: bytes) -> None:
        result = self.server.overlay.delete(key, query.get("versionId"))
        if result[0] == "error":
            self._error(403, result[1], result[2])
            return
        headers = {"x-amz-version-id": result[2]} if result[2] else {}
        if result[1]:
            headers["x-amz-delete-marker"] = "true"
        self._reply(204, b"", headers)

    def op_CopyObject(self, key: str, query: dict[str, str], body: bytes) -> None:
        source = urlsplit(self.headers["x-amz-copy-source"])
        src_path = unquote(source.path).lstrip("/")
        src_bucket, _, src_key = src_path.partition("/")
        src_version = {k: v[-1] for k, v in parse_qs(source.query).items()}.get("versionId")
        if src_bucket != self.server.bucket:
            self._error(404, "NoSuchBucket", f"the bench server has only bucket {self.server.bucket!r}")
            return
        result = self.server.overlay.copy(key, src_key, src_version)
        if isinstance(result, str):
            self._error(404 if result.startswith("NoSuch") else 400, result, f"cannot copy from {src_key!r}")
            return
        headers = {"x-amz-version-id": result.version_id}
        if src_version:
            headers["x-amz-copy-source-version-id"] = src_version
        self._reply(200, f'<?xml version="1.0" encoding="UTF-8"?><CopyObjectResult xmlns="{_NS}">'
                         f"<LastModified>{_time(result.last_modified)}</LastModified>"
                         f"<ETag>&quot;{result.etag}&quot;</ETag></CopyObjectResult>".encode(), headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--flat", type=int, default=None, help="keys under _b/ (default: a tenth)")
    parser.add_argument("--odd", type=int, default=0, help="keys with spaces, '+', unicode in their names")
    parser.add_argument("--files-per-part", type=int, default=1000)
    parser.add_argument("--history", action="append", default=None,
                        help="a key history, oldest first, of v (data) and m (marker); repeat to cycle (default vm)")
    parser.add_argument("--heavy", action="append", default=[], metavar="INDEX=HISTORY",
                        help="one key's own history, e.g. 7=v+m*1500 (HISTORY may use 'x*N' repeats joined by +)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bucket", default=BUCKET)
    args = parser.parse_args(argv)
    heavy = {}
    for spec in args.heavy:
        index, _, text = spec.partition("=")
        heavy[int(index)] = "".join(p.split("*")[0] * int(p.split("*")[1]) if "*" in p else p for p in text.split("+"))
    table = VirtualTable(keys=args.keys, flat=args.flat, odd=args.odd, files_per_part=args.files_per_part,
                         histories=tuple(args.history or ("vm",)), heavy=heavy)
    server = VirtualS3Server(table, latency_ms=args.latency_ms, bucket=args.bucket, port=args.port)
    print(f"PORT {server.port}", flush=True)
    print(f"table s3://{args.bucket}/{table.root}: {table.keys:,} keys, {table.entry_count():,} entries, "
          f"{table.deleted_key_count():,} lost", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
