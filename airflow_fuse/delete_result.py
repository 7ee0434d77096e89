"""DeleteObjects answers read in one pass: a removal of 1,000 delete markers answers 1,000 ``<Deleted>`` elements,
and botocore's generic, model-driven XML parser spends more client CPU on them than anything else in a restore.

``parse_delete_result`` reads a ``DeleteResult`` body into exactly what botocore gives (``Deleted``: ``Key``,
``VersionId``, ``DeleteMarker``, ``DeleteMarkerVersionId``; ``Errors``: ``Key``, ``VersionId``, ``Code``,
``Message``; tests/test_delete_result.py compares the two on tricky keys). ``read_delete_results_fast`` hooks it
into a client's ``before-parse`` event for DeleteObjects, ahead of botocore's own handlers: an answer with status
200 whose root is ``DeleteResult`` is read here and botocore parses an empty result; anything else (an error, a 200
carrying an ``<Error>``, which botocore then turns into a 500, a body this does not recognise) is left to botocore.
Nothing is dropped: every ``Deleted`` and ``Error`` element is returned, and the restore still counts only the
removals confirmed.

Most answers are the plainest XML there is: ``Deleted`` elements only, each of ``Key``, ``VersionId``,
``DeleteMarker``, ``DeleteMarkerVersionId`` in that order, nothing escaped. ``_read_plain`` checks that the whole
body is exactly that (one regular expression over all of it, after a strict UTF-8 decoding and a search for any
character XML would refuse or change: control characters, ``\r``, ``&``, U+FFFE, U+FFFF, ``]]>``) and then reads
the elements' text as it stands, a third of ElementTree's time; any other body (an ``Error``, whitespace or
anything else inside an element, another namespace or declaration) is read by ElementTree.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

_DELETED_TEXT = ("Key", "VersionId", "DeleteMarkerVersionId")
_ERROR_TEXT = ("Key", "VersionId", "Code", "Message")
_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>'
_HANDLER_ID = "airflow_fuse.delete_result"
_EVENT = "before-parse.*.DeleteObjects"


# A Deleted element as S3 writes it; the groups say which fields it has (an empty field is "", not absent).
_PLAIN_DELETED = ("<Deleted>(<Key>([^<]*)</Key>)?(<VersionId>([^<]*)</VersionId>)?"
                  "(?:<DeleteMarker>(true|false)</DeleteMarker>)?"
                  "(<DeleteMarkerVersionId>([^<]*)</DeleteMarkerVersionId>)?</Deleted>")
_DELETED_ELEMENT = re.compile(_PLAIN_DELETED)
_PLAIN_BODY = re.compile(  # XML whitespace only ([ \t\n]: \r is refused before)
    '(?:<\\?xml version="1\\.0" encoding="(?i:utf-8)"\\?>)?[ \t\n]*'
    '<DeleteResult(?: xmlns="http://s3\\.amazonaws\\.com/doc/2006-03-01/")?>'
    "(?:[ \t\n]*" + _PLAIN_DELETED.replace("(<", "(?:<") + ")*[ \t\n]*</DeleteResult>[ \t\n]*")
# Characters an XML parser refuses (control characters but tab and newline, U+FFFE, U+FFFF) or changes (\r, &).
_NOT_PLAIN = re.compile("[\x00-\x08\x0b-\x1f&\ufffe\uffff]")


def _read_plain(body: bytes) -> dict[str, Any] | None:
    """``parse_delete_result`` of a body of plain ``Deleted`` elements only (see the module's docstring); None for
    any other body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "]]>" in text or _NOT_PLAIN.search(text) or not _PLAIN_BODY.fullmatch(text):
        return None
    deleted: list[dict[str, Any]] = []
    for has_key, key, has_version, version, marker, has_marker_version, marker_version in _DELETED_ELEMENT.findall(
            text):
        entry: dict[str, Any] = {}
        if has_key:
            entry["Key"] = key
        if has_version:
            entry["VersionId"] = version
        if has_marker_version:
            entry["DeleteMarkerVersionId"] = marker_version
        if marker:
            entry["DeleteMarker"] = marker == "true"
        deleted.append(entry)
    return {"Deleted": deleted} if deleted else {}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_delete_result(body: bytes) -> dict[str, Any] | None:
    """``Deleted`` and ``Errors`` of a DeleteObjects answer as botocore parses them; None if ``body`` is not a
    well-formed ``DeleteResult``."""
    plain = _read_plain(body)
    return plain if plain is not None else _read_tree(body)


def _read_tree(body: bytes) -> dict[str, Any] | None:
    """``parse_delete_result`` by ElementTree, for any body."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if _local(root.tag) != "DeleteResult":
        return None
    deleted: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for element in root:
        name = _local(element.tag)
        if name not in ("Deleted", "Error"):
            continue
        fields = {_local(child.tag): child.text or "" for child in element}
        if name == "Deleted":
            entry: dict[str, Any] = {k: fields[k] for k in _DELETED_TEXT if k in fields}
            if "DeleteMarker" in fields:
                entry["DeleteMarker"] = fields["DeleteMarker"] == "true"
            deleted.append(entry)
        else:
            errors.append({k: fields[k] for k in _ERROR_TEXT if k in fields})
    out: dict[str, Any] = {}
    if deleted:
        out["Deleted"] = deleted
    if errors:
        out["Errors"] = errors
    return out


def _before_parse(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], operation_model: Any = None,
                  **_: Any) -> None:
    if response_dict.get("status_code") != 200 or getattr(
            getattr(operation_model, "service_model", None), "service_name", "s3") != "s3":
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes):
        return
    parsed = parse_delete_result(body)
    if parsed is None:
        return
    customized_response_dict.update(parsed)
    response_dict["body"] = _EMPTY


def read_delete_results_fast(client: Any) -> None:
    """Have ``client`` read its DeleteObjects answers with ``parse_delete_result`` (idempotent)."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:
        # On "*.DeleteObjects": called before botocore's own "s3.*" handlers, so its check for an <Error> sent with
        # a 200 (which parses the whole body again) reads the empty result, or the body this leaves alone.
        events.register(_EVENT, _before_parse, unique_id=_HANDLER_ID)
