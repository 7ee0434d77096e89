"""``airflow-fuse``: the break-glass command line. Same stages as the operators; no running Airflow needed.

Exit statuses: ``airflow_fuse.errors.EXIT_STATUSES`` (0 nothing to restore, 1 keys failed or changed since the
scan, 2 bad input or precondition, 3 unrecoverable objects remain, 4 a scan or dry run found objects to restore).
``undo``: 0 = no key failed, 1 = a key failed. ``verify``: 0 = the table reads whole, 1 = it does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, NoReturn

from airflow_fuse import __version__, cli_shards, databend, formats
from airflow_fuse.engine import FORMATS, AmendOptions, ScanOptions, amend, scan_report
from airflow_fuse.errors import EXIT_STATUSES, BadInputError, FuseError, redact
from airflow_fuse.progress import TerminalProgress
from airflow_fuse.restore import STRATEGIES


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", nargs="?", help="the table location, s3://BUCKET/PREFIX/ (or name a Databend "
                                                 "table with --database and --table)")
    parser.add_argument("--database", help="databend: the table's database, as in SYSTEM$FUSE_AMEND('db', 't')")
    parser.add_argument("--table", dest="table_name", help="databend: the table's name (with --database)")
    parser.add_argument("--databend-dsn", help="databend: the server to ask where the table is, "
                                               "databend://USER:PASSWORD@HOST:8000/?sslmode=disable")
    parser.add_argument("--storage-root", help="databend: the deployment's storage root s3://BUCKET/ROOT/, for "
                                               "tables without their own LOCATION")
    parser.add_argument("--format", dest="table_format", choices=FORMATS, default="auto",
                        help="table layout (default: detect; 'fuse' for Databend tables, 'prefix' for any prefix)")
    parser.add_argument("--as-of", help="bring keys back to the versions current at this time (ISO 8601 with zone)")
    parser.add_argument("--deleted-since", help="only delete markers created at or after this time count")
    parser.add_argument("--deleted-before", help="only delete markers created before this time count")
    parser.add_argument("--rollback-overwrites", action="store_true",
                        help="with --as-of, also roll back keys overwritten after that time (pointer files excepted)")
    parser.add_argument("--rollback-key", action="append", default=[], dest="rollback_keys", metavar="KEY",
                        help="with --as-of, roll back this key even if it is a pointer file (repeatable)")
    parser.add_argument("--table-prefix", help="fuse: amend only this table (<db_id>/<table_id>, e.g. 1/6)")
    parser.add_argument("--snapshot-location", help="fuse: the current snapshot, as SHOW CREATE TABLE prints it")
    parser.add_argument("--include-history", action="store_true",
                        help="fuse: also restore the chain of previous snapshots (time travel)")
    parser.add_argument("--allow-bucket-root", action="store_true", help="allow a table that is a whole bucket")
    parser.add_argument("--layout-option", action="append", default=[], dest="layout_options", metavar="KEY=VALUE",
                        type=_layout_option,
                        help="an option of the table format (repeatable), e.g. iceberg: metadata_location=s3://…, "
                             "current_snapshot_only=true; each format's options: "
                             + "; ".join(f"{name}: {', '.join(formats.get(name).options) or 'none'}"
                                         for name in formats.names(with_auto=False)))
    parser.add_argument("--inventory-manifest", metavar="S3_URI",
                        help="read the table's versions from this S3 Inventory report (s3://…/manifest.json of an "
                             "inventory with all versions) instead of listing the table; the restore still "
                             "re-checks every key it writes")
    parser.add_argument("--inventory-shards", action="append", default=[], metavar="LOCATION",
                        help="read the table's versions from inventory shards (FuseInventoryShardOperator's "
                             "files, or the folder holding them; repeatable) instead of listing the table")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    _common(parser)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: AWS, or $AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="AWS region (default: $AWS_DEFAULT_REGION or us-east-1)")
    parser.add_argument("--aws-conn-id", help="use this Airflow connection instead of the AWS credential chain")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every stage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-fuse",
        description="Bring back a table's lost objects from older versions in a versioned S3 bucket.",
        epilog="exit status: " + "; ".join(f"{code} {text}" for code, text in EXIT_STATUSES.items()),
    )
    parser.add_argument("--version", action="version", version=f"airflow-fuse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", help="find what is missing or damaged and plan the restore (writes nothing)")
    _selection(scan)
    scan.add_argument("--plan-out", help="save the plan (.json or .parquet; local path or s3://)")
    am = sub.add_parser("amend", help="restore the table's missing and damaged objects")
    _selection(am)
    am.add_argument("--plan", help="apply this saved plan instead of scanning; it is refused unless it is for TABLE, "
                                   "unchanged since the scan (its digest is checked) and recent (--max-plan-age)")
    am.add_argument("--plan-digest", metavar="HEX",
                    help="with --plan: apply it only if its sha256 digest is HEX (the plan_digest the scan printed)")
    am.add_argument("--max-plan-age", metavar="AGE", default="24h",
                    help="with --plan: refuse a plan whose listing is older than AGE, in hours (36) or as 90m, 24h, "
                         "2d (default 24h); 'none' applies a plan whatever its age")
    am.add_argument("--plan-out", help="save the plan (the undo manifest) here before changing anything")
    am.add_argument("--strategy", choices=STRATEGIES, default="auto",
                    help="auto: remove delete markers, copy where needed (default); undelete: markers only; "
                         "copy: server-side copy of each version")
    am.add_argument("--dry-run", action="store_true", help="show what would be done; write nothing")
    am.add_argument("--workers", type=int, default=16, help="parallel requests (default 16)")
    am.add_argument("--report", help="save the full report (.json or .parquet; local path or s3://)")
    _undo_and_verify_parsers(sub)
    cli_shards.add_parsers(sub, _common)
    pol = sub.add_parser("iam-policy", help="print the least-privilege IAM policy a mode needs on a table")
    pol.add_argument("table", help="the table location, s3://BUCKET/PREFIX/")
    pol.add_argument("--mode", choices=("scan", "undelete", "copy", "auto", "sensor"), required=True,
                     help="scan; amend with strategy undelete, copy or auto; the VersioningSensor")
    pol.add_argument("--ops-location", help="where plans and reports are saved (s3://BUCKET/PREFIX/)")
    pol.add_argument("--server", choices=("aws", "ceph"), default="aws",
                     help="ceph adds what Ceph RGW 16 needs besides (see docs/iam.md)")
    pol.add_argument("--principal", help="print bucket policies granting this ARN, one per bucket, instead")
    return parser


def _iam_policy(args: argparse.Namespace) -> int:
    from airflow_fuse import iam

    try:
        document: Any = (
            iam.bucket_policies(args.mode, args.table, args.principal, ops_location=args.ops_location,
                                server=args.server) if args.principal
            else iam.policy(args.mode, args.table, ops_location=args.ops_location, server=args.server))
    except FuseError as exc:
        print(f"airflow-fuse: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(document, indent=2))
    return 0


def _undo_and_verify_parsers(sub: Any) -> None:
    undo = sub.add_parser("undo", help="put back what a restore changed, from the report it saved",
                          description="Put a delete marker back on each key the restore undeleted (if the "
                                      "restored version is still current) and delete each copy the restore made "
                                      "(if it is still current and holds its source's bytes). Never removes a "
                                      "version that existed before the restore. Exit 0 when nothing failed.")
    undo.add_argument("--report", required=True, help="the report the restore saved (amend --report; .json or "
                                                      ".parquet; local path or s3://)")
    undo.add_argument("--dry-run", action="store_true", help="show what would be undone; write nothing")
    undo.add_argument("--undo-report", help="save the undo's own report (.json or .parquet; local path or s3://)")
    undo.add_argument("--workers", type=int, default=16, help="parallel requests (default 16)")
    undo.add_argument("--json", action="store_true", help="print the undo summary as one JSON object")
    _common(undo)
    verify = sub.add_parser("verify", help="check that the table reads whole (exit 0) or not (exit 1)",
                            description="Read every data file the table needs (Parquet footers, row counts "
                                        "against the metadata). Exit 0: the table reads whole; 1: it does not "
                                        "(the first problems are printed); 2: bad input or precondition.")
    _selection(verify)
    verify.add_argument("--expect-row-count", type=int, metavar="N", help="the table must hold N rows")
    verify.add_argument("--expect", action="append", default=[], metavar="EXPR=VALUE",
                        help="an aggregate the data must give, e.g. 'sum(a)=4498500' or 'max(b)=row999' "
                             "(repeatable; the value is read as JSON, else as text; reads every file in full)")
    verify.add_argument("--full-read", action="store_true", help="read every data file in full, not just its footer")


def _client(args: argparse.Namespace) -> Any:
    if args.aws_conn_id:
        from airflow_fuse.hooks.versioned_s3 import VersionedS3Hook

        return VersionedS3Hook(aws_conn_id=args.aws_conn_id, region_name=args.region).get_conn()
    from airflow_fuse.s3 import make_client

    return make_client(endpoint_url=args.endpoint_url, region=args.region,
                       max_pool_connections=max(64, getattr(args, "workers", 16) + 8))


class _RedactingFormatter(logging.Formatter):
    """Log lines (tracebacks included) with credentials in URLs redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _scan_options(args: argparse.Namespace) -> ScanOptions:
    return ScanOptions(
        table_format=args.table_format, as_of=args.as_of, deleted_since=args.deleted_since,
        deleted_before=args.deleted_before, rollback_overwrites=args.rollback_overwrites,
        rollback_keys=args.rollback_keys, allow_bucket_root=args.allow_bucket_root, table_prefix=args.table_prefix,
        snapshot_location=args.snapshot_location, include_history=args.include_history,
        layout_options=dict(args.layout_options),
        inventory_manifest=getattr(args, "inventory_manifest", None) or None,
        inventory_shards=_shards_arg(getattr(args, "inventory_shards", None)),
    )


def _shards_arg(values: list[str] | None) -> list[str] | str | None:
    """One location (a folder or a file) as given; several as a list of shard files."""
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _layout_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value is read as JSON when it is JSON (true, 3, "x"), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. metadata_location=s3://…/v3.metadata.json)")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "iam-policy":
        return _iam_policy(args)
    handler = logging.StreamHandler()
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler])
    if args.verbose:
        for noisy in ("botocore", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.INFO)
    if args.command == "shard":
        return cli_shards.run_shard(args, _client)
    if args.command == "merge-reports":
        return cli_shards.run_merge(args, _client)
    if args.command in ("undo", "verify"):
        return _run_undo(args) if args.command == "undo" else _run_verify(args)
    progress = TerminalProgress(sys.stderr)
    options = _scan_options(args)
    named = None
    try:
        named = _databend_table(args, options)
        client = _client(args)
        if args.command == "scan":
            report = scan_report(client, args.table, options, conn_id=args.aws_conn_id, plan_uri=args.plan_out,
                                 on_page=progress.page)
        else:
            # With --plan, the engine applies it only if it is for args.table (and whole, pinned, recent).
            report = amend(
                client, table=args.table, plan=args.plan or None, scan_options=options, conn_id=args.aws_conn_id,
                options=AmendOptions(strategy=args.strategy, dry_run=args.dry_run, max_workers=args.workers,
                                     plan_uri=args.plan_out, report_uri=args.report,
                                     max_plan_age=args.max_plan_age, plan_digest=args.plan_digest),
                progress=progress.restore, on_page=progress.page,
            )
    except FuseError as exc:
        progress.close()
        print(f"airflow-fuse: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        progress.close()
        print("airflow-fuse: interrupted; run the same command again: it re-checks every key", file=sys.stderr)
        return 1
    except Exception as exc:  # an unexpected error: say what it was, never a secret (no traceback with URLs)
        progress.close()
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        print(f"airflow-fuse: unexpected error: {redact(f'{type(exc).__name__}: {exc}')}; run with -v for "
              "details", file=sys.stderr)
        return 1
    progress.close()
    status = report.exit_status()
    summary = report.summary()
    if named is not None and args.command == "amend" and not args.dry_run:
        table, cursor = named
        count = databend.count_rows(cursor, table)
        summary["databend_count"] = count
        if table.num_rows is not None and count != table.num_rows:
            print(f"airflow-fuse: Databend counts {count} rows in {table.database}.{table.name}, its catalogue says "
                  f"{table.num_rows}", file=sys.stderr)
            status = status or 1
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(report.render())
        if named is not None and "databend_count" in summary:
            print(f"  Databend reads {summary['databend_count']} rows from {named[0].database}.{named[0].name}")
    return status


def _databend_table(args: argparse.Namespace, options: ScanOptions) -> tuple[Any, Any] | None:
    """A table named by --database/--table: resolved through Databend (sets args.table and the snapshot)."""
    if not args.database and not args.table_name:
        if not args.table:
            raise BadInputError("give the table location (s3://BUCKET/PREFIX/), or --database and --table with "
                                "--databend-dsn")
        return None
    if not (args.database and args.table_name and args.databend_dsn):
        raise BadInputError("a table named by database and table needs all of --database, --table and "
                            "--databend-dsn (the server that knows where the table is)")
    cursor = databend.connect(args.databend_dsn)
    table = databend.resolve(cursor, args.database, args.table_name, storage_root=args.storage_root)
    args.table = table.location
    options.table_format = "fuse"
    options.snapshot_location = options.snapshot_location or table.snapshot_location
    return table, cursor


def _run_undo(args: argparse.Namespace) -> int:
    """``undo``: exit 0 when no key failed (keys left alone are listed with the reason), 1 when one did."""
    from airflow_fuse.undo import undo

    progress = TerminalProgress(sys.stderr)
    try:
        result = undo(_client(args), args.report, dry_run=args.dry_run, max_workers=args.workers,
                      report_uri=args.undo_report, conn_id=args.aws_conn_id, on_page=progress.page)
    except FuseError as exc:
        progress.close()
        print(f"airflow-fuse: {exc}", file=sys.stderr)
        return exc.exit_code
    progress.close()
    print(json.dumps(result.summary(), default=str) if args.json else result.render())
    return 1 if result.failed else 0


def _expectations(args: argparse.Namespace) -> dict[str, Any]:
    expect: dict[str, Any] = {}
    for text in args.expect:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise BadInputError(f"--expect {text!r} is not EXPR=VALUE (e.g. 'sum(a)=4498500')")
        try:
            expect[name.strip()] = json.loads(value)
        except ValueError:
            expect[name.strip()] = value
    if args.expect_row_count is not None:
        expect["row_count"] = args.expect_row_count
    return expect


def _run_verify(args: argparse.Namespace) -> int:
    """``verify``: exit 0 when the table reads whole, 1 when it does not (first problems printed), 2 bad input."""
    from airflow_fuse.verify import verify_table

    options = _scan_options(args)
    try:
        _databend_table(args, options)
        result = verify_table(_client(args), args.table, options, full_read=args.full_read,
                              expect=_expectations(args), conn_id=args.aws_conn_id)
    except FuseError as exc:
        print(f"airflow-fuse: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result.summary(), default=str) if args.json else result.render())
    if result.ok:
        return 0
    print(f"airflow-fuse: {args.table} does not read whole: {len(result.problems)} problem(s), first: "
          f"{result.problems[0]}", file=sys.stderr)
    return 1


def run() -> NoReturn:
    """The console script: ``main()``, then exit with its status even if a native library misbehaves.

    The exit status is this command's contract (2 bad input, 3 unrecoverable). Native thread pools torn
    down at interpreter exit can abort the process (SIGABRT, apache/arrow#34314) after the work is done
    and the message printed, which would turn that status into -6. So once the streams are flushed and
    logging is shut down, the process ends with ``os._exit``: every thread pool of ours is already
    joined, and nothing is left for interpreter teardown to do.
    """
    try:
        status = main()
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    run()
