"""Bucket versioning state and what shrinks the recovery window (lifecycle rules, Object Lock)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from botocore.exceptions import ClientError

from airflow_fuse.errors import PreconditionError
from airflow_fuse.s3 import error_code, explain

log = logging.getLogger(__name__)
VersioningStatus = Literal["Enabled", "Suspended", "Disabled"]

ENABLE_HINT = (
    "enable it with `aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration "
    "Status=Enabled` (or the console); objects deleted before that cannot be brought back, "
    "objects deleted after it can"
)


def get_versioning_status(client: Any, bucket: str) -> VersioningStatus:
    """``Enabled``, ``Suspended`` or ``Disabled`` (versioning was never enabled on this bucket)."""
    response = client.get_bucket_versioning(Bucket=bucket)
    status = response.get("Status")
    if status in ("Enabled", "Suspended"):
        return status
    return "Disabled"


SUSPENDED_WRITE_REFUSAL = (
    "versioning of bucket {bucket!r} is Suspended: a restore writes nothing while it is. With versioning "
    "Suspended, a write replaces the key's 'null' version instead of adding one, so a copy or a removed delete "
    "marker could destroy data written since the scan. Enable it again with `aws s3api put-bucket-versioning "
    "--bucket {bucket} --versioning-configuration Status=Enabled`, then run again (scans and dry runs work "
    "while Suspended)"
)


def check_versioning(client: Any, bucket: str, *, where: str = "", conn_id: str | None = None,
                     for_write: bool = False) -> VersioningStatus:
    """The bucket's versioning status, refused with a message saying what to do when recovery cannot work.

    Never enabled: nothing can be recovered (refused always). Suspended: scans work (older versions are still
    there), but ``for_write`` refuses: only an Enabled bucket keeps every write as a new version.
    """
    try:
        status = get_versioning_status(client, bucket)
    except Exception as exc:
        raise explain(exc, bucket=bucket, client=client, conn_id=conn_id,
                      action="read the versioning status of") from None
    if status == "Disabled":
        raise PreconditionError(
            f"versioning was never enabled on bucket {bucket!r}: no older versions exist, so nothing "
            f"under {where or 's3://' + bucket + '/'} can be restored. {ENABLE_HINT.format(bucket=bucket)}")
    if status == "Suspended":
        if for_write:
            raise PreconditionError(SUSPENDED_WRITE_REFUSAL.format(bucket=bucket))
        log.warning("Versioning of bucket %s is Suspended: objects written while suspended have only a 'null' "
                    "version and may be unrecoverable; a restore will refuse to write until it is Enabled", bucket)
    return status


def _rule_applies(rule: dict, prefix: str) -> bool:
    if rule.get("Status") != "Enabled":
        return False
    rule_filter = rule.get("Filter") or {}
    rule_prefix = rule_filter.get("Prefix")
    if rule_prefix is None and "And" in rule_filter:
        rule_prefix = rule_filter["And"].get("Prefix")
    if rule_prefix is None:
        rule_prefix = rule.get("Prefix", "")
    rule_prefix = rule_prefix or ""
    # The rule touches the table when either prefix contains the other.
    return prefix.startswith(rule_prefix) or rule_prefix.startswith(prefix)


def get_recovery_risks(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Plain-language warnings about settings that shrink or shape the recovery window."""
    risks: list[str] = []
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if error_code(exc) not in ("NoSuchLifecycleConfiguration", "NotImplemented"):
            raise
        rules = []
    for rule in rules:
        if not _rule_applies(rule, prefix):
            continue
        name = rule.get("ID") or "(unnamed)"
        noncurrent = rule.get("NoncurrentVersionExpiration") or {}
        if noncurrent:
            days = noncurrent.get("NoncurrentDays")
            keep = noncurrent.get("NewerNoncurrentVersions")
            text = f"lifecycle rule {name!r} permanently deletes noncurrent versions"
            if days is not None:
                text += f" {days} day(s) after they become noncurrent"
            if keep:
                text += f" (keeping the newest {keep})"
            risks.append(text + ": deleted objects are recoverable only inside that window; act quickly")
        expiration = rule.get("Expiration") or {}
        if expiration.get("ExpiredObjectDeleteMarker"):
            risks.append(
                f"lifecycle rule {name!r} removes expired delete markers: once a deleted object's older "
                "versions expire its marker goes too, and nothing is left to find"
            )
        if expiration.get("Days") or expiration.get("Date"):
            risks.append(
                f"lifecycle rule {name!r} expires current objects (adds delete markers) under this prefix: "
                "the scan will see those as deletions; narrow it with deleted_since/deleted_before"
            )
        if rule.get("Transitions") or rule.get("NoncurrentVersionTransitions"):
            risks.append(
                f"lifecycle rule {name!r} moves versions to another storage class: archived versions "
                "(Glacier, Deep Archive) must be restored before they can be copied back"
            )
    try:
        lock = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration", {})
    except ClientError as exc:
        if error_code(exc) not in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration",
                                   "NotImplemented", "InvalidRequest"):
            raise
        lock = {}
    if lock.get("ObjectLockEnabled") == "Enabled":
        retention = (lock.get("Rule") or {}).get("DefaultRetention") or {}
        mode = retention.get("Mode")
        text = "Object Lock is enabled on this bucket"
        if mode:
            text += f" (default retention {mode})"
        risks.append(
            text + ": versions cannot be deleted while retained, which protects old data; restores that "
            "remove delete markers may be refused, and airflow-fuse then copies the version instead"
        )
    return risks
