"""The boto3 client the stages use, and translation of S3 errors into messages a user can act on."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from airflow_fuse import iam
from airflow_fuse.errors import BadInputError, FuseError, PreconditionError, redact

# Adaptive retries back off on throttling (SlowDown, 503) and share a token bucket across threads.
CLIENT_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "adaptive"},
    connect_timeout=5,
    read_timeout=120,
    max_pool_connections=64,
)


def parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parsing, with a fast path for the ISO 8601 UTC form listings use.

    botocore parses every ``LastModified`` with dateutil: ~110 ms of client CPU per 1000-entry
    ListObjectVersions page here, most of the time spent on a page, against ~30 ms with
    ``datetime.fromisoformat``. The result is the same instant, timezone-aware; any other form (HTTP
    dates in headers, epoch numbers) goes to botocore's parser.
    """
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            return datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            pass
    return botocore_parse_timestamp(value)


def make_session(*, fast_timestamps: bool = True, **kwargs: Any) -> boto3.session.Session:
    """A boto3 session (``kwargs`` as boto3's) whose clients parse timestamps with :func:`parse_timestamp`."""
    core = botocore.session.get_session()
    if fast_timestamps:
        use_fast_timestamps(core)
    return boto3.session.Session(botocore_session=core, **kwargs)


def use_fast_timestamps(session: Any) -> None:
    """Make the clients a botocore session creates parse timestamps with :func:`parse_timestamp`."""
    get_component = getattr(session, "get_component", None)
    if get_component is not None:
        get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)


def make_client(
    *, endpoint_url: str | None = None, region: str | None = None, max_pool_connections: int = 64
) -> Any:
    """An S3 client from the standard AWS credential chain (for the CLI; Airflow uses the hook's client)."""
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    session = make_session(region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    config = CLIENT_CONFIG.merge(Config(max_pool_connections=max_pool_connections))
    return session.client("s3", endpoint_url=endpoint_url, config=config)


# HEAD answers carry no error code, only the status: "403" (botocore names the code after it).
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "403", "Forbidden", "AllAccessDisabled"})


def endpoint_of(client: Any) -> str:
    """The client's endpoint for messages, with any credentials in the URL redacted."""
    return redact(getattr(client.meta, "endpoint_url", "") or "") or "the default AWS endpoint"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def explain(exc: Exception, *, bucket: str, client: Any = None, conn_id: str | None = None,
            action: str = "read", prefix: str | None = None, key: str | None = None,
            versioned: bool | None = None) -> FuseError:
    """Turn a botocore exception into a FuseError naming the bucket, connection and the fix.

    Access denied names the IAM action the refused call needs and the resource to grant it on (the table
    ``prefix`` or ``key`` when given; ``versioned``: the call named a version id, see ``iam.required``).
    """
    where = f"bucket {bucket!r}"
    via = f" (connection {conn_id!r}" if conn_id else " ("
    via += f"{', ' if conn_id else ''}endpoint {endpoint_of(client)})" if client is not None else ")"
    if via == " ()":
        via = ""
    if isinstance(exc, FuseError):
        return exc
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return PreconditionError(
            f"cannot reach the S3 endpoint {endpoint_of(client)} to {action} {where}{via}: check endpoint_url "
            "in the connection extra (or --endpoint-url), and that the server is running and reachable"
        )
    if isinstance(exc, NoCredentialsError):
        return PreconditionError(
            f"no AWS credentials found to {action} {where}{via}: set login/password on the Airflow connection, "
            "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile"
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or (status == 404 and code in ("404", "NotFound")):
            return PreconditionError(
                f"{where} does not exist{via}: check the bucket name in the table location, "
                "and that the connection points at the right endpoint and region"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "AuthorizationHeaderMalformed"):
            return PreconditionError(
                f"the S3 server rejected the credentials ({code}) when trying to {action} {where}{via}: "
                "fix the access key / secret in the connection (or the AWS credential chain)"
            )
        if code in ACCESS_DENIED_CODES:
            return PreconditionError(
                f"access denied to {action} {where}{via}: "
                + iam.denied(exc.operation_name, bucket=bucket, prefix=prefix, key=key, versioned=versioned,
                             server_message=str(exc.response.get("Error", {}).get("Message") or ""))
            )
        if code in ("InvalidBucketName",):
            return BadInputError(f"{where} is not a valid bucket name{via}")
        message = exc.response.get("Error", {}).get("Message", "")
        return FuseError(f"S3 error {code or status} while trying to {action} {where}{via}: {message}")
    if isinstance(exc, BotoCoreError):
        return FuseError(f"S3 client error while trying to {action} {where}{via}: {exc}")
    return FuseError(f"unexpected error while trying to {action} {where}{via}: {exc}")


def refusal_hint(operation: str, codes: Iterable[str], *, bucket: str, key: str | None = None) -> str:
    """Why the server refused ``operation`` on ``key`` and the fix; names the IAM action when access was denied.

    For the restore's per-key failures (the per-key errors of a DeleteObjects answer carry only codes).
    """
    if ACCESS_DENIED_CODES & set(codes):
        return "access denied: " + iam.denied(operation, bucket=bucket, key=key)
    if operation in ("DeleteObjects", "DeleteObject"):
        return "marker removal is refused (Object Lock, or the server); use strategy 'auto' or 'copy'"
    return f"{operation} was refused"


def describe_error(exc: ClientError, *, bucket: str, key: str | None = None, versioned: bool | None = None) -> str:
    """``<call> failed: <code>: <message>``; when access was denied, the IAM action to grant and the fix."""
    code = error_code(exc)
    operation = getattr(exc, "operation_name", "") or "the request"
    if code in ACCESS_DENIED_CODES:
        message = str(exc.response.get("Error", {}).get("Message") or "")
        return f"{operation} access denied: " + iam.denied(operation, bucket=bucket, key=key, versioned=versioned,
                                                           server_message=message)
    return f"{operation} failed: {code}: {exc}"


class RequestCounter:
    """Counts the S3 API calls a client makes, per operation (retries not included)."""

    def __init__(self) -> None:
        self.by_operation: dict[str, int] = {}
        self._lock = threading.Lock()  # the restore's worker threads share one client

    def attach(self, client: Any) -> RequestCounter:
        client.meta.events.register("before-call.s3", self._count, unique_id=f"airflow-fuse-count-{id(self)}")
        return self

    def detach(self, client: Any) -> None:
        client.meta.events.unregister("before-call.s3", unique_id=f"airflow-fuse-count-{id(self)}")

    def _count(self, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.by_operation[operation] = self.by_operation.get(operation, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())
