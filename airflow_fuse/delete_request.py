"""DeleteObjects requests written in one pass: a removal of 1,000 delete markers is a request body of 1,000
``<Object>`` elements, and botocore's model-driven validation and XML serialisation (an ElementTree of 3,000
nodes) cost more client CPU than the rest of the request.

``delete_body`` writes the body botocore writes for a ``Delete`` parameter of ``Objects`` (each a ``Key`` and
optionally a ``VersionId``, strings) and ``Quiet``: byte for byte (tests/test_delete_request.py compares the two on
tricky keys: XML specials, control characters, unicode, lone surrogates, an empty version id), and
``write_delete_requests_fast`` has a client use it:

- on ``before-parameter-build`` the ``Objects`` are taken out of the parameters botocore validates and serialises
  (it then writes an empty list) and the body is written from them;
- on ``before-call``, ahead of botocore's own handlers, the body replaces botocore's. Everything that depends on the
  body comes after: botocore's escape of carriage returns and line feeds (its ``before-call`` handler), the checksum
  (``apply_request_checksum``, after ``before-call`` in ``BaseClient._make_api_call``), the length and the signature.

The caller's parameters are not changed (a copy of ``Delete`` is made); a ``Delete`` with anything else (another
field of an object, a value that is not a string, a key botocore would refuse) is left to botocore, which validates
and serialises it as always. Registering checks first that this botocore serialises a sample of tricky keys as
``delete_body`` does; if it does not, nothing is registered (botocore writes every body, as before).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_OPEN = f'<Delete xmlns="{NAMESPACE}">'
_BODY = "airflow_fuse.delete_request.body"  # where the body waits in the request's context
_PLACEHOLDER = "airflow_fuse.delete_request.placeholder"  # what botocore writes for the parameters it is given
# botocore keeps one handler per unique id, whatever the event: one id each
_TAKE_ID, _PUT_ID = "airflow_fuse.delete_request.take", "airflow_fuse.delete_request.put"
_CHECKED = "_airflow_fuse_delete_request"  # on the client: True (registered) or False (this botocore differs)
# Keys that exercise every rule of the serialisation (checked against botocore before registering).
SAMPLE_KEYS = ("plain/key.parquet", "a&b<c>d\"e'f", "tab\tnl\ncr\r end", "ctl\x01\x1f\x7f", "ünï cödé/日本/𝄞",
               "lone \ud800 surrogate", "&amp; already", "]]> cdata", " spaces ", "x" * 1024)


def _text(value: str) -> str:
    # ElementTree's escape of text (xml.etree.ElementTree._escape_cdata): only these three.
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    return value


def delete_body(delete: Any) -> bytes | None:
    """The DeleteObjects body botocore serialises for ``delete`` (before its ``before-call`` escape of ``\\r`` and
    ``\\n``); None if ``delete`` holds anything this does not write (botocore then validates and writes it)."""
    if type(delete) is not dict:
        return None
    parts = [_OPEN]
    append = parts.append
    for name, value in delete.items():  # botocore writes the members in the order given
        if name == "Objects":
            if type(value) is not list:
                return None
            for identifier in value:
                if type(identifier) is not dict:
                    return None
                key = identifier.get("Key")
                if type(key) is not str or not key:  # botocore refuses a missing or empty key
                    return None
                if len(identifier) == 1:
                    append(f"<Object><Key>{_text(key)}</Key></Object>")
                    continue
                version = identifier.get("VersionId")
                if len(identifier) != 2 or type(version) is not str:
                    return None
                version_xml = f"<VersionId>{_text(version)}</VersionId>" if version else "<VersionId />"
                if next(iter(identifier)) == "Key":
                    append(f"<Object><Key>{_text(key)}</Key>{version_xml}</Object>")
                else:
                    append(f"<Object>{version_xml}<Key>{_text(key)}</Key></Object>")
        elif name == "Quiet":
            if type(value) is not bool:
                return None
            append("<Quiet>true</Quiet>" if value else "<Quiet>false</Quiet>")
        else:
            return None
    if len(parts) == 1:
        return f'<Delete xmlns="{NAMESPACE}" />'.encode()  # no member written: an empty element
    append("</Delete>")
    # ElementTree writes through a UTF-8 writer that turns what UTF-8 cannot hold (a lone surrogate) into a
    # character reference.
    return "".join(parts).encode("utf-8", "xmlcharrefreplace")


def _take_objects(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """``before-parameter-build``: write the body; botocore serialises the rest with an empty ``Objects``."""
    delete = params.get("Delete")
    body = delete_body(delete)
    if body is None or context is None:
        return
    assert isinstance(delete, dict)
    placeholder = {name: ([] if name == "Objects" else value) for name, value in delete.items()}
    context[_BODY] = body
    context[_PLACEHOLDER] = delete_body(placeholder)
    params["Delete"] = placeholder  # the caller's dict is left as it was


def _put_body(params: dict[str, Any], context: dict[str, Any] | None = None, **_: Any) -> None:
    """``before-call``, first: the written body in place of botocore's (which holds no objects)."""
    if not context or _BODY not in context:
        return
    body = context.pop(_BODY)
    if params.get("body") != context.pop(_PLACEHOLDER):
        # Something changed the parameters after they were taken (another handler): send nothing rather than a
        # body that is not what botocore would have written.
        raise RuntimeError("the DeleteObjects parameters changed after airflow_fuse.delete_request wrote the "
                           "request body; nothing was sent")
    params["body"] = body


def botocore_body(client: Any, delete: dict[str, Any]) -> bytes:
    """The body this client's botocore serialises for ``delete`` (before its ``before-call`` escape)."""
    from botocore.serialize import create_serializer

    model = client.meta.service_model.operation_model("DeleteObjects")
    serializer = create_serializer(model.metadata["protocol"], include_validation=False)
    return serializer.serialize_to_request({"Bucket": "b", "Delete": delete}, model)["body"]


def samples() -> list[dict[str, Any]]:
    """``Delete`` parameters that exercise every rule of ``delete_body``."""
    objects: list[dict[str, str]] = [{"Key": key, "VersionId": f"v{i}&<>"} for i, key in enumerate(SAMPLE_KEYS)]
    objects += [{"Key": "k"}, {"VersionId": "", "Key": "k2"}]
    return [{"Objects": objects, "Quiet": False}, {"Quiet": True, "Objects": objects[:2]}, {"Objects": objects[:1]},
            {"Objects": []}]


def write_delete_requests_fast(client: Any) -> bool:
    """Have ``client`` write its DeleteObjects bodies with ``delete_body`` (idempotent); False if its botocore
    writes them differently (then it keeps writing them itself)."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:
        return False
    checked = getattr(client, _CHECKED, None)
    if checked is None:
        try:
            checked = all(botocore_body(client, sample) == delete_body(sample) for sample in samples())
        except Exception as exc:  # noqa: BLE001 - any surprise: leave the serialisation to botocore
            log.debug("DeleteObjects bodies are left to botocore: %s", exc)
            checked = False
        if not checked:
            log.info("This botocore serialises DeleteObjects differently: it keeps writing the bodies itself")
        try:
            setattr(client, _CHECKED, checked)
        except AttributeError:
            pass
    if checked:
        events.register("before-parameter-build.s3.DeleteObjects", _take_objects, unique_id=_TAKE_ID)
        events.register_first("before-call.s3.DeleteObjects", _put_body, unique_id=_PUT_ID)
    return bool(checked)

