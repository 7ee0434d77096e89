"""Shards in a DAG: ``FuseShardOperator`` cuts a saved plan into shards, ``FuseAmendOperator`` applies each on its own
worker (``.partial(...).expand_kwargs(shard.output)``), ``FuseMergeReportsOperator`` merges their reports.

::

    shard = FuseShardOperator(task_id="shard", plan=PLAN, plan_digest=DIGEST, report_uri=REPORT)
    amend = FuseAmendOperator.partial(task_id="amend", map_index_template=SHARD_NAME).expand_kwargs(shard.output)
    merge = FuseMergeReportsOperator(task_id="report", shards=shard.output, plan=PLAN, plan_digest=DIGEST,
                                     report_uri=REPORT)
    shard >> amend >> merge
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fuse.errors import EXIT_ERROR, EXIT_UNRECOVERABLE, FuseError
from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook
from airflow_fuse.operators.scan import fail_with
from airflow_fuse.plan import open_plan, parse_max_plan_age, parse_plan_digest
from airflow_fuse.shards import DEFAULT_SHARD_KEYS, MAX_SHARDS, merge_reports, save_merged, save_shards, shard_count

# map_index_template for the mapped FuseAmendOperator: the shard's name and range once it ran (its file name before)
SHARD_NAME = "{{ fuse_shard | default(task.plan.rsplit('/', 1)[-1]) }}"
# the same over the shards of several tables: the table, then the shard
TABLE_SHARD_NAME = "{{ fuse_table | default(task.plan) }}{{ (' ' ~ fuse_shard) if fuse_shard is defined else '' }}"


def _client(aws_conn_id: str | None, *uris: Any) -> Any:
    if any(isinstance(uri, str) and uri.startswith("s3://") for uri in uris):
        return VersionedS3Hook(aws_conn_id=aws_conn_id).get_conn()
    return None


class FuseShardOperator(BaseOperator):
    """
    Cut a saved plan into shards by key range (one per ``shard_keys`` keys to restore), saved beside it.

    Returns one entry per shard, the keyword arguments of ``FuseAmendOperator`` that apply it (``plan``,
    ``plan_digest``, ``report_uri``): expand the amend over them. A plan with at most ``shard_keys`` keys to restore
    is one shard: the plan itself (nothing is written).

    :param plan: The saved plan (templated).
    :param plan_digest: Cut the plan only if its digest is this one (templated): the digest that was reviewed.
    :param max_plan_age: Refuse a plan whose listing is older than this (see ``FuseAmendOperator``).
    :param shard_keys: Keys to restore per shard (templated; default 200,000).
    :param max_shards: At most this many shards (templated).
    :param report_uri: The merged report's location; each shard's report is saved beside it (templated).
    """

    template_fields: Sequence[str] = ("plan", "plan_digest", "max_plan_age", "shard_keys", "max_shards", "report_uri",
                                      "aws_conn_id")
    ui_color = "#f0e0f8"

    def __init__(self, *, plan: str, plan_digest: str | None = None,
                 max_plan_age: float | str | timedelta | None = "24h",
                 shard_keys: int | str = DEFAULT_SHARD_KEYS, max_shards: int | str = 64,
                 report_uri: str | None = None, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.plan_digest = plan_digest
        self.max_plan_age = max_plan_age
        self.shard_keys = shard_keys
        self.max_shards = max_shards
        self.report_uri = report_uri
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        try:
            client = _client(self.aws_conn_id, self.plan, self.report_uri)
            plan = open_plan(self.plan, client=client, max_age=parse_max_plan_age(self.max_plan_age),
                             digest=parse_plan_digest(self.plan_digest or None))
            count = shard_count(plan, shard_keys=int(self.shard_keys), max_shards=min(int(self.max_shards),
                                                                                        MAX_SHARDS))
            entries = save_shards(plan, self.plan, count, client=client, report_uri=self.report_uri or None)
        except (FuseError, ValueError) as exc:
            raise fail_with(exc) if isinstance(exc, FuseError) else AirflowFailException(str(exc)) from None
        if len(entries) == 1:
            self.log.info("%d keys to restore, at most %s per shard: the plan %s is applied whole",
                          plan.actionable_count(), self.shard_keys, self.plan)
        else:
            self.log.info("%d keys to restore (%d bytes) cut into %d shards of about %s keys by key range:\n%s",
                          plan.actionable_count(), plan.bytes_to_restore(), len(entries), self.shard_keys,
                          "\n".join(f"  {e['plan']}" for e in entries))
        return entries


class FuseMergeReportsOperator(BaseOperator):
    """
    Merge the reports of a plan's shards into one report; fail if any shard did not restore all its keys.

    Run it with ``trigger_rule="all_done"`` after the mapped amend: it reads each shard's saved report (a shard that
    failed saved one too; one that never finished is named), saves the merged report to ``report_uri`` and returns
    its summary (counts, failures, ``exit_status``, ``shards_not_done``).

    :param shards: ``FuseShardOperator``'s output (the entries the amend was expanded over).
    :param plan: The whole plan (named in the report), ``plan_digest`` its digest (templated).
    :param report_uri: Where the merged report is saved (templated); ``airflow-fuse undo --report`` reads it.
    :param fail_on_unrecoverable: Fail when objects remain that cannot be recovered (default True).
    """

    template_fields: Sequence[str] = ("shards", "plan", "plan_digest", "report_uri", "aws_conn_id")
    ui_color = "#f0e0f8"

    def __init__(self, *, shards: Any, plan: str | None = None, plan_digest: str | None = None,
                 report_uri: str | None = None, fail_on_unrecoverable: bool = True,
                 aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.shards = shards
        self.plan = plan
        self.plan_digest = plan_digest
        self.report_uri = report_uri
        self.fail_on_unrecoverable = fail_on_unrecoverable
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        shards = list(self.shards or [])
        try:
            client = _client(self.aws_conn_id, self.report_uri, *(s.get("report_uri") for s in shards))
            merged = merge_reports(shards, client=client, plan_uri=self.plan or None,
                                   plan_digest=self.plan_digest or None)
            if self.report_uri and [s.get("report_uri") for s in shards] != [self.report_uri]:
                save_merged(merged, self.report_uri, client=client)
            else:
                merged.summary["report"] = self.report_uri or None
        except FuseError as exc:
            raise fail_with(exc) from None
        self.log.info("\n%s", merged.render())
        summary = merged.summary
        status = merged.exit_status()
        if status == EXIT_UNRECOVERABLE and self.fail_on_unrecoverable:
            raise AirflowFailException(
                f"{summary['unrecoverable']} objects {summary['table']} needs cannot be recovered: "
                + "; ".join(f"{u['key']}: {u['reason']}" for u in summary["first_unrecoverable"][:3]))
        if summary.get("held_back") and summary["restore"] + summary["damaged"]:
            raise AirflowFailException(
                f"{summary['restore'] + summary['damaged']} objects of {summary['table']} are deleted or damaged and "
                "were only reported: its metadata does not say which objects it needs (see FuseAmendOperator's "
                "referenced_only)")
        if status == EXIT_ERROR or summary["shards_not_done"]:
            not_done = summary["shards_not_done"]
            raise AirflowException(
                f"{summary['remaining']} objects of {summary['table']} were not restored by {len(not_done)} of "
                f"{summary['shards']} shards ({'; '.join(not_done)}); running the failed shards again is safe, each "
                "re-checks its keys: "
                + "; ".join(f"{f['key']}: {f['detail']}" for f in summary["first_failures"][:3]))
        return summary
