"""Parallel listing: the prefix's key space cut into ranges listed at once, with the result of one sequential walk.

ListObjectVersions has no end key, only a start (``KeyMarker``). A range is ``(after, end]``: its first request
starts at ``KeyMarker=after``, and it stops at the first page that shows a key past ``end``, dropping the
entries beyond (at most one page is read twice). Ranges meet exactly at existing keys, so each key and all its
entries, however many pages they straddle, belong to one range, and the ranges concatenated in key order hold
exactly the entries of a sequential walk.

Where to cut: a probe (``KeyMarker=<guess>``, ``MaxKeys=1``) returns an existing key at or after the guess,
which becomes a boundary. The first guesses come from the first pages' keys, spread evenly over the names of the
folder they end in: two characters of the alphabet the names vary in (hex names under Fuse's ``_b/`` give
``_b/08``, ``_b/10`` ... ``_b/f8``: ranges of one size). When a worker would be idle, a running range is cut
again halfway between where it is and where it ends, counted in the names' alphabet (:func:`middle`); that is
also how sibling folders past the first one are cut.

Servers differ on ``KeyMarker`` alone: AWS lists keys after it, and moto (5.x) also lists the marker key and
drops the first entry at or after it. So the first page of a range drops entries of keys ≤ ``after``
(``after`` is always an existing key: moto's dropped entry is then one of its own), and a probe's answer is
only used as a boundary, never as data. (On moto only, a key whose every version is permanently deleted
between the probe that found it and its range's first request would make moto drop the next key's newest
entry instead: moto is a test server, and a scan never deletes.)

The coordinator (the calling thread) keeps all the state and parses every page; the workers only send
requests, so the columns are all made by one thread.
"""

from __future__ import annotations

import concurrent.futures as futures
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airflow_fuse.listing import (
    MAX_PAGES,
    Chunk,
    ChunkGroups,
    Page,
    _continuation,
    compact,
    fetch_page,
    list_page,
    page_of,
)

SEQUENTIAL_PAGES = 8  # pages listed one after another before the key space is cut into ranges
# Guesses probed at once on the first cut (a multiple of the concurrency).
_GUESSES_PER_WORKER = 2
# Characters a guess may end with when nothing better is known: printable ASCII.
_LOW, _HIGH = 0x20, 0x7F


@dataclass
class _Range:
    after: str | None  # exclusive start: None from the start of the prefix
    end: str | None  # inclusive end: None to the end of the prefix
    chunks: ChunkGroups = field(default_factory=ChunkGroups)
    orders: set[str] = field(default_factory=set)
    kept: str | None = None  # the greatest key listed so far (its entries may go on in the next page)
    markers: tuple[str, str | None] | None = None  # where the next page starts; None before the first
    hint: str | None = None  # a probe found nothing in (hint, end]: halve below it
    done: bool = False
    busy: bool = False
    probing: bool = False
    pages: int = 0


def between(low: str, high: str) -> str | None:
    """A string strictly between ``low`` and ``high`` (code point order, which is S3's UTF-8 byte order),
    about halfway in key space, or None when none is easy to make (characters below space)."""
    if not low < high:
        return None
    i = 0
    while i < len(low) and low[i] == high[i]:
        i += 1
    a = ord(low[i]) if i < len(low) else _LOW - 1
    b = ord(high[i])
    if b - a >= 2:
        mid = (a + b) // 2
        if 0xD800 <= mid <= 0xDFFF:  # not a character: surrogates
            mid = 0xE000 if 0xE000 < b else 0xD7FF
            if not a < mid < b:
                return None
        if mid < _LOW:
            return None
        return high[:i] + chr(mid)
    if a < _LOW:
        return None
    # high[i] is the next character after low[i]: keep low[i] and go above the rest of low.
    rest = low[i + 1:]
    top = chr(max(_HIGH, ord(rest[0]) + 2) if rest else _HIGH)
    tail = between(rest, top) if rest else chr((_LOW + _HIGH) // 2)
    return None if tail is None else low[: i + 1] + tail


def _shared(keys: list[str], prefix: str) -> int:
    """How many characters one page's keys (ascending) all begin with (at least the prefix's)."""
    shared = len(prefix)
    first, last = keys[0], keys[-1]
    while shared < min(len(first), len(last)) and first[shared] == last[shared]:
        shared += 1
    return shared


def _guesses(keys: list[str], prefix: str, limit: int) -> list[str]:
    """Guesses after the last of ``keys`` (one page's, ascending), spread evenly over the names of the folder
    the page ends in: two characters of the alphabet the names use, after the folder (hex names under Fuse's
    ``_b/`` give ``_b/08``, ``_b/10``, ... ``_b/f8`` for 32 guesses). What lies past the folder (sibling
    folders) is cut later, while the ranges are listed."""
    last = keys[-1]
    shared = _shared(keys, prefix)
    folder = last[: max(len(prefix), last.rfind("/", 0, shared) + 1)]
    alphabet = name_alphabet(keys, prefix)
    if len(alphabet) < 2:
        alphabet = "".join(sorted({c for key in keys for c in key[len(prefix):] if ord(c) >= _LOW}))
    grid = [g for g in (folder + a + b for a in alphabet for b in alphabet) if g > last]
    if len(grid) <= limit:
        return grid
    return sorted({grid[(i * len(grid)) // limit] for i in range(limit)})


def name_alphabet(keys: list[str], prefix: str) -> str:
    """The characters names vary in: those of the first few positions where one page's keys (ascending) part."""
    shared = _shared(keys, prefix)
    return "".join(sorted({c for key in keys for c in key[shared:shared + 4] if ord(c) >= _LOW}))


def middle(low: str, high: str, alphabet: str) -> str | None:
    """A string strictly between ``low`` and ``high``, halfway among the names spelt with ``alphabet`` (hex names
    are cut at hex digits, not at the code points between them); :func:`between` when that does not apply."""
    if not low < high:
        return None
    i = 0
    while i < len(low) and low[i] == high[i]:
        i += 1
    if len(alphabet) >= 2 and i < len(low):
        inside = [c for c in alphabet if low[i] < c < high[i]]
        if inside:
            return high[:i] + inside[len(inside) // 2]
        if i + 1 < len(low):  # adjacent characters: keep low's and cut above the rest of it
            above = [c for c in alphabet if c > low[i + 1]]
            if above:
                return low[: i + 1] + above[len(above) // 2]
    return between(low, high)


def in_range(table: pa.Table, after: str | None, end: str | None) -> tuple[pa.Table, bool]:
    """The rows of a listing page whose key lies in ``(after, end]`` (``None``: open), and whether the page
    showed a key past ``end`` (the range's listing is then done)."""
    keys = table.column("key")
    inside = None if after is None else pc.greater(keys, after)
    past = False
    if end is not None and len(keys):
        below = pc.less_equal(keys, end)
        past = not pc.all(below).as_py()
        inside = below if inside is None else pc.and_(inside, below)
    if inside is not None and not pc.all(inside).as_py():
        table = table.filter(inside)
    return table, past


class _Lister:
    def __init__(self, client: Any, bucket: str, prefix: str, page_size: int, concurrency: int,
                 on_page: Callable[[int], None]) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.page_size = page_size
        self.concurrency = concurrency
        self.on_page = on_page
        self.ranges: list[_Range] = []
        self.probes = 0
        self.pages = 0
        self.alphabet = ""

    # requests (worker threads) ------------------------------------------------------------------------
    def _fetch(self, markers: tuple[str, str | None] | None) -> bytes | dict:
        """A page's raw response (worker thread). Parsing is left to the coordinator: all the columns are then
        made by one thread, whose allocator reuses what the previous page freed."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": self.page_size}
        if markers is not None:
            kwargs["KeyMarker"] = markers[0]
            if markers[1]:
                kwargs["VersionIdMarker"] = markers[1]
        return fetch_page(self.client, **kwargs)

    def _page(self, fetched: bytes | dict) -> Page:
        page = page_of(fetched)
        self.on_page(page.entries.num_rows)
        return page

    def _may_probe(self) -> bool:
        """Probes are bounded: a few per worker, then one per two pages listed."""
        return self.probes < self.concurrency * 2 + self.pages // 2

    def _probe(self, guess: str) -> str | None:
        page = list_page(self.client, Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1, KeyMarker=guess)
        self.on_page(0)
        keys = page.entries.column("key")
        return keys[0].as_py() if len(keys) else None

    # state (coordinator thread only) --------------------------------------------------------------------
    def _take(self, r: _Range, page: Page) -> None:
        """Keep the part of ``page`` inside ``r`` and move ``r`` on."""
        r.pages += 1
        self.pages += 1
        if r.pages > MAX_PAGES:
            raise RuntimeError(f"ListObjectVersions on bucket {self.bucket!r} exceeded {MAX_PAGES} pages")
        table, past = in_range(page.entries, r.after, r.end)
        if table.num_rows:
            chunk = compact(table)
            r.chunks.append(chunk)
            r.orders.add(page.order)
            r.kept = chunk.keys[-1].as_py()
        if past or not page.truncated:
            r.done = True
            return
        markers = _continuation(page)
        if not markers[0] or markers == r.markers:
            raise RuntimeError(
                f"ListObjectVersions on bucket {self.bucket!r} did not advance past key {markers[0]!r}; "
                "the server returned a truncated page without a usable continuation marker"
            )
        r.markers = markers

    def _split(self, r: _Range, key: str) -> _Range | None:
        """Cut ``r`` after ``key`` (an existing key); the new range takes what lies above it."""
        if r.done or (r.kept is not None and key <= r.kept) or (r.after is not None and key <= r.after):
            return None
        if r.end is not None and key >= r.end:
            return None
        new = _Range(after=key, end=r.end, markers=(key, None), hint=r.hint)
        r.end, r.hint = key, None
        self.ranges.append(new)
        return new

    def _guess_for(self, r: _Range) -> str | None:
        low = r.kept or r.after
        if low is None:
            return None
        high = r.hint or r.end or (self.prefix + chr(_HIGH))
        return middle(low, high, self.alphabet)

    # the walk ---------------------------------------------------------------------------------------
    def run(self) -> tuple[list[Chunk], set[str], int]:
        last = self._page(self._fetch(None))
        whole = _Range(after=None, end=None)
        self.ranges.append(whole)
        self._take(whole, last)
        # A small table is listed page after page: probes and ranges would only add requests and time. Past
        # SEQUENTIAL_PAGES pages the rest of the key space is cut into ranges.
        while not whole.done and whole.pages < SEQUENTIAL_PAGES:
            last = self._page(self._fetch(whole.markers))
            self._take(whole, last)
        if whole.done:
            return whole.chunks.done(), whole.orders, 1
        with futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="fuse-list") as pool:
            self._first_cut(pool, whole, last)
            self._walk(pool)
        self.ranges.sort(key=lambda r: (r.after is not None, r.after or ""))
        chunks = [c for r in self.ranges for c in r.chunks.done()]
        orders = {o for r in self.ranges for o in r.orders}
        return chunks, orders, len(self.ranges)

    def _first_cut(self, pool: futures.ThreadPoolExecutor, whole: _Range, first: Page) -> None:
        keys = sorted(pc.unique(first.entries.column("key")).to_pylist())  # moto: versions, then markers
        self.alphabet = name_alphabet(keys, self.prefix)
        guesses = _guesses(keys, self.prefix, self.concurrency * _GUESSES_PER_WORKER)
        found = {k for k in pool.map(self._probe, guesses) if k is not None}
        for key in sorted(found, reverse=True):  # from the top: each cut takes the upper part of the first range
            self._split(whole, key)

    def _walk(self, pool: futures.ThreadPoolExecutor) -> None:
        pending: dict[futures.Future, tuple[str, _Range, str | None]] = {}
        try:
            while True:
                for r in self.ranges:
                    if len(pending) >= self.concurrency:
                        break
                    if not r.done and not r.busy:
                        r.busy = True
                        pending[pool.submit(self._fetch, r.markers)] = ("page", r, None)
                while len(pending) < self.concurrency and self._may_probe():
                    r = self._widest()
                    guess = self._guess_for(r) if r is not None else None
                    if r is None or guess is None:
                        break
                    r.probing = True
                    self.probes += 1
                    pending[pool.submit(self._probe, guess)] = ("probe", r, guess)
                if not pending:
                    return
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    what, r, guess = pending.pop(future)
                    if what == "page":
                        r.busy = False
                        self._take(r, self._page(future.result()))
                    else:
                        r.probing = False
                        key = future.result()
                        if key is None or (r.end is not None and key >= r.end):
                            if guess is not None and (r.hint is None or guess < r.hint):
                                r.hint = guess  # nothing between the guess and the end: look lower
                        else:
                            self._split(r, key)
        finally:
            for future in pending:
                future.cancel()

    def _widest(self) -> _Range | None:
        """The running range with the most key space left (the shortest common prefix of where it is and
        where it ends), not already being probed."""
        best, best_span = None, None
        for r in self.ranges:
            if r.done or r.probing or not r.busy:
                continue
            low = r.kept or r.after
            if low is None:
                continue
            high = r.hint or r.end or (self.prefix + chr(_HIGH))
            shared = 0
            while shared < min(len(low), len(high)) and low[shared] == high[shared]:
                shared += 1
            span = (shared, -(ord(high[shared]) - ord(low[shared])) if shared < min(len(low), len(high)) else 0)
            if best_span is None or span < best_span:
                best, best_span = r, span
        return best


def list_ranges(client: Any, bucket: str, prefix: str, *, page_size: int, concurrency: int,
                on_page: Callable[[int], None]) -> tuple[list[Chunk], set[str], int]:
    """Every entry under ``prefix``, as chunks in key order (not yet sorted within keys), the orders the
    pages showed (see :func:`airflow_fuse.listing.markers_first_on_ties`) and how many ranges were listed."""
    return _Lister(client, bucket, prefix, page_size, concurrency, on_page).run()
