"""Least privilege: the S3 permissions each airflow-fuse mode needs, as data and as IAM policy documents.

Each :class:`Need` is one IAM action on one resource, the S3 calls that use it and why. A mode is a list of
needs; :func:`policy` turns it into an identity policy (attach it to the role or user airflow-fuse runs
as) and :func:`bucket_policies` into bucket policies for a named principal (Ceph RGW users, other
accounts). :func:`denied` says, for an S3 call the server refused, which action on which resource to
grant: ``s3.explain`` and the restore's per-key failures use it. Pure data: no I/O, no boto3.

The calls behind each need were read from the stages (engine, listing, reader, restore, versioning,
plan) and counted at runtime with ``s3.RequestCounter``; the policies are proved on Ceph RGW 16, which
enforces bucket policies (tests/test_iam.py). docs/iam.md shows them and the server differences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from airflow_fuse.location import TableLocation, parse_table_uri

MODES = ("scan", "undelete", "copy", "auto", "sensor")
SERVERS = ("aws", "ceph")
Resource = Literal["bucket", "table", "ops"]


@dataclass(frozen=True)
class Need:
    """One IAM action on one resource that a mode needs, the S3 calls that use it, and why."""

    sid: str
    action: str
    resource: Resource  # bucket: the bucket ARN; table: objects under the table prefix; ops: under the ops location
    operations: tuple[str, ...]
    why: str
    prefix_condition: bool = False  # only listings of the table prefix (condition on s3:prefix)
    server: str = ""  # "" everywhere, else only this server needs it
    cleanup_only: bool = False  # used only after a failure, to clean up: a success never shows it is needed


VERSIONING = Need(
    "ReadVersioningState", "s3:GetBucketVersioning", "bucket", ("GetBucketVersioning",),
    "check that the bucket keeps versions before anything else (versioning never enabled: nothing to restore)")
LIST_VERSIONS = Need(
    "ListTableVersions", "s3:ListBucketVersions", "bucket", ("ListObjectVersions",),
    "list every version and delete marker under the table prefix: the scan, and the re-check of a saved "
    "plan's keys before they are restored", prefix_condition=True)
READ_VERSIONS = Need(
    "ReadTableVersions", "s3:GetObjectVersion", "table", ("GetObject", "HeadObject", "CopyObject", "UploadPartCopy"),
    "read table metadata (Fuse snapshots and segments) at a version id; the source version of a copy (and its "
    "headers and metadata, which a copy in parts carries over)")
REMOVE_MARKERS = Need(
    "RemoveDeleteMarkers", "s3:DeleteObjectVersion", "table", ("DeleteObjects",),
    "remove delete markers by version id; only ids a listing showed as delete markers are sent, never a "
    "version holding data")
CEPH_MULTI_DELETE = Need(
    "CephMultiObjectDelete", "s3:DeleteObject", "bucket", ("DeleteObjects",),
    "Ceph RGW 16 checks s3:DeleteObject on the bucket ARN for a multi-object delete as a whole, then "
    "s3:DeleteObjectVersion on each key; on the bucket ARN it deletes nothing by itself (each key is checked "
    "against the key's ARN). AWS rejects this statement (an object action on a bucket ARN): leave it out there",
    server="ceph")
WRITE_COPIES = Need(
    "WriteRestoredVersions", "s3:PutObject", "table",
    ("CopyObject", "CreateMultipartUpload", "UploadPartCopy", "CompleteMultipartUpload"),
    "write the copy of the wanted version as the key's new current version (a server-side copy; objects of "
    "5 GiB or more in parts)")
ABORT_COPIES = Need(
    "AbortFailedCopies", "s3:AbortMultipartUpload", "table", ("AbortMultipartUpload",),
    "abort a multipart copy that failed, so its parts do not stay behind (and cost storage)", cleanup_only=True)
WITHDRAW_COPY = Need(
    "WithdrawBuryingCopy", "s3:DeleteObjectVersion", "table", ("DeleteObject",),
    "delete the copy this run made moments before when a write landed under it (servers that ignore conditional "
    "headers): the write is current again. Only that duplicate (its bytes stay in the source version); without "
    "it the key is reported failed, naming the version to remove", cleanup_only=True)
RECHECK = Need(
    "RecheckCurrentObjects", "s3:GetObject", "table", ("HeadObject",),
    "HeadObject of a live key (damaged, rolled back) right before a copy onto it, when the scan's own listing is "
    "too old to re-check on (it began over 5 minutes before the writes) and copies are few: a key written since "
    "the scan is left alone. Deleted keys are re-checked by listing them (s3:ListBucketVersions)")
LIST_UPLOADS = Need(
    "FindLeftoverUploads", "s3:ListBucketMultipartUploads", "bucket", ("ListMultipartUploads",),
    "find multipart uploads an interrupted run left on the keys it copies in parts, to abort them (without it "
    "they stay, and a warning says so). No s3:prefix condition: Ceph RGW 16 sets none for this call and "
    "refuses a conditioned grant", cleanup_only=True)
READ_LIFECYCLE = Need(
    "ReadLifecycleRules", "s3:GetLifecycleConfiguration", "bucket", ("GetBucketLifecycleConfiguration",),
    "find lifecycle rules that expire old versions or delete markers (they shrink the recovery window)")
READ_OBJECT_LOCK = Need(
    "ReadObjectLockConfiguration", "s3:GetBucketObjectLockConfiguration", "bucket", ("GetObjectLockConfiguration",),
    "find Object Lock retention (it can refuse marker removal)")
WRITE_OPS = Need(
    "WritePlansAndReports", "s3:PutObject", "ops", ("PutObject",),
    "save the plan (the undo manifest, before any change) and the report to the operations location")
READ_OPS = Need(
    "ReadSavedPlans", "s3:GetObject", "ops", ("GetObject",),
    "read a saved plan to apply it (amend with plan=s3://...)")

_MODE_NEEDS: dict[str, tuple[Need, ...]] = {
    "scan": (VERSIONING, LIST_VERSIONS, READ_VERSIONS),
    "undelete": (VERSIONING, LIST_VERSIONS, READ_VERSIONS, REMOVE_MARKERS, CEPH_MULTI_DELETE),
    "copy": (VERSIONING, LIST_VERSIONS, READ_VERSIONS, WRITE_COPIES, RECHECK, ABORT_COPIES, LIST_UPLOADS,
             WITHDRAW_COPY),
    "sensor": (VERSIONING, READ_LIFECYCLE, READ_OBJECT_LOCK),
}
_MODE_NEEDS["auto"] = _MODE_NEEDS["undelete"] + tuple(
    n for n in _MODE_NEEDS["copy"] if n not in _MODE_NEEDS["undelete"])

MODE_SUMMARY = {
    "scan": "FuseScanOperator / `airflow-fuse scan`: lists and reads, writes nothing to the table",
    "undelete": "FuseAmendOperator / `airflow-fuse amend` with strategy undelete: removes delete markers",
    "copy": "strategy copy: copies each wanted version back on top; also enough for strategy auto, which then "
            "copies where marker removal is denied",
    "auto": "strategy auto (the default) with everything it can use: marker removal where possible, copies "
            "where needed",
    "sensor": "VersioningSensor: versioning state, lifecycle rules and Object Lock (bucket settings only)",
}


def _check(mode: str, server: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if server not in SERVERS:
        raise ValueError(f"server {server!r} is not one of {', '.join(SERVERS)}")


def needs(mode: str, *, ops: bool = False, server: str = "aws") -> list[Need]:
    """What ``mode`` needs; ``ops``: plans and reports go to an S3 operations location too."""
    _check(mode, server)
    out = [n for n in _MODE_NEEDS[mode] if n.server in ("", server)]
    if ops and mode != "sensor":
        out.append(WRITE_OPS)
        if mode != "scan":
            out.append(READ_OPS)
    return out


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def objects_arn(bucket: str, prefix: str = "", key: str | None = None) -> str:
    """The ARN of one key, or of every key under ``prefix`` (a trailing ``*``)."""
    return f"arn:aws:s3:::{bucket}/{key}" if key is not None else f"arn:aws:s3:::{bucket}/{prefix}*"


def _ops_location(uri: str) -> TableLocation:
    # A location is a prefix (s3://ops/fuse/) or one document (s3://ops/fuse/plan.json): the ARN ends in '*'.
    location = parse_table_uri(uri.rstrip("/") + "/", allow_bucket_root=True)
    prefix = location.prefix if uri.endswith("/") or not location.prefix else location.prefix.rstrip("/")
    return TableLocation(location.bucket, prefix)


def statement(need: Need, table: TableLocation, ops: TableLocation | None = None) -> dict[str, Any]:
    """The policy statement granting one need on this table (and operations location)."""
    if need.resource == "ops":
        if ops is None:
            raise ValueError(f"{need.sid} needs the operations location")
        resource = objects_arn(ops.bucket, ops.prefix)
    elif need.resource == "table":
        resource = objects_arn(table.bucket, table.prefix)
    else:
        resource = bucket_arn(table.bucket)
    out: dict[str, Any] = {"Sid": need.sid, "Effect": "Allow", "Action": need.action, "Resource": resource}
    if need.prefix_condition and table.prefix:
        out["Condition"] = {"StringLike": {"s3:prefix": f"{table.prefix}*"}}
    return out


def _locations(table: str, ops_location: str | None) -> tuple[TableLocation, TableLocation | None]:
    location = parse_table_uri(table, allow_bucket_root=True)
    return location, (_ops_location(ops_location) if ops_location else None)


def policy(mode: str, table: str, *, ops_location: str | None = None, server: str = "aws",
           without: Iterable[str] = ()) -> dict[str, Any]:
    """The identity policy (no Principal) ``mode`` needs on ``table``; ``without``: statement ids to leave out."""
    location, ops = _locations(table, ops_location)
    skip = set(without)
    statements = [statement(n, location, ops) for n in needs(mode, ops=ops is not None, server=server)
                  if n.sid not in skip]
    return {"Version": "2012-10-17", "Statement": statements}


def bucket_policies(mode: str, table: str, principal: str, *, ops_location: str | None = None,
                    server: str = "aws", without: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Bucket policies granting ``principal`` what ``mode`` needs: one per bucket (table, operations location).

    ``principal`` is an ARN: ``arn:aws:iam::<account>:role/<name>`` on AWS, ``arn:aws:iam:::user/<uid>``
    for a Ceph RGW user (``arn:aws:iam::<tenant>:user/<uid>`` in a tenant).
    """
    out: dict[str, dict[str, Any]] = {}
    ops = _ops_location(ops_location) if ops_location else None
    for item in policy(mode, table, ops_location=ops_location, server=server, without=without)["Statement"]:
        bucket = ops.bucket if ops is not None and item["Sid"] in (WRITE_OPS.sid, READ_OPS.sid) else \
            parse_table_uri(table, allow_bucket_root=True).bucket
        document = out.setdefault(bucket, {"Version": "2012-10-17", "Statement": []})
        document["Statement"].append({"Sid": item["Sid"], "Effect": "Allow", "Principal": {"AWS": [principal]},
                                      **{k: v for k, v in item.items() if k not in ("Sid", "Effect")}})
    return out


# what a refused call needs ---------------------------------------------------------------------------------

_AWS_NAMES_ACTION = re.compile(r"perform: (s3:[A-Za-z]+)(?: on resource: \"?(arn:[^\s\"]+))?")
_COPY_WHY = "to copy the wanted version back on top (strategy copy, or auto where a copy is needed)"
_REMOVE_MARKERS_FIX = "grant it, or use strategy 'auto' or 'copy'"
# operation -> (action, resource kind, why) for each action the call needs; "object" is the key (or the prefix).
_OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "GetBucketVersioning": (("s3:GetBucketVersioning", "bucket"),),
    "ListObjectVersions": (("s3:ListBucketVersions", "bucket"),),
    "ListObjectsV2": (("s3:ListBucket", "bucket"),),
    "ListObjects": (("s3:ListBucket", "bucket"),),
    "DeleteObjects": (("s3:DeleteObjectVersion", "object"),),
    "DeleteObject": (("s3:DeleteObjectVersion", "object"),),
    "CopyObject": (("s3:GetObjectVersion", "object"), ("s3:PutObject", "object")),
    "UploadPartCopy": (("s3:GetObjectVersion", "object"), ("s3:PutObject", "object")),
    "CreateMultipartUpload": (("s3:PutObject", "object"),),
    "CompleteMultipartUpload": (("s3:PutObject", "object"),),
    "PutObject": (("s3:PutObject", "object"),),
    "AbortMultipartUpload": (("s3:AbortMultipartUpload", "object"),),
    "ListMultipartUploads": (("s3:ListBucketMultipartUploads", "bucket"),),
    "GetBucketLifecycleConfiguration": (("s3:GetLifecycleConfiguration", "bucket"),),
    "GetObjectLockConfiguration": (("s3:GetBucketObjectLockConfiguration", "bucket"),),
}
_WHY = {
    "GetBucketVersioning": "to check that the bucket keeps versions",
    "ListObjectVersions": "to list the table's versions and delete markers",
    "ListObjectsV2": "to list the table's current objects",
    "ListObjects": "to list the table's current objects",
    "DeleteObjects": "to remove delete markers (strategy undelete, or auto)",
    "DeleteObject": "to remove delete markers (strategy undelete, or auto)",
    "CopyObject": _COPY_WHY,
    "UploadPartCopy": _COPY_WHY + " in parts (objects of 5 GiB or more)",
    "CreateMultipartUpload": _COPY_WHY + " in parts (objects of 5 GiB or more)",
    "CompleteMultipartUpload": _COPY_WHY + " in parts (objects of 5 GiB or more)",
    "PutObject": "to save the plan or report there",
    "AbortMultipartUpload": "to abort a failed multipart copy",
    "ListMultipartUploads": "to find multipart uploads an interrupted run left behind",
    "GetBucketLifecycleConfiguration": "to read the lifecycle rules that expire old versions",
    "GetObjectLockConfiguration": "to read the Object Lock settings",
}
_NOTES = {
    "DeleteObjects": " (Ceph RGW 16 also checks s3:DeleteObject on {bucket_arn} for the request as a whole)",
    "UploadPartCopy": " (Ceph RGW 16 ignores the bucket policy for UploadPartCopy, tracker.ceph.com/issues/67590: "
                      "there, copy such objects as the bucket owner)",
}


def _resource_of(kind: str, bucket: str, prefix: str | None, key: str | None) -> str:
    if kind == "bucket":
        return bucket_arn(bucket)
    return objects_arn(bucket, prefix or "", key)


def _versioned(operation: str, versioned: bool | None) -> bool:
    # GetObject defaults to a version id (the stages read table objects by version id); HeadObject to none
    # (the restore's HeadObject re-checks a live key's current version before a copy).
    return operation == "GetObject" if versioned is None else versioned


def required(operation: str, *, bucket: str, prefix: str | None = None, key: str | None = None,
             versioned: bool | None = None) -> list[tuple[str, str]]:
    """(action, resource ARN) pairs an S3 call needs; ``versioned``: the call names a version id."""
    if operation in ("GetObject", "HeadObject"):
        action = "s3:GetObjectVersion" if _versioned(operation, versioned) else "s3:GetObject"
        return [(action, _resource_of("object", bucket, prefix, key))]
    return [(action, _resource_of(kind, bucket, prefix, key)) for action, kind in _OPERATIONS.get(operation, ())]


def denied(operation: str, *, bucket: str, prefix: str | None = None, key: str | None = None,
           versioned: bool | None = None, server_message: str = "") -> str:
    """For an S3 call refused with AccessDenied: the IAM action on its resource, why it is needed, the fix.

    ``server_message``: the error's message; AWS names the action it denied there, and that wins.
    """
    named = _AWS_NAMES_ACTION.search(server_message or "")
    if named:  # AWS names the action it evaluated (and the resource): that is authoritative
        pairs = [(named.group(1), named.group(2) or _resource_of("object", bucket, prefix, key))]
    else:
        pairs = required(operation, bucket=bucket, prefix=prefix, key=key, versioned=versioned)
    if not pairs:
        return (f"the credentials may not call {operation} on {bucket_arn(bucket)}; grant the IAM action it needs "
                "(`airflow-fuse iam-policy --mode MODE TABLE` prints the least-privilege policy)")
    note = _NOTES.get(operation, "")
    if operation not in ("GetObject", "HeadObject"):
        why = _WHY.get(operation, f"for {operation}")
    elif _versioned(operation, versioned):
        why = "to read an older version (table metadata)"
    elif operation == "HeadObject":
        why = "to check the key's current version before copying onto it"
        note = (" (a key deleted since the scan is answered 403 too, not 404, unless s3:ListBucket on "
                "{bucket_arn} is granted)")
    else:
        why = "to read it"
    wanted = " and ".join(f"{action} on {resource}" for action, resource in pairs)
    verb = "is" if len(pairs) == 1 else "are"
    fix = _REMOVE_MARKERS_FIX if operation in ("DeleteObjects", "DeleteObject") else \
        f"grant {'it' if len(pairs) == 1 else 'them'} to these credentials"
    note = note.format(bucket_arn=bucket_arn(bucket)) if not named else ""
    return (f"{wanted} {verb} needed {why}{note}; {fix} "
            "(`airflow-fuse iam-policy --mode MODE TABLE` prints the least-privilege policy)")
