"""``VersionedS3Hook``: an ``S3Hook`` with the calls a restore from object versions needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.config import Config

from airflow_fuse import listing, versioning
from airflow_fuse.errors import FuseError
from airflow_fuse.location import check_bucket_name
from airflow_fuse.s3 import CLIENT_CONFIG, explain, use_fast_timestamps


class VersionedS3Hook(S3Hook):
    """
    S3 hook for versioned buckets: versioning state, recovery risks and a streaming version walk.

    Connection handling (``aws_conn_id``, ``endpoint_url`` in the extra, region, credentials) is the
    amazon provider's. The client retries adaptively (throttling) unless the connection's
    ``config_kwargs`` say otherwise.

    :param str aws_conn_id: The Airflow connection used for AWS credentials and endpoint.
    """

    hook_name = "Versioned S3 (airflow-fuse)"

    @property
    def config(self) -> Config:
        """Adaptive retries, bounded timeouts and a connection pool, with the connection's ``config_kwargs`` on
        top: a connection that sets only ``read_timeout`` keeps our retry and pool settings."""
        own = self.conn_config.botocore_config
        return CLIENT_CONFIG.merge(own) if own is not None else CLIENT_CONFIG

    def get_session(self, region_name: str | None = None, deferrable: bool = False) -> Any:
        """The provider's session; its clients parse listing timestamps fast (see ``s3.parse_timestamp``)."""
        session = super().get_session(region_name=region_name, deferrable=deferrable)
        if not deferrable:
            use_fast_timestamps(getattr(session, "_session", None))
        return session

    def _explain(self, exc: Exception, bucket: str, action: str) -> FuseError:
        return explain(exc, bucket=bucket, client=self.get_conn(), conn_id=self.aws_conn_id, action=action)

    def get_versioning_status(self, bucket: str) -> versioning.VersioningStatus:
        """``"Enabled"``, ``"Suspended"`` or ``"Disabled"`` (never enabled)."""
        check_bucket_name(bucket)
        try:
            return versioning.get_versioning_status(self.get_conn(), bucket)
        except Exception as exc:
            raise self._explain(exc, bucket, "read the versioning status of") from None

    def get_recovery_risks(self, bucket: str, prefix: str = "") -> list[str]:
        """Warnings about lifecycle rules and Object Lock that shrink or shape the recovery window."""
        check_bucket_name(bucket)
        try:
            return versioning.get_recovery_risks(self.get_conn(), bucket, prefix)
        except Exception as exc:
            raise self._explain(exc, bucket, "read the lifecycle and Object Lock settings of") from None

    def iter_object_versions(self, bucket: str, prefix: str = "") -> Iterator[listing.VersionEntry]:
        """Every version and delete marker under ``prefix``, per key newest first, streamed page by page."""
        check_bucket_name(bucket)
        try:
            yield from listing.iter_object_versions(self.get_conn(), bucket, prefix)
        except Exception as exc:
            raise self._explain(exc, bucket, "list object versions in") from None
