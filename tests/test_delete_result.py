"""DeleteObjects answers read by airflow_fuse.delete_result give exactly what botocore's parser gives: on tricky
keys and every field (unit, against botocore's own parser), and through a client on the real servers."""

from __future__ import annotations

from xml.sax.saxutils import escape

import botocore.session
import pytest
from botocore.parsers import create_parser
from hypothesis import given
from hypothesis import strategies as st

from airflow_fuse.delete_result import _read_plain, _read_tree, parse_delete_result, read_delete_results_fast

_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_SHAPE = botocore.session.get_session().get_service_model("s3").operation_model("DeleteObjects").output_shape
# XML 1.0 characters (no control characters but tab, newline; \r is normalised by any XML parser)
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
                | st.sampled_from(" \t\n&<>\"'"), max_size=12)


def _botocore(body: bytes) -> dict:
    parsed = create_parser("rest-xml").parse({"body": body, "headers": {}, "status_code": 200}, _SHAPE)
    parsed.pop("ResponseMetadata", None)
    return parsed


def _element(name: str, fields: dict[str, str | None]) -> str:
    inner = "".join(f"<{k}/>" if v is None else f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    return f"<{name}>{inner}</{name}>"


deleted = st.fixed_dictionaries({"Key": _text, "VersionId": _text},
                                optional={"DeleteMarker": st.sampled_from(["true", "false"]),
                                          "DeleteMarkerVersionId": _text | st.none()})
errors = st.fixed_dictionaries({"Key": _text, "VersionId": _text | st.none(),
                                "Code": st.sampled_from(["AccessDenied", "NoSuchVersion", "InternalError"]),
                                "Message": _text})


@given(st.lists(deleted, max_size=6), st.lists(errors, max_size=4), st.booleans(), st.booleans())
def test_a_delete_result_reads_as_botocore_reads_it(done, failed, namespaced, interleave):
    parts = [_element("Deleted", d) for d in done] + [_element("Error", e) for e in failed]
    if interleave:
        parts.reverse()
    ns = f' xmlns="{_NS}"' if namespaced else ""
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult{ns}>{"".join(parts)}</DeleteResult>'.encode()
    assert parse_delete_result(body) == _botocore(body)


# What S3 writes: Deleted elements only, their fields in S3's order, no character escaped or changed by a parser.
_plain_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="&<>\ufffe\uffff")
                      | st.sampled_from(" \t\n\"'"), max_size=12)
plain_deleted = st.fixed_dictionaries({}, optional={"Key": _plain_text, "VersionId": _plain_text,
                                                    "DeleteMarker": st.sampled_from(["true", "false"]),
                                                    "DeleteMarkerVersionId": _plain_text})
_ORDER = ("Key", "VersionId", "DeleteMarker", "DeleteMarkerVersionId")


@given(st.lists(plain_deleted, max_size=6), st.booleans(), st.sampled_from(["", "UTF-8", "utf-8"]),
       st.sampled_from(["", "\n", "\n  "]))
def test_a_plain_answer_is_read_without_a_tree_as_a_tree_reads_it(done, namespaced, encoding, space):
    parts = [_element("Deleted", {k: d[k] for k in _ORDER if k in d}) for d in done]
    ns = f' xmlns="{_NS}"' if namespaced else ""
    head = f'<?xml version="1.0" encoding="{encoding}"?>' if encoding else ""  # AWS and Ceph: UTF-8; moto: utf-8
    body = f'{head}{space}<DeleteResult{ns}>{space}{space.join(parts)}{space}</DeleteResult>{space}'.encode()
    plain = _read_plain(body)
    assert plain is not None  # read without ElementTree
    assert plain == _read_tree(body) == _botocore(body)


@pytest.mark.parametrize("body", [
    b'<DeleteResult><Deleted><Key>a&amp;b</Key></Deleted></DeleteResult>',  # an entity
    b'<DeleteResult><Deleted><Key>a\r\nb</Key></Deleted></DeleteResult>',  # a parser makes \r\n one \n
    b'<DeleteResult><Deleted><Key><![CDATA[k]]></Key></Deleted></DeleteResult>',
    b'<DeleteResult><Deleted><VersionId>v</VersionId><Key>k</Key></Deleted></DeleteResult>',  # another order
    b'<DeleteResult><Deleted> <Key>k</Key></Deleted></DeleteResult>',  # whitespace inside
    b'<DeleteResult><Deleted><Key/></Deleted></DeleteResult>',
    b'<DeleteResult><Error><Key>k</Key><Code>AccessDenied</Code></Error></DeleteResult>',
    b'<DeleteResult xmlns="urn:other"><Deleted><Key>k</Key></Deleted></DeleteResult>',
    b'<?xml version="1.0" encoding="ISO-8859-1"?><DeleteResult><Deleted><Key>\xe9</Key></Deleted></DeleteResult>',
    b'<DeleteResult><Deleted><Key>k\x01</Key></Deleted></DeleteResult>',  # refused by a parser
    b'<DeleteResult><Deleted><Key>k</Key></Deleted></DeleteResult><extra/>',
])
def test_any_other_answer_is_read_by_the_tree(body):
    assert _read_plain(body) is None
    assert parse_delete_result(body) == _read_tree(body)


def test_what_is_not_a_delete_result_is_left_to_botocore():
    assert parse_delete_result(b"<Error><Code>InternalError</Code></Error>") is None
    assert parse_delete_result(b"<DeleteResult><Deleted>") is None  # cut short
    assert parse_delete_result(b"") is None


def test_a_client_reading_fast_removes_and_reports_the_same(s3, bucket):
    keys = ["t/a b+ü&<1>.parquet", "t/ two", "t/x"]
    markers = []
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")
        markers.append({"Key": key, "VersionId": s3.delete_object(Bucket=bucket, Key=key)["VersionId"]})
    bodies: list[bytes] = []
    s3.meta.events.register_first("before-parse.*.DeleteObjects",
                                  lambda response_dict, **_: bodies.append(response_dict["body"]))
    read_delete_results_fast(s3)
    read_delete_results_fast(s3)  # once is enough: registered under one id
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": markers})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    answer.pop("ResponseMetadata")
    assert answer == _botocore(bodies[0])  # what the server said, as botocore reads it
    assert sorted((d["Key"], d["VersionId"]) for d in answer["Deleted"]) == sorted(
        (m["Key"], m["VersionId"]) for m in markers)
    for key in keys:  # each key's data version is current again
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"data"
