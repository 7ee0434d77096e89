"""``VersioningSensor``: wait until a bucket's versioning is Enabled (recovery is impossible otherwise)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fuse.errors import FuseError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.triggers.versioning import VersioningTrigger
from airflow_fuse.versioning import ENABLE_HINT


def never_enabled_message(bucket: str) -> str:
    return (
        f"versioning was never enabled on bucket {bucket!r}: no older versions exist, so deleted objects "
        f"cannot be recovered from it. To protect the future, {ENABLE_HINT.format(bucket=bucket)}"
    )


SUSPENDED_NOTE = (
    "versioning of bucket %s is Suspended: objects written or deleted while suspended have only a "
    "'null' version (each write replaces it), so they may not be recoverable; waiting for Enabled"
)


class VersioningSensor(BaseSensorOperator):
    """
    Wait until the bucket's versioning is Enabled; fail at once when it was never enabled.

    Returns ``{"bucket", "versioning", "risks"}``; the risks (lifecycle rules that expire old versions,
    Object Lock) are logged as warnings too.

    :param bucket_name: The bucket holding the table (templated).
    :param prefix: Only lifecycle rules touching this prefix are reported (templated).
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoint.
    :param deferrable: Hand the waiting to the triggerer (default ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("bucket_name", "prefix", "aws_conn_id")
    ui_color = "#d8f0e0"

    def __init__(
        self,
        *,
        bucket_name: str,
        prefix: str = "",
        aws_conn_id: str | None = "aws_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bucket_name = bucket_name
        self.prefix = prefix
        self.aws_conn_id = aws_conn_id
        self.deferrable = deferrable

    @property
    def hook(self) -> VersionedS3Hook:
        return VersionedS3Hook(aws_conn_id=self.aws_conn_id)

    def _status(self) -> str:
        try:
            status = self.hook.get_versioning_status(self.bucket_name)
        except FuseError as exc:
            raise AirflowFailException(str(exc)) from None
        if status == "Disabled":
            raise AirflowFailException(never_enabled_message(self.bucket_name))
        if status == "Suspended":
            self.log.warning(SUSPENDED_NOTE, self.bucket_name)
        return status

    def _result(self, status: str) -> dict[str, Any]:
        try:
            risks = self.hook.get_recovery_risks(self.bucket_name, self.prefix)
        except FuseError as exc:
            risks = [f"could not read lifecycle / Object Lock settings: {exc}"]
        for risk in risks:
            self.log.warning("Recovery risk on bucket %s: %s", self.bucket_name, risk)
        self.log.info("Versioning of bucket %s is %s", self.bucket_name, status)
        return {"bucket": self.bucket_name, "versioning": status, "risks": risks}

    def poke(self, context: Context) -> PokeReturnValue:
        status = self._status()
        if status != "Enabled":
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._result(status))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # Poke once: most of the time versioning is already on and there is nothing to wait for.
        status = self._status()
        if status == "Enabled":
            return self._result(status)
        self.defer(
            trigger=VersioningTrigger(
                bucket_name=self.bucket_name, aws_conn_id=self.aws_conn_id, poke_interval=self.poke_interval
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if not event:
            raise AirflowException(f"the versioning trigger for bucket {self.bucket_name!r} returned no event")
        if event.get("status") == "success":
            return self._result(event.get("versioning", "Enabled"))
        if event.get("versioning") == "Disabled":
            raise AirflowFailException(never_enabled_message(self.bucket_name))
        raise AirflowException(
            f"checking versioning of bucket {self.bucket_name!r} failed: {event.get('message', event)}"
        )
