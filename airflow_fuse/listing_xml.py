"""ListObjectVersions response bodies parsed straight into Arrow columns (no dict or object per entry).

First, in numpy arrays (no Python work per entry): every '<' of the entries is a tag; each entry's tags are
checked whole against its kind's first entry, and the fields' text is cut out between their tags
(:func:`_parse_tags`, about 1 µs of client CPU per entry). Otherwise a page's entries are matched by one
regular expression built from its first ``<Version>`` and first ``<DeleteMarker>`` (servers write every entry
of a kind alike), the fields captured as bytes and turned into Arrow columns with a handful of Arrow calls per
page; a page whose entries are not all alike is scanned one field at a time, and anything else (CDATA, a body
cut short) goes to ElementTree. Values follow botocore's rules: XML text as ElementTree gives it (entities
resolved, line ends normalised), keys URL-decoded (``unquote_plus``) when the response says
``EncodingType=url``, ETags without their quotes, a missing VersionId as ``null``. The tests compare every path
with botocore's own parse of pages captured from moto and Ceph.
"""

from __future__ import annotations

import functools
import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("version_id", pa.string()),
        ("is_delete_marker", pa.bool_()),
        ("is_latest", pa.bool_()),
        ("size", pa.int64()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
        ("etag", pa.string()),
    ]
)



@dataclass
class Page:
    """One parsed ListObjectVersions response. ``entries`` are in the XML's order (not yet sorted)."""

    entries: pa.Table
    truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None
    # Which ties the page can break: "interleaved" (a marker is listed before a version: the server lists in
    # true order), "versions-first" (versions and markers, all versions first: moto), or "" (one kind only).
    order: str = ""


# parsing ------------------------------------------------------------------------------------------------

_KIND_RE = re.compile(rb"<(Version|DeleteMarker)>")
_FIELD_RES = {name: re.compile(b"<" + name + rb">([^<]*)</" + name + b">")
              for name in (b"Key", b"VersionId", b"IsLatest", b"LastModified", b"ETag", b"Size")}
_TOP_RES = {name: re.compile(b"<" + name + rb">([^<]*)</" + name + b">")
            for name in (b"IsTruncated", b"NextKeyMarker", b"NextVersionIdMarker", b"EncodingType")}
_ROOT = b"ListVersionsResult"
_SEP = "\n"


_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&"))


def _text(raw: bytes) -> str:
    """XML text as ElementTree gives it: line ends normalised, entities resolved."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    text = raw.decode("utf-8")
    if "&" not in text:
        return text
    if "&#" in text:
        return html.unescape(text)
    for entity, char in _ENTITIES:  # &amp; last: "&amp;lt;" is "&lt;"
        text = text.replace(entity, char)
    return text


def _texts(raws: list[bytes], *, url_decode: bool = False) -> list[str]:
    """Many text nodes at once: joined, decoded and unescaped in one go, split again; one by one if a value
    holds the separator."""
    joined = _text(b"\n".join(raws))
    if url_decode and ("%" in joined or "+" in joined):
        joined = unquote_plus(joined)
    values = joined.split(_SEP) if raws else []
    if len(values) != len(raws):
        values = [_text(raw) for raw in raws]
        if url_decode:
            values = [unquote_plus(v) for v in values]
    return values


def _timestamps(values: list[str] | pa.Array) -> pa.Array:
    text = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    try:
        return text.cast(SCHEMA.field("last_modified").type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        from airflow_fuse.s3 import parse_timestamp

        return pa.array([parse_timestamp(v) for v in text.to_pylist()], SCHEMA.field("last_modified").type)


def _order_of(is_marker: pa.BooleanArray) -> str:
    n_markers = pc.sum(is_marker.cast(pa.int64())).as_py() or 0
    if n_markers == 0 or n_markers == len(is_marker):
        return ""
    return "interleaved" if pc.any(is_marker.slice(0, len(is_marker) - n_markers)).as_py() else "versions-first"


def _build(is_marker: pa.BooleanArray, keys: list[str], version_ids: list[str], latest: pa.BooleanArray,
           modified: pa.Array, etags: list[str], sizes: list[int]) -> pa.Table:
    """Columns of a page from per-entry values; ``etags``/``sizes`` hold the versions' values only."""
    version_rows = pc.invert(is_marker)
    # Markers have no ETag or Size: spread the versions' values over the version rows, '' and 0 elsewhere.
    nth = pc.subtract(pc.cumulative_sum(version_rows.cast(pa.int64())), 1)
    take = pc.if_else(version_rows, nth, len(etags))
    etag_column = pc.utf8_trim(pa.array([*etags, ""], pa.string()), '"').take(take)
    size_column = pa.array([*sizes, 0], pa.int64()).take(take)
    return pa.Table.from_arrays(
        [pa.array(keys, pa.string()), pa.array(version_ids, pa.string()), is_marker, latest, size_column, modified,
         etag_column],
        schema=SCHEMA,
    )


def _top(body: bytes, name: bytes) -> str | None:
    """A top-level element's text, looked for outside the entries (before the first, after the last)."""
    first = _KIND_RE.search(body)
    if first is None:
        found = _TOP_RES[name].search(body)
    else:
        found = _TOP_RES[name].search(body, 0, first.start())
        if found is None:
            last = max(body.rfind(b"</Version>"), body.rfind(b"</DeleteMarker>"))
            found = _TOP_RES[name].search(body, max(last, first.start()))
    return None if found is None else _text(found.group(1))


_FIELDS = (b"Key", b"VersionId", b"IsLatest", b"LastModified", b"ETag", b"Size")
_CHILD_RE = re.compile(rb"\s*<([A-Za-z][A-Za-z0-9]*)(/?)>")


def _layout(content: bytes, depth: int = 0) -> list[tuple[bytes, Any]] | None:
    """An element's children as (tag, None for text or the child's own layout); None if not plain XML."""
    children: list[tuple[bytes, Any]] = []
    pos = 0
    while content[pos:].strip():
        child = _CHILD_RE.match(content, pos)
        if child is None or child.group(2):
            return None
        tag = child.group(1)
        close = content.find(b"</" + tag + b">", child.end())
        if close < 0 or any(tag == t for t, _ in children):
            return None
        inner = content[child.end():close]
        if b"<" in inner:
            if depth >= 2 or tag in _FIELDS:
                return None
            nested = _layout(inner, depth + 1)
            if nested is None:
                return None
            children.append((tag, tuple(nested)))
        else:
            children.append((tag, None))
        pos = close + len(tag) + 3
    return children


def _pattern(children: Any, capture: bool) -> bytes:
    parts = []
    for tag, nested in children:
        if nested is not None:
            value = _pattern(nested, False)
        else:
            value = rb"([^<]*)" if capture and tag in _FIELDS else rb"[^<]*"
        parts.append(rb"\s*<" + tag + b">" + value + rb"\s*</" + tag + b">")
    return b"".join(parts)


def _template(body: bytes, kind: bytes) -> tuple[bytes, tuple[bytes, ...]] | None:
    """A regular expression for every ``kind`` element laid out like the page's first one (servers write all
    entries of a kind alike), capturing the fields; None when that element is not plain."""
    start = body.find(b"<" + kind + b">")
    end = body.find(b"</" + kind + b">", start)
    if start < 0 or end < 0:
        return None
    layout = _layout(body[start + len(kind) + 2: end])
    if layout is None:
        return None
    tags = [tag for tag, nested in layout if nested is None]
    if any(tag not in tags for tag in (_FIELDS[:4] if kind == b"DeleteMarker" else _FIELDS)):
        return None
    fields = tuple(tag for tag in tags if tag in _FIELDS)
    return b"<" + kind + b">" + _pattern(layout, True) + rb"\s*</" + kind + b">", fields


@functools.lru_cache(maxsize=32)
def _compiled(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(pattern)


def _parse_template(body: bytes) -> Page | None:
    """Versions and markers each matched whole, in one scan, by a regular expression made from the page's
    first entry of each kind."""
    alternatives, layouts = [], []
    first, last = len(body), -1
    for kind in (b"Version", b"DeleteMarker"):
        start = body.find(b"<" + kind + b">")
        if start >= 0:
            found = _template(body, kind)
            if found is None:
                return None
            alternatives.append(found[0])
            layouts.append((kind, found[1]))
            first, last = min(first, start), max(last, body.rfind(b"</" + kind + b">") + len(kind) + 3)
    if not alternatives:
        if b"<![CDATA[" in body:
            return None
        return _assemble(body, pa.array([], pa.bool_()), {name: [] for name in _FIELDS})
    tail = body[last:]
    if b"<![CDATA[" in body[:first] or b"<![CDATA[" in tail or b"<Version>" in tail or b"<DeleteMarker>" in tail:
        return None
    # Every entry has one Key, and nothing else does: as many matches as </Key> means none was skipped.
    # Servers write no whitespace between elements: try that (faster) first.
    entries = body.count(b"</Key>")
    pattern = b"|".join(alternatives)
    matches = _compiled(pattern.replace(rb"\s*", b"")).findall(body)
    if len(matches) != entries:
        matches = _compiled(pattern).findall(body)
        if len(matches) != entries or not matches:
            return None
    values = list(zip(*matches, strict=True))
    # One column per (kind, field); a row holds '' in the other kind's columns. Keys are never empty.
    by_kind: dict[bytes, dict[bytes, pa.Array]] = {}
    at = 0
    for kind, fields in layouts:
        by_kind[kind] = {name: pa.array(values[at + i], pa.binary()) for i, name in enumerate(fields)}
        at += len(fields)
    if len(layouts) == 2:
        is_marker = pc.equal(pc.binary_length(by_kind[b"Version"][b"Key"]), 0)
        merged = {name: pc.if_else(is_marker, by_kind[b"DeleteMarker"][name], by_kind[b"Version"][name])
                  for name in _FIELDS[:4]}
        keep = pc.invert(is_marker)
        merged.update({name: by_kind[b"Version"][name].filter(keep) for name in _FIELDS[4:]})
    else:
        kind = layouts[0][0]
        is_marker = pa.array([kind == b"DeleteMarker"] * len(matches), pa.bool_())
        merged = dict(by_kind[kind])
        for name in _FIELDS[4:]:
            merged.setdefault(name, pa.array([], pa.binary()))
    return _assemble(body, is_marker, merged)


def _strings(raw: Any, *, url_decode: bool = False) -> pa.Array:
    """XML text nodes (binary) as strings; Python only for values holding an entity, a CR or, with
    ``url_decode``, a '%' or '+'."""
    raw = raw if isinstance(raw, pa.Array) else pa.array(raw, pa.binary())
    try:
        text = raw.cast(pa.string())
    except pa.ArrowInvalid:
        raise ValueError("not UTF-8") from None
    data = raw.buffers()[2]
    if data is None:
        return text
    values = data.to_pybytes()  # every value's bytes, one after the other
    entities = b"&" in values  # single bytes first: memchr; longer patterns are searched much slower
    if b"\r" in values or (entities and b"&#" in values) or (url_decode and (b"%" in values or b"+" in values)):
        return pa.array(_texts(raw.to_pylist(), url_decode=url_decode), pa.string())
    if entities:  # named entities only: replaced in Arrow
        if values.count(b"&") == values.count(b"&quot;"):  # ETags: "&quot;…&quot;"
            return pc.replace_substring(text, "&quot;", '"')
        for entity, char in _ENTITIES:  # &amp; last
            if entity.encode() in values:
                text = pc.replace_substring(text, entity, char)
    return text


def _assemble(body: bytes, is_marker: pa.BooleanArray, columns: dict[bytes, Any]) -> Page:
    """A page's table from its fields' raw values: Key, VersionId, IsLatest and LastModified one per entry in
    XML order, ETag and Size one per version in XML order."""
    url = _top(body, b"EncodingType") == "url"
    keys = _strings(columns[b"Key"], url_decode=url)
    version_ids = _strings(columns[b"VersionId"])
    latest = columns[b"IsLatest"]
    latest = pc.equal(latest if isinstance(latest, pa.Array) else pa.array(latest, pa.binary()), b"true")
    modified = _timestamps(_strings(columns[b"LastModified"]))
    # Markers have no ETag or Size: spread the versions' values over the version rows, '' and 0 elsewhere.
    etags = pc.utf8_trim(_strings(columns[b"ETag"]), '"')
    sizes = columns[b"Size"]
    sizes = (sizes if isinstance(sizes, pa.Array) else pa.array(sizes, pa.binary())).cast(pa.string())
    sizes = sizes.cast(pa.int64())
    n_versions = len(etags)
    if n_versions != len(is_marker):
        version_rows = pc.invert(is_marker)
        nth = pc.subtract(pc.cumulative_sum(version_rows.cast(pa.int64())), 1)
        take = pc.if_else(version_rows, nth, n_versions)
        etags = pa.concat_arrays([etags, pa.array([""], pa.string())]).take(take)
        sizes = pa.concat_arrays([sizes, pa.array([0], pa.int64())]).take(take)
    table = pa.Table.from_arrays([keys, version_ids, is_marker, latest, sizes, modified, etags], schema=SCHEMA)
    return _page(body, table, is_marker, url)


# the tag scan -------------------------------------------------------------------------------------------

# Tags are compared whole, as up to three 8-byte words: a page with a longer tag goes to the regular expression.
_MAX_WORDS = 3


def _tags(kind: bytes, layout: Any) -> list[bytes]:
    """Every tag of an element laid out as ``layout`` (see :func:`_layout`), in document order."""
    out = [b"<" + kind + b">"]
    for tag, nested in layout:
        out.extend(_tags(tag, nested) if nested is not None else (b"<" + tag + b">", b"</" + tag + b">"))
    out.append(b"</" + kind + b">")
    return out


@functools.lru_cache(maxsize=64)
def _words(tags: tuple[bytes, ...], words: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tags as ``words`` 8-byte words (zero-padded: word k of every tag, in one array per k) and the masks that
    keep a tag's own bytes."""
    size = 8 * words
    expected = np.frombuffer(b"".join(tag.ljust(size, b"\0") for tag in tags), np.uint64)
    mask = np.frombuffer(b"".join((b"\xff" * len(tag)).ljust(size, b"\0") for tag in tags), np.uint64)
    return [(expected[k::words], mask[k::words]) for k in range(words)]


def _spans(buffer: pa.Buffer, start: np.ndarray, end: np.ndarray) -> pa.Array:
    """The bytes ``buffer[start[i]:end[i]]`` of every i (in ascending order, not overlapping) as one binary
    array: the spans and the gaps between them as one array over the buffer (no copy), then every other value
    taken (one copy in Arrow)."""
    n = len(start)
    offsets = np.empty(2 * n + 1, np.int32)
    offsets[0:2 * n:2] = start
    offsets[1:2 * n:2] = end
    offsets[2 * n] = end[-1] if n else 0
    both = pa.Array.from_buffers(pa.binary(), 2 * n, [None, pa.py_buffer(offsets), buffer])
    return both.take(pa.array(np.arange(0, 2 * n, 2, dtype=np.int32)))


def _parse_tags(body: bytes) -> Page | None:
    """Every '<' of the entries taken as the start of a tag, in arrays: each entry's tags checked against its
    kind's first entry (the same tags in the same order), and the fields' text cut out between their tags.

    Text never holds a '<' (XML escapes it), so the '<'s are exactly the tags' starts, and anything else that
    starts with one (a comment, CDATA, an empty element ``<Tag/>``, an attribute, an entry laid out otherwise,
    something other than entries between them) is a tag unlike the expected one: None, and the regular
    expression decides.
    """
    kinds: list[tuple[bytes, list[bytes]]] = []
    first, last = len(body), -1
    for kind in (b"Version", b"DeleteMarker"):
        start = body.find(b"<" + kind + b">")
        if start < 0:
            continue
        end = body.find(b"</" + kind + b">", start)
        if end < 0:
            return None
        layout = _layout(body[start + len(kind) + 2: end])
        if layout is None:
            return None
        top = [tag for tag, nested in layout if nested is None]
        if any(tag not in top for tag in (_FIELDS[:4] if kind == b"DeleteMarker" else _FIELDS)):
            return None
        kinds.append((kind, _tags(kind, layout)))
        first, last = min(first, start), max(last, body.rfind(b"</" + kind + b">") + len(kind) + 3)
    if not kinds:
        return None
    n_words = -(-max(len(tag) for _, tags in kinds for tag in tags) // 8)
    if n_words > _MAX_WORDS or len(body) - last < 8 * n_words:  # every tag's words inside the body
        return None
    tables = [_words(tuple(tags), n_words) for _, tags in kinds]
    data = np.frombuffer(body, np.uint8)
    at = np.flatnonzero(data[first:last] == ord("<"))
    at += first
    unaligned = np.ndarray((len(body) - 7,), np.uint64, buffer=body, strides=(1,))  # the 8 bytes from each byte
    words = [unaligned[at + 8 * k] for k in range(n_words)]
    # Entries start at their kind's opening tag (candidates: its first 8 bytes and the 9th; checked whole below).
    openings = []
    for (kind, _), table in zip(kinds, tables, strict=True):
        opening = words[0] == table[0][0][0]
        if kind == b"Version":  # not <VersionId>
            opening &= (words[1] & 0xFF) == ord(">")
        openings.append(opening)
    starts = np.flatnonzero(openings[0] | openings[1] if len(kinds) == 2 else openings[0])
    if not len(starts) or starts[0] != 0:
        return None
    kind_of = openings[1][starts].astype(np.intp) if len(kinds) == 2 else np.zeros(len(starts), np.intp)
    counts = np.array([len(tags) for _, tags in kinds], np.intp)[kind_of]
    if not np.array_equal(np.diff(starts), counts[:-1]) or starts[-1] + counts[-1] != len(at):
        return None
    # Each entry is then as many tags as its kind's first entry: all of them, compared whole.
    base = np.array([0, len(kinds[0][1])], np.intp)[kind_of]  # each kind's first row in the tables
    entry_of = np.repeat(np.arange(len(starts)), counts)
    row = np.arange(len(at))
    row += (base - starts)[entry_of]
    for k in range(n_words):
        expected = np.concatenate([table[k][0] for table in tables])
        mask = np.concatenate([table[k][1] for table in tables])
        if np.any((words[k] ^ expected[row]) & mask[row]):
            return None
    # A field's text: from the end of its opening tag to its closing tag (the next '<').
    buffer = pa.py_buffer(body)
    columns: dict[bytes, pa.Array] = {}
    for name in _FIELDS:
        tag = b"<" + name + b">"
        where = np.array([tags.index(tag) if tag in tags else -1 for _, tags in kinds], np.intp)
        if name in _FIELDS[4:]:  # versions only
            index = starts[kind_of == 0] + where[0] if kinds[0][0] == b"Version" else starts[:0]
        else:
            index = starts + where[kind_of]
        columns[name] = _spans(buffer, at[index] + len(tag), at[index + 1])
    is_marker = pa.array(np.array([kind == b"DeleteMarker" for kind, _ in kinds])[kind_of], pa.bool_())
    return _assemble(body, is_marker, columns)


def _parse_fast(body: bytes) -> Page | None:
    """The regular-expression scan; None when the body is not the plain form it expects."""
    if body.find(b"<" + _ROOT) < 0 or not body[-64:].rstrip().endswith(b"</" + _ROOT + b">"):
        return None  # not a whole listing: ElementTree says what is wrong
    try:
        page = _parse_tags(body) or _parse_template(body)
        if page is not None or b"<![CDATA[" in body:
            return page
        return _parse_by_field(body)
    except (ValueError, IndexError, pa.ArrowInvalid):  # anything unexpected: ElementTree reads the page
        return None


def _parse_by_field(body: bytes) -> Page | None:
    """Each field found by its own scan, for pages whose entries are not all laid out alike."""
    kinds = _KIND_RE.findall(body)
    n = len(kinds)
    fields = {name: regex.findall(body) for name, regex in _FIELD_RES.items()}
    n_versions = n - kinds.count(b"DeleteMarker")
    if any(len(fields[name]) != n for name in (b"Key", b"VersionId", b"IsLatest", b"LastModified")):
        return None
    if len(fields[b"ETag"]) != n_versions or len(fields[b"Size"]) != n_versions:
        return None
    # Each element once per entry: a missing or empty element (<VersionId/>) in one entry and a second one in
    # another would still pass the counts, so every element of one name must also be as frequent as its open tag.
    for name in _FIELDS:
        if body.count(b"<" + name + b">") != len(fields[name]) or body.count(b"<" + name + b"/>"):
            return None
    return _assemble(body, pc.equal(pa.array(kinds, pa.binary()), b"DeleteMarker"), fields)


def _page(body: bytes, table: pa.Table, is_marker: pa.BooleanArray, url: bool) -> Page:
    next_key = _top(body, b"NextKeyMarker")
    if next_key is not None and url:
        next_key = unquote_plus(next_key)
    return Page(entries=table, truncated=_top(body, b"IsTruncated") == "true", next_key_marker=next_key,
                next_version_id_marker=_top(body, b"NextVersionIdMarker"), order=_order_of(is_marker))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_tree(body: bytes) -> Page:
    """ElementTree, for any well-formed page (namespaces, element order and whitespace as they come)."""
    root = ET.fromstring(body)
    url = False
    top: dict[str, str] = {}
    rows: list[tuple[bool, dict[str, str]]] = []
    for child in root:
        name = _local(child.tag)
        if name in ("Version", "DeleteMarker"):
            rows.append((name == "DeleteMarker", {_local(f.tag): f.text or "" for f in child}))
        else:
            top[name] = child.text or ""
    url = top.get("EncodingType") == "url"
    is_marker = pa.array([m for m, _ in rows], pa.bool_())
    keys = [unquote_plus(r["Key"]) if url else r["Key"] for _, r in rows]
    table = _build(
        is_marker, keys, [r.get("VersionId") or "null" for _, r in rows],
        pa.array([r.get("IsLatest", "false") == "true" for _, r in rows], pa.bool_()),
        _timestamps([r["LastModified"] for _, r in rows]),
        [r.get("ETag", "") for m, r in rows if not m], [int(r.get("Size") or 0) for m, r in rows if not m],
    )
    next_key = top.get("NextKeyMarker")
    return Page(entries=table, truncated=top.get("IsTruncated") == "true",
                next_key_marker=unquote_plus(next_key) if (next_key is not None and url) else next_key,
                next_version_id_marker=top.get("NextVersionIdMarker"), order=_order_of(is_marker))


def parse_list_versions(body: bytes) -> Page:
    """A ListObjectVersions response body as columns (entries in the XML's order)."""
    return _parse_fast(body) or _parse_tree(body)


def _page_from_parsed(response: dict) -> Page:
    versions = response.get("Versions") or []
    markers = response.get("DeleteMarkers") or []
    rows = [(False, v) for v in versions] + [(True, m) for m in markers]
    is_marker = pa.array([m for m, _ in rows], pa.bool_())
    table = _build(is_marker, [r["Key"] for _, r in rows], [str(r.get("VersionId") or "null") for _, r in rows],
                   pa.array([bool(r.get("IsLatest")) for _, r in rows], pa.bool_()),
                   pa.array([r["LastModified"] for _, r in rows], SCHEMA.field("last_modified").type),
                   [str(r.get("ETag", "")) for m, r in rows if not m],
                   [int(r.get("Size", 0)) for m, r in rows if not m])
    return Page(entries=table, truncated=bool(response.get("IsTruncated")),
                next_key_marker=response.get("NextKeyMarker"),
                next_version_id_marker=response.get("NextVersionIdMarker"), order=_order_of(is_marker))
