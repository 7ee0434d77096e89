"""Trigger behind ``VersioningSensor(deferrable=True)``: polls the versioning state with an async client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_fuse.errors import redact
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook


class VersioningTrigger(BaseTrigger):
    """
    Fire when the bucket's versioning is Enabled; fire an error event when it was never enabled.

    :param bucket_name: The bucket to watch.
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoint.
    :param poke_interval: Seconds between two checks.
    """

    def __init__(self, *, bucket_name: str, aws_conn_id: str | None = "aws_default", poke_interval: float = 60.0):
        super().__init__()
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_fuse.triggers.versioning.VersioningTrigger",
            {"bucket_name": self.bucket_name, "aws_conn_id": self.aws_conn_id, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = VersionedS3Hook(aws_conn_id=self.aws_conn_id)
        try:
            async with await hook.get_async_conn() as client:
                while True:
                    response = await client.get_bucket_versioning(Bucket=self.bucket_name)
                    status = response.get("Status") or "Disabled"
                    if status == "Enabled":
                        yield TriggerEvent({"status": "success", "versioning": status})
                        return
                    if status == "Disabled":
                        yield TriggerEvent({"status": "error", "versioning": status})
                        return
                    self.log.info(
                        "Versioning of bucket %s is Suspended; waiting %ss for it to be Enabled",
                        self.bucket_name, self.poke_interval,
                    )
                    await asyncio.sleep(self.poke_interval)
        except Exception as exc:  # the event carries the message back to the worker
            yield TriggerEvent({"status": "error", "message": redact(f"{type(exc).__name__}: {exc}")})
