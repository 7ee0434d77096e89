"""DeleteObjects bodies written by airflow_fuse.delete_request are exactly botocore's: on tricky keys (unit, against
botocore's serializer), as sent (the bytes, their length and checksum headers, through a client), and on the real
servers (the markers named are the ones removed)."""

from __future__ import annotations

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from hypothesis import given
from hypothesis import strategies as st

from airflow_fuse.delete_request import delete_body, samples, write_delete_requests_fast

_CLIENT = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
                       endpoint_url="http://127.0.0.1:9")
# Any text, control characters, unicode and lone surrogates included (keys botocore would refuse are left to it).
_text = st.text(st.characters(codec=None) | st.sampled_from("&<>\"'\r\n\t\x00 ]]>\ud800\udfff"), max_size=10)
_identifier = st.one_of(
    st.fixed_dictionaries({"Key": _text.filter(bool)}),
    st.fixed_dictionaries({"Key": _text.filter(bool), "VersionId": _text}),
    st.fixed_dictionaries({"VersionId": _text, "Key": _text.filter(bool)}),  # members in the order given
)


def _botocore(delete: dict) -> bytes:
    from airflow_fuse.delete_request import botocore_body

    return botocore_body(_CLIENT, delete)


@given(st.lists(_identifier, max_size=8), st.none() | st.booleans(), st.booleans())
def test_a_body_is_written_as_botocore_writes_it(objects, quiet, quiet_first):
    delete: dict = {"Objects": objects}
    if quiet is not None:
        delete = {"Quiet": quiet, **delete} if quiet_first else {**delete, "Quiet": quiet}
    assert delete_body(delete) == _botocore(delete)


def test_what_botocore_must_validate_is_left_to_it():
    assert delete_body({"Objects": [{"Key": ""}]}) is None  # botocore refuses an empty key
    assert delete_body({"Objects": [{"VersionId": "v"}]}) is None  # and a missing one
    assert delete_body({"Objects": [{"Key": "k", "VersionId": None}]}) is None
    assert delete_body({"Objects": [{"Key": "k", "ETag": "e"}]}) is None  # a field this does not write
    assert delete_body({"Objects": ({"Key": "k"},)}) is None
    assert delete_body({"Objects": [{"Key": b"k"}]}) is None
    assert delete_body({"Objects": [], "Quiet": "true"}) is None
    assert delete_body(None) is None


def _sent(client, delete: dict) -> tuple[bytes, dict[str, str], dict]:
    """What ``client`` sends for DeleteObjects(Delete=delete): the body, the headers that depend on it, and the
    parameters after the call; no server is reached (a stub answer is given at before-send)."""
    sent = []

    def capture(request, **_):
        sent.append(request)
        response = AWSResponse(request.url, 200, {}, None)
        response._content = b"<DeleteResult></DeleteResult>"
        return response

    client.meta.events.register_first("before-send.s3.DeleteObjects", capture, unique_id="test-capture")
    try:
        client.delete_objects(Bucket="b", Delete=delete)
    finally:
        client.meta.events.unregister("before-send.s3.DeleteObjects", unique_id="test-capture")
    headers = {k: v for k, v in sent[0].headers.items()
               if k.lower() in ("content-length", "content-md5", "content-type") or k.lower().startswith(
                   "x-amz-checksum") or k.lower() == "x-amz-sdk-checksum-algorithm"}
    return sent[0].body, headers, delete


def _client():
    return boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
                        endpoint_url="http://127.0.0.1:9")


@pytest.mark.parametrize("delete", samples(), ids=["tricky", "quiet-first", "one", "empty"])
def test_a_client_sends_the_same_bytes_and_checksum(delete):
    plain, fast = _client(), _client()
    assert write_delete_requests_fast(fast)
    assert write_delete_requests_fast(fast)  # registered once, under one id
    body, headers, _ = _sent(plain, delete)
    original = repr(delete)
    fast_body, fast_headers, given = _sent(fast, delete)
    assert fast_body == body  # \r and \n escaped by botocore after the body is put in, as always
    assert fast_headers == headers and any(k.lower().startswith("x-amz-checksum") for k in headers)
    assert repr(given) == original  # the caller's parameters are not changed


def test_a_delete_the_writer_does_not_take_is_sent_by_botocore():
    plain, fast = _client(), _client()
    write_delete_requests_fast(fast)
    delete = {"Objects": [{"Key": "k", "VersionId": "v", "ETag": '"e"'}], "Quiet": True}
    assert _sent(fast, delete)[:2] == _sent(plain, delete)[:2]


def test_a_client_writing_fast_removes_exactly_the_markers_named(s3, bucket):
    keys = ["t/a b+ü&<1>.parquet", "t/ two", "t/x]]>", "t/日本 \t tab"]
    markers, kept = [], []
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")
        markers.append({"Key": key, "VersionId": s3.delete_object(Bucket=bucket, Key=key)["VersionId"]})
        s3.put_object(Bucket=bucket, Key=key + ".kept", Body=b"data")
        kept.append(s3.delete_object(Bucket=bucket, Key=key + ".kept")["VersionId"])  # a marker not named
    assert write_delete_requests_fast(s3)
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": markers, "Quiet": False})
    assert sorted((d["Key"], d["VersionId"]) for d in answer["Deleted"]) == sorted(
        (m["Key"], m["VersionId"]) for m in markers)
    assert not answer.get("Errors")
    for key in keys:  # each key's data version is current again
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"data"
    listed = {v["VersionId"] for v in s3.list_object_versions(Bucket=bucket, Prefix="t/").get("DeleteMarkers", [])}
    assert listed == set(kept)
