"""``airflow-fuse shard`` and ``airflow-fuse merge-reports``: a plan cut into shards, their reports merged.

``shard`` prints one line per shard (``--json``: the manifest's entries), each a plan that ``amend --plan`` applies
as it is, on any machine; ``merge-reports`` merges the reports they saved and exits with the merged status.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from airflow_fuse.errors import FuseError
from airflow_fuse.plan import open_plan, parse_max_plan_age, parse_plan_digest
from airflow_fuse.shards import (
    DEFAULT_SHARD_KEYS,
    MAX_SHARDS,
    merge_reports,
    save_merged,
    save_shards,
    shard_count,
)


def add_parsers(sub: Any, common: Any) -> None:
    shard = sub.add_parser("shard", help="cut a saved plan into shards by key range, saved beside it",
                           description="Cut a saved plan into shards by key range, balanced by keys and bytes to "
                                       "restore, saved beside it (<plan>.shard-0001-of-000N.parquet, and "
                                       "<plan>.shards.json). Each shard is a plan: apply each with "
                                       "`airflow-fuse amend --plan SHARD --plan-digest HEX`, on any machine, in "
                                       "any order, at once; each re-checks only its own key range.")
    shard.add_argument("--plan", required=True, help="the saved plan (.parquet or .json; local path or s3://)")
    size = shard.add_mutually_exclusive_group()
    size.add_argument("--shards", type=int, metavar="N", help=f"cut into N shards (1-{MAX_SHARDS})")
    size.add_argument("--shard-keys", type=int, metavar="K", default=DEFAULT_SHARD_KEYS,
                      help=f"one shard per K keys to restore (default {DEFAULT_SHARD_KEYS})")
    shard.add_argument("--plan-digest", metavar="HEX", help="cut the plan only if its digest is HEX")
    shard.add_argument("--max-plan-age", metavar="AGE", default="24h",
                       help="refuse a plan whose listing is older than AGE (default 24h; 'none': any age)")
    shard.add_argument("--report", metavar="URI", help="name each shard's report after this one "
                                                       "(<report>.shard-0001-of-000N.parquet) in the output")
    shard.add_argument("--json", action="store_true", help="print the shards as a JSON list")
    common(shard)
    merge = sub.add_parser("merge-reports", help="merge the reports the shards of one plan saved",
                           description="Merge the reports the shards saved into one (counts, failures, exit "
                                       "status: 3 unrecoverable, 1 failed, 0 every object present); `undo "
                                       "--report` reads the merged report.")
    merge.add_argument("reports", nargs="+", help="the shards' reports")
    merge.add_argument("--report", help="save the merged report here (.parquet or .json)")
    merge.add_argument("--json", action="store_true", help="print the merged summary as one JSON object")
    common(merge)


def _needs_client(*uris: str | None) -> bool:
    return any(uri and uri.startswith("s3://") for uri in uris)


def run_shard(args: argparse.Namespace, client_for: Any) -> int:
    try:
        client = client_for(args) if _needs_client(args.plan, args.report) else None
        plan = open_plan(args.plan, client=client, max_age=parse_max_plan_age(args.max_plan_age),
                         digest=parse_plan_digest(args.plan_digest))
        count = args.shards if args.shards is not None else shard_count(plan, shard_keys=args.shard_keys)
        entries = save_shards(plan, args.plan, count, client=client, report_uri=args.report)
    except FuseError as exc:
        print(f"airflow-fuse: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(entries))
    else:
        for entry in entries:
            print(f"{entry['plan']}  --plan-digest {entry['plan_digest']}"
                  + (f"  --report {entry['report_uri']}" if entry.get("report_uri") else ""))
    return 0


def run_merge(args: argparse.Namespace, client_for: Any) -> int:
    try:
        client = client_for(args) if _needs_client(args.report, *args.reports) else None
        merged = merge_reports([{"report_uri": uri} for uri in args.reports], client=client)
        if args.report:
            save_merged(merged, args.report, client=client)
    except FuseError as exc:
        print(f"airflow-fuse: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(merged.summary, default=str) if args.json else merged.render())
    return merged.exit_status()
