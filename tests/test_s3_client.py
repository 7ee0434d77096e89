"""The clients airflow-fuse makes parse listing timestamps fast, to the same instants as botocore."""

from __future__ import annotations

import pytest
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.listing import iter_object_versions
from airflow_fuse.s3 import make_client, parse_timestamp
from tests.helpers import delete_keys, put_objects


@pytest.mark.parametrize("value", [
    "2026-11-25T22:00:01.123Z", "2026-11-25T22:00:01Z", "2026-11-25T22:00:01.123456Z",
    "2026-11-25T22:00:01.1234567Z", "2026-11-25T23:00:01+01:00", "Wed, 25 Nov 2026 22:00:01 GMT",
    "1764108001", 1764108001,
])
def test_timestamps_parse_to_the_same_instant_as_botocore(value):
    ours, theirs = parse_timestamp(value), botocore_parse_timestamp(value)
    assert ours == theirs and ours.utcoffset() == theirs.utcoffset()


def test_hook_and_cli_clients_list_the_same_entries_as_plain_boto3(s3_server, s3, bucket, conn_id, monkeypatch):
    put_objects(s3, bucket, {"t/a": b"1", "t/b": b"2"})
    delete_keys(s3, bucket, ["t/a"])
    expected = list(iter_object_versions(s3, bucket, "t/"))  # botocore's own timestamp parser
    hook_client = VersionedS3Hook(aws_conn_id=conn_id).get_conn()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    cli_client = make_client(endpoint_url=s3_server.endpoint_url)
    for client in (hook_client, cli_client):
        parser = client._endpoint._response_parser_factory.create_parser("rest-xml")
        assert parser._timestamp_parser is parse_timestamp  # the fast path is what parses responses
        assert list(iter_object_versions(client, bucket, "t/")) == expected
