"""A scan spread over the executor's workers: split the key space, list each range as a mapped task.

::

    ranges = FuseKeyRangesOperator(task_id="split", table="s3://lake/big/", shards=32)
    shards = FuseInventoryShardOperator.partial(task_id="list", table="s3://lake/big/",
                                                shard_location="s3://ops/shards/{{ run_id }}/"
                                                ).expand(key_range=ranges.output)
    scan = FuseScanOperator(task_id="scan", table="s3://lake/big/", inventory_shards=shards.output,
                            plan_uri="s3://ops/plans/{{ run_id }}.parquet")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_fuse.errors import FuseError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.inventory_shards import split_key_space, write_shard
from airflow_fuse.location import parse_table_uri
from airflow_fuse.operators.scan import fail_with
from airflow_fuse.progress import LogProgress


class FuseKeyRangesOperator(BaseOperator):
    """
    Cut a table's key space into key ranges, one per inventory shard (writes nothing).

    Returns a list of ranges (``index``, ``count``, ``after``, ``end``): expand
    ``FuseInventoryShardOperator`` over it.

    :param table: The table location, ``s3://bucket/prefix/`` (templated).
    :param shards: How many ranges at most (a small table is one range).
    :param page_size: Entries per listing request (S3's maximum, 1000, unless a server needs fewer).
    :param allow_bucket_root: Allow a table that is a whole bucket.
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoint.
    """

    template_fields: Sequence[str] = ("table", "aws_conn_id")
    ui_color = "#e0ecf8"

    def __init__(self, *, table: str, shards: int = 16, page_size: int = 1000, allow_bucket_root: bool = False,
                 aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.shards = shards
        self.page_size = page_size
        self.allow_bucket_root = allow_bucket_root
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        try:
            location = parse_table_uri(self.table, allow_bucket_root=self.allow_bucket_root)
            ranges = split_key_space(client, location.bucket, location.prefix, int(self.shards),
                                     page_size=int(self.page_size))
        except FuseError as exc:
            raise fail_with(exc) from None
        self.log.info("%s cut into %d key ranges", location.uri, len(ranges))
        return [r.as_dict() for r in ranges]


class FuseInventoryShardOperator(BaseOperator):
    """
    List one key range of a table into an inventory shard (a Parquet file); writes nothing to the table.

    Map it over ``FuseKeyRangesOperator``'s ranges with ``.partial(...).expand(key_range=...)``; give the mapped
    task's output to ``FuseScanOperator(inventory_shards=...)``, which checks the shards cover the key space
    exactly. Running a shard again overwrites its file. Returns the shard's location and counts.

    :param table: The table location, ``s3://bucket/prefix/`` (templated).
    :param key_range: One range from ``FuseKeyRangesOperator``.
    :param shard_location: The folder to write the shard to, local or ``s3://``, outside the table (templated);
        one folder per run, e.g. ``s3://ops/shards/{{ run_id }}/``.
    :param page_size: Entries per listing request (S3's maximum, 1000, unless a server needs fewer).
    :param allow_bucket_root: Allow a table that is a whole bucket.
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoint.
    """

    template_fields: Sequence[str] = ("table", "key_range", "shard_location", "aws_conn_id")
    ui_color = "#e0ecf8"

    def __init__(self, *, table: str, key_range: Any, shard_location: str, page_size: int = 1000,
                 allow_bucket_root: bool = False, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.page_size = page_size
        self.table = table
        self.key_range = key_range
        self.shard_location = shard_location
        self.allow_bucket_root = allow_bucket_root
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        client = VersionedS3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        progress = LogProgress(self.log)
        try:
            summary = write_shard(client, self.table, self.key_range, self.shard_location,
                                  allow_bucket_root=self.allow_bucket_root, page_size=int(self.page_size),
                                  on_page=progress.page)
        except FuseError as exc:
            raise fail_with(exc) from None
        self.log.info("Shard %d of %d: %d keys, %d entries in %d pages, saved to %s", summary["index"],
                      summary["count"], summary["keys"], summary["entries"], summary["pages"], summary["shard"])
        return summary
