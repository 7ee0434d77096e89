"""A streaming walk of every version and delete marker under a prefix, in the order S3 lists them.

botocore parses a ListObjectVersions page into two lists (``Versions`` and ``DeleteMarkers``) and so
loses how they interleave. LastModified has one-second resolution on many servers, so it cannot
restore that order. We read the interleaving from the raw XML (the sequence of ``<Version>`` and
``<DeleteMarker>`` elements) in an ``after-call`` event handler and merge the two lists by it. Keys
are never parsed from the XML, so URL-encoded keys (``EncodingType=url``) stay botocore's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_ELEMENT_RE = re.compile(rb"<(Version|DeleteMarker)>")
_ORDER_FIELD = "FuseEntryOrder"
_HANDLER_ATTR = "_airflow_fuse_order_handler"

# A safety bound on one walk: 10 million pages is 10 billion versions.
MAX_PAGES = 10_000_000


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One entry of a key's history: a version holding data, or a delete marker."""

    key: str
    version_id: str
    is_delete_marker: bool
    is_latest: bool
    size: int
    last_modified: datetime
    etag: str


def _record_order(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
    if not isinstance(parsed, dict) or http_response is None:
        return
    body = getattr(http_response, "content", None)
    if isinstance(body, (bytes, bytearray)):
        parsed[_ORDER_FIELD] = [m.group(1) == b"DeleteMarker" for m in _ELEMENT_RE.finditer(body)]


def _ensure_order_handler(client: Any) -> None:
    events = client.meta.events
    if not getattr(client, _HANDLER_ATTR, False):
        events.register("after-call.s3.ListObjectVersions", _record_order, unique_id="airflow-fuse-order")
        setattr(client, _HANDLER_ATTR, True)


def _entry(item: dict, is_marker: bool) -> VersionEntry:
    return VersionEntry(
        key=item["Key"],
        version_id=str(item.get("VersionId") or "null"),
        is_delete_marker=is_marker,
        is_latest=bool(item.get("IsLatest", False)),
        size=0 if is_marker else int(item.get("Size", 0)),
        last_modified=item["LastModified"],
        etag="" if is_marker else str(item.get("ETag", "")).strip('"'),
    )


def merge_page(page: dict) -> list[VersionEntry]:
    """The page's entries in listing order: keys in ascending order, each key's entries newest first.

    The current entry (``IsLatest``) comes first, then newest LastModified first. Entries with equal
    timestamps keep the order of the raw XML, which is the true order on AWS and Ceph. moto writes
    all versions before all markers, so there (and only for same-second entries) markers are taken
    as newer: a guess that never changes which entry is current or which data version is newest.
    """
    versions = page.get("Versions") or []
    markers = page.get("DeleteMarkers") or []
    order = page.get(_ORDER_FIELD)
    versions_first = [False] * len(versions) + [True] * len(markers)
    if order is None or len(order) != len(versions) + len(markers) or sum(order) != len(markers):
        order = versions_first
    # All versions before all markers is how moto writes every page: there the XML says nothing about
    # same-second order, and a marker is taken as the newer entry. That errs towards removing a marker
    # too many (no data) rather than leaving a marker on top of the version being brought back.
    trusted = not (versions and markers and order == versions_first)
    entries: list[VersionEntry] = []
    vi = mi = 0
    for is_marker in order:
        if is_marker:
            entries.append(_entry(markers[mi], True))
            mi += 1
        else:
            entries.append(_entry(versions[vi], False))
            vi += 1
    # sorted() is stable: ties keep the XML order.
    if trusted:
        return sorted(entries, key=lambda e: (e.key, not e.is_latest, -e.last_modified.timestamp()))
    return sorted(entries, key=lambda e: (e.key, not e.is_latest, -e.last_modified.timestamp(),
                                          not e.is_delete_marker))


def _continuation(page: dict, entries: list[VersionEntry]) -> tuple[str | None, str | None]:
    """KeyMarker and VersionIdMarker for the next page.

    The key comes from the page's entries (botocore URL-decoded them), not from NextKeyMarker, which
    some servers (Ceph) return unencoded so that decoding turns a '+' into a space. The server's
    last entry always belongs to the page's greatest key.
    """
    next_version = page.get("NextVersionIdMarker")
    if entries:
        last_key = entries[-1].key
        if next_version is None or any(
            e.version_id == next_version for e in entries if e.key == last_key
        ):
            return last_key, next_version
    return page.get("NextKeyMarker"), next_version


def iter_object_versions(
    client: Any, bucket: str, prefix: str, *, page_size: int = 1000, on_page: Any = None
) -> Iterator[VersionEntry]:
    """Every version and delete marker under ``prefix``, one ListObjectVersions page at a time.

    Correct on pages holding only delete markers, keys whose entries straddle pages, ``null``
    version ids, and keys with spaces, unicode or URL-special characters. ``on_page(n_entries)`` is
    called after each page (progress, request counting).
    """
    _ensure_order_handler(client)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    previous_markers: tuple | None = None
    for _ in range(MAX_PAGES):
        page = client.list_object_versions(**kwargs)
        entries = merge_page(page)
        if on_page is not None:
            on_page(len(entries))
        yield from entries
        if not page.get("IsTruncated"):
            return
        markers = _continuation(page, entries)
        if not markers[0] or markers == previous_markers:
            raise RuntimeError(
                f"ListObjectVersions on bucket {bucket!r} did not advance past key {markers[0]!r}; "
                "the server returned a truncated page without a usable continuation marker"
            )
        previous_markers = markers
        kwargs["KeyMarker"] = markers[0]
        # Pass both markers: without VersionIdMarker, moto and Ceph re-list the marker key.
        if markers[1]:
            kwargs["VersionIdMarker"] = markers[1]
        else:
            kwargs.pop("VersionIdMarker", None)
    raise RuntimeError(f"ListObjectVersions on bucket {bucket!r} exceeded {MAX_PAGES} pages")
