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
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

_DELETED_TEXT = ("Key", "VersionId", "DeleteMarkerVersionId")
_ERROR_TEXT = ("Key", "VersionId", "Code", "Message")
_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>'
_HANDLER_ID = "airflow_fuse.delete_result"
_EVENT = "before-parse.*.DeleteObjects"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_delete_result(body: bytes) -> dict[str, Any] | None:
    """``Deleted`` and ``Errors`` of a DeleteObjects answer as botocore parses them; None if ``body`` is not a
    well-formed ``DeleteResult``."""
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
