"""Write docs/walkthrough.md by running it: Databend's Fail-Safe guide redone with airflow-fuse, then a prefix
table brought back to a point in time, an Iceberg table (written by pyiceberg) and a Delta table (written by
deltalake), each deleted, failing to read in its own reader, restored and read whole again.

    python docs/walkthrough.py          (from the repository root; CI runs it before ``mkdocs build``)

Every Python block on the page is executed here as shown, and every ``airflow-fuse`` command is run
as a real process against the embedded S3 server (moto on 127.0.0.1); the page shows what it printed
and its exit status. A command whose exit status is not the one the page explains stops the script
(exit 1): the walkthrough is a test of the documentation as well.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's airflow_fuse and tests/, not an installed copy
OUTPUT = ROOT / "docs" / "walkthrough.md"
COMMAND_TIMEOUT = 120


class Page:
    """The Markdown page being written, and the state the executed samples share."""

    def __init__(self, workdir: Path) -> None:
        self.parts: list[str] = []
        self.namespace: dict[str, Any] = {}
        self.workdir = workdir
        self.env: dict[str, str] = {}

    def text(self, markdown: str) -> None:
        self.parts.append(textwrap.dedent(markdown).strip() + "\n")

    def python(self, source: str, expect: str | None = None) -> None:
        """Run ``source`` (shown as is) in the page's namespace; show what it printed. With ``expect``, what it
        printed must contain that text (the row count the page explains, the reader's error), or the script
        stops."""
        source = textwrap.dedent(source).strip() + "\n"
        out = io.StringIO()
        previous = os.getcwd()
        os.chdir(self.workdir)
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(source, "walkthrough", "exec"), self.namespace)  # noqa: S102 - the page's own sample
        finally:
            os.chdir(previous)
        server = self.namespace.get("server")
        if server is not None and not self.env:  # the first sample started the server: commands use it
            self.env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                "AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": server.access_key,
                "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_DEFAULT_REGION": server.region,
                "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(ROOT), "COLUMNS": "120",
            }
        if expect is not None and expect not in out.getvalue():
            sys.exit(f"walkthrough: a sample printed no {expect!r}, which the page explains:\n{source}\n"
                     f"{out.getvalue()}")
        block = f"```python\n{source}```\n"
        if out.getvalue():
            block += f"\n```text\n{out.getvalue().rstrip()}\n```\n"
        self.parts.append(block)

    def command(self, args: list[str], expect: int) -> str:
        """Run ``airflow-fuse ARGS`` from this checkout; show the command, its output and its exit status."""
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", "from airflow_fuse.cli import run; run()", *args],
            cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=COMMAND_TIMEOUT,
        )
        shown = "airflow-fuse " + shlex.join(args)
        print(f"walkthrough: {shown} -> exit {proc.returncode} ({time.monotonic() - started:.1f} s)", flush=True)
        if proc.returncode != expect:
            sys.exit(f"walkthrough: `{shown}` exited {proc.returncode}, the page explains exit {expect}:\n"
                     f"{proc.stdout}")
        self.parts.append(f"```console\n$ {shown}\n{proc.stdout.rstrip()}\n```\n\n"
                          f"Exit status **{proc.returncode}**.\n")
        return proc.stdout

    def markdown(self) -> str:
        return "\n".join(self.parts)


def fuse_table(page: Page) -> None:
    page.text("""
        ## 1. A Databend table in a versioned bucket

        Databend's [Fail-Safe guide](https://docs.databend.com/guides/security/fail-safe) enables versioning on a
        bucket, creates a table in it, deletes the table's objects and calls `SYSTEM$FUSE_AMEND` (an Enterprise
        feature) to bring them back. Here is the same story, with airflow-fuse in place of the Enterprise call.

        Start the embedded S3-compatible server (moto on 127.0.0.1; `pip install 'airflow-fuse[embedded]'`)
        and create a bucket with versioning **Enabled** (step 1 of the guide):
        """)
    page.python("""
        from airflow_fuse.embedded import start_moto

        server = start_moto()
        s3 = server.client()
        s3.create_bucket(Bucket="databend-doc")
        s3.put_bucket_versioning(Bucket="databend-doc", VersioningConfiguration={"Status": "Enabled"})
        print(s3.get_bucket_versioning(Bucket="databend-doc")["Status"])
        """)
    page.text("""
        Step 2 of the guide is `CREATE TABLE t(a INT) 's3://databend-doc/…'` and an `INSERT`. Rather than run
        Databend, we replay objects the real Databend engine wrote: the repository's fixture `fuse_basic`
        (`CREATE TABLE t(a INT, b STRING)`, then three `INSERT`s of 1000 rows each; storage root `tbl/`, table
        prefix `1/6`). Replaying writes the same keys, bytes and versions, in the same order
        (`tests/fixtures/databend/README.md` in the repository describes the fixtures; `replay` is in
        `tests/fuse_fixtures.py`).
        """)
    page.python("""
        from tests.fuse_fixtures import replay

        replay(s3, "databend-doc", "fuse_basic")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="databend-doc", Prefix="tbl/"):
            for obj in page.get("Contents", []):
                print(f"{obj['Size']:>6}  {obj['Key']}")
        """)
    env = page.env
    page.text(f"""
        The command line takes the server and credentials from the usual AWS variables (or `--endpoint-url`,
        or `--aws-conn-id` for an Airflow connection). For the embedded server:

        ```console
        $ export AWS_ENDPOINT_URL={env["AWS_ENDPOINT_URL"]}
        $ export AWS_ACCESS_KEY_ID={env["AWS_ACCESS_KEY_ID"]} AWS_SECRET_ACCESS_KEY={env["AWS_SECRET_ACCESS_KEY"]}
        $ export AWS_DEFAULT_REGION={env["AWS_DEFAULT_REGION"]}
        ```

        The table reads whole: `airflow-fuse verify` reads the snapshot, its segments, and every block's Parquet
        footer, and checks the row counts against the metadata.
        """)
    page.command(["verify", "s3://databend-doc/tbl/"], expect=0)

    page.text("""
        ## 2. The table's objects are deleted

        Step 3 of the guide deletes every folder under the table. A `DeleteObjects` without version ids on a
        versioned bucket puts a *delete marker* on top of each key; the versions holding the data stay.
        """)
    page.python("""
        keys = [obj["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket="databend-doc", Prefix="tbl/")
                for obj in page.get("Contents", [])]
        s3.delete_objects(Bucket="databend-doc", Delete={"Objects": [{"Key": key} for key in keys]})
        print(len(keys), "objects deleted;", s3.list_objects_v2(Bucket="databend-doc", Prefix="tbl/")["KeyCount"],
              "left")
        """)
    page.text("""
        Step 4 of the guide: `SELECT * FROM t` now fails with `NoSuchKey`. Without Databend, the verification
        says the same, and exits 1:
        """)
    page.command(["verify", "s3://databend-doc/tbl/"], expect=1)

    page.text("""
        ## 3. Scan: what is missing, and which version brings each object back

        The scan makes one `ListObjectVersions` sweep of the table, reads the table's metadata from older
        versions (even under a delete marker), and plans each object the current snapshot needs. It writes
        nothing to the bucket; `--plan-out` saves the plan, which lists every delete marker a restore would
        remove (the undo manifest). Exit status 4: objects are missing, and all of them can be restored.
        """)
    page.command(["scan", "s3://databend-doc/tbl/", "--plan-out", "plan.json"], expect=4)

    page.text("""
        ## 4. Amend: the restore

        Step 5 of the guide is `CALL system$fuse_amend('default', 't')`. Here, a dry run of the saved plan
        first (writes nothing, exit 4), then the restore itself. The plan is re-checked against a fresh
        listing before any key is written: a key that changed since the scan is left alone.
        """)
    page.command(["amend", "s3://databend-doc/tbl/", "--plan", "plan.json", "--dry-run"], expect=4)
    page.command(["amend", "s3://databend-doc/tbl/", "--plan", "plan.json", "--report", "report.json"], expect=0)
    page.text("""
        The delete markers were removed, so each object's original version is current again: no byte was
        copied, and nothing was added to the bucket's storage. The hint file is `skipped`: Databend does not
        need it to read the table, and an old one could point at an older snapshot (see
        [Safety](operations/safety.md)). `report.json` holds every key, what was done and the marker ids
        removed. From it, `airflow-fuse undo` can put back what the restore changed; as a dry run:
        """)
    page.command(["undo", "--report", "report.json", "--dry-run"], expect=0)
    page.text("""

        ## 5. Verify: the table reads whole

        Step 6 of the guide: `SELECT * FROM t` works again. The verification also computes aggregates from the
        data itself, which must equal what Databend answered before the deletion (`SELECT count(*)`,
        `sum(a)`, `max(b)` on this fixture):
        """)
    page.command(["verify", "s3://databend-doc/tbl/", "--expect-row-count", "3000",
                  "--expect", "sum(a)=4498500", "--expect", "max(b)=row999"], expect=0)
    page.text("""
        A second `amend` finds nothing to do and exits 0: runs converge.
        """)
    page.command(["amend", "s3://databend-doc/tbl/"], expect=0)


def prefix_table(page: Page) -> None:
    page.text("""
        ## 6. A prefix table, back to a point in time (`--as-of`)

        Any table that is "every object under a prefix" (a plain Parquet dataset, a Hive-style layout) is
        restored with `--format prefix`. Here a dataset with one Parquet file per day is damaged by a bad job
        that deletes two days and overwrites the third with wrong rows. `--as-of` brings each key back to the
        version that was current at a time before the incident.
        """)
    page.python("""
        import io
        import time
        from datetime import datetime, timezone

        import pyarrow as pa
        import pyarrow.parquet as pq


        def parquet(rows):
            sink = io.BytesIO()
            pq.write_table(pa.table({"id": list(range(rows)), "amount": [10] * rows}), sink)
            return sink.getvalue()


        s3.create_bucket(Bucket="lake")
        s3.put_bucket_versioning(Bucket="lake", VersioningConfiguration={"Status": "Enabled"})
        for day in (1, 2, 3):
            s3.put_object(Bucket="lake", Key=f"events/day=2026-11-0{day}/part-0.parquet", Body=parquet(100))
        time.sleep(1.5)  # S3 times have one-second resolution: keep the incident clearly after as_of
        as_of = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        time.sleep(1.5)
        print("good state as of", as_of)

        # the incident: two days deleted, the third overwritten with 7 wrong rows
        s3.delete_object(Bucket="lake", Key="events/day=2026-11-01/part-0.parquet")
        s3.delete_object(Bucket="lake", Key="events/day=2026-11-02/part-0.parquet")
        s3.put_object(Bucket="lake", Key="events/day=2026-11-03/part-0.parquet", Body=parquet(7))
        """)
    as_of = page.namespace["as_of"]
    page.text("""
        The table now holds 7 rows instead of 300, and two of its files are gone:
        """)
    page.command(["verify", "s3://lake/events/", "--format", "prefix", "--expect-row-count", "300"], expect=1)
    page.text("""
        Without `--rollback-overwrites`, the scan brings back the two deleted files and only *reports* the
        overwritten one: rolling back a write is a decision the user makes.
        """)
    page.command(["scan", "s3://lake/events/", "--format", "prefix", "--as-of", as_of], expect=4)
    page.text("""
        With `--rollback-overwrites` the overwritten file is planned too. Its good version is not the newest
        one, so it is copied back server-side onto the key: a new version on top, all history kept (the wrong
        7-row version is still there, one version down).
        """)
    page.command(["amend", "s3://lake/events/", "--format", "prefix", "--as-of", as_of, "--rollback-overwrites",
                  "--report", "events-report.parquet"], expect=0)
    page.text("""
        Every day reads back with its 100 rows, and the sums match the good state:
        """)
    page.command(["verify", "s3://lake/events/", "--format", "prefix", "--expect-row-count", "300",
                  "--expect", "sum(amount)=3000"], expect=0)
    page.text("""
        The report is a Parquet file with one row per key (columns: [Plan and report schemas](reference/schemas.md)):
        """)
    page.python("""
        import pyarrow.parquet as pq

        report = pq.read_table("events-report.parquet")
        for row in report.select(["key", "status", "action", "result"]).to_pylist():
            print(row)
        """)


def iceberg_table(page: Page) -> None:
    page.text("""
        ## 7. An Iceberg table

        An Iceberg table is a tree of files: the catalog points at the current `*.metadata.json`, which lists
        the snapshots; a snapshot's manifest list names its manifests, and the manifests name the data files.
        Here [pyiceberg](https://py.iceberg.apache.org/) writes one (its SQL catalog in a local SQLite file;
        the table's files in a versioned bucket), in two commits:
        """)
    page.python("""
        import pyarrow as pa
        from pyiceberg.catalog.sql import SqlCatalog

        s3.create_bucket(Bucket="iceberg")
        s3.put_bucket_versioning(Bucket="iceberg", VersioningConfiguration={"Status": "Enabled"})
        catalog = SqlCatalog("demo", uri="sqlite:///catalog.db", warehouse="s3://iceberg", **{
            "s3.endpoint": server.endpoint_url, "s3.access-key-id": server.access_key,
            "s3.secret-access-key": server.secret_key, "s3.region": server.region})
        catalog.create_namespace("db")
        orders = pa.table({"id": pa.array(range(1000), pa.int64()),
                           "amount": pa.array([i * 0.5 for i in range(1000)])})
        table = catalog.create_table("db.orders", schema=orders.schema)
        table.append(orders.slice(0, 600))
        table.append(orders.slice(600))
        print(len(table.scan().to_arrow()), "rows at", table.location())
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="iceberg"):
            for obj in page.get("Contents", []):
                print(f"{obj['Size']:>6}  {obj['Key']}")
        """, expect="1000 rows")
    page.text("""
        Everything under the table is deleted (an `aws s3 rm --recursive` on the wrong prefix). The catalog
        still points at the metadata file, which is gone; pyiceberg cannot even open the table:
        """)
    page.python("""
        keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket="iceberg", Prefix="db/orders/")["Contents"]]
        s3.delete_objects(Bucket="iceberg", Delete={"Objects": [{"Key": key} for key in keys]})
        try:
            catalog.load_table("db.orders").scan().to_arrow()
        except FileNotFoundError as error:
            print("pyiceberg:", error)
        """, expect="pyiceberg: ")
    page.text("""
        The scan reads the metadata tree from the versions under the delete markers. Without a pointer from
        the catalog it takes the newest `*.metadata.json` (`--layout-option metadata_location=s3://…` names the
        catalog's instead). The current snapshot needs the metadata file, the manifest lists, the manifests and
        the data files; the older metadata files in the `metadata-log` are not needed to read the table and
        are left deleted (`--layout-option include_history=true` restores them too):
        """)
    page.command(["scan", "s3://iceberg/db/orders/", "--format", "iceberg"], expect=4)
    page.command(["amend", "s3://iceberg/db/orders/", "--format", "iceberg"], expect=0)
    page.text("""
        pyiceberg reads the table whole again, through the same catalog:
        """)
    page.python("""
        rows = catalog.load_table("db.orders").scan().to_arrow()
        print(len(rows), "rows, sum(amount) =", sum(rows["amount"].to_pylist()))
        """, expect="1000 rows, sum(amount) = 249750.0")


def delta_table(page: Page) -> None:
    page.text("""
        ## 8. A Delta table

        A Delta table is its transaction log (`_delta_log/*.json`, and checkpoints) and the Parquet files the
        log adds and removes. Here [delta-rs](https://delta-io.github.io/delta-rs/) (`pip install deltalake`)
        writes one, partitioned by city, in two commits:
        """)
    page.python("""
        from deltalake import DeltaTable, write_deltalake

        storage = {"AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": server.access_key,
                   "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_REGION": server.region,
                   "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        sales = pa.table({"id": pa.array(range(600), pa.int64()), "city": ["Oslo", "Paris", "New York"] * 200,
                          "amount": pa.array([2.0] * 600)})
        write_deltalake("s3://lake/sales", sales.slice(0, 300), partition_by=["city"], storage_options=storage)
        write_deltalake("s3://lake/sales", sales.slice(300), partition_by=["city"], mode="append",
                        storage_options=storage)
        sales_table = DeltaTable("s3://lake/sales", storage_options=storage)
        print("version", sales_table.version(), ":", len(sales_table.to_pyarrow_table()), "rows")
        """, expect=": 600 rows")
    page.text("""
        This time a clean-up job takes the Parquet files for orphans and deletes them; the log stays. The
        table still opens, but reading it fails on the first missing file:
        """)
    page.python("""
        parquet_keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket="lake", Prefix="sales/")["Contents"]
                        if obj["Key"].endswith(".parquet")]
        s3.delete_objects(Bucket="lake", Delete={"Objects": [{"Key": key} for key in parquet_keys]})
        print(len(parquet_keys), "Parquet files deleted")
        try:
            DeltaTable("s3://lake/sales", storage_options=storage).to_pyarrow_table()
        except OSError as error:
            print("deltalake:", str(error).splitlines()[0])  # the first line; the rest is the HTTP exchange
        """, expect="deltalake: ")
    page.text("""
        The scan replays the log (from its last checkpoint, if any) to find the files the current version adds and
        has not removed; the log files are present, the six data files are to be restored:
        """)
    page.command(["scan", "s3://lake/sales/", "--format", "delta", "--plan-out", "sales-plan.json"], expect=4)
    page.command(["amend", "s3://lake/sales/", "--format", "delta", "--plan", "sales-plan.json"], expect=0)
    page.text("""
        delta-rs reads every row again:
        """)
    page.python("""
        sales_table = DeltaTable("s3://lake/sales", storage_options=storage)
        rows = sales_table.to_pyarrow_table()
        print("version", sales_table.version(), ":", len(rows), "rows, sum(amount) =",
              sum(rows["amount"].to_pylist()))
        """, expect=": 600 rows, sum(amount) = 1200.0")


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airflow-fuse-walkthrough-") as workdir:
        page = Page(Path(workdir))
        page.text("""
            # Walkthrough

            <!-- Generated by docs/walkthrough.py: edit that script, not this page. -->

            Everything on this page was run by `docs/walkthrough.py`, which writes this page: each Python block
            was executed as shown, and each `airflow-fuse` command ran against the embedded S3 server. Outputs
            are what they printed (version ids, times and the port differ from run to run).

            Sections 1 to 5 restore a Databend table (Databend's Fail-Safe guide); section 6 brings a prefix
            table back to a point in time; sections 7 and 8 restore an Iceberg table and a Delta table written
            by their own writers, and read them back with those writers.
            """)
        try:
            fuse_table(page)
            prefix_table(page)
            iceberg_table(page)
            delta_table(page)
        finally:
            server = page.namespace.get("server")
            if server is not None:
                server.stop()
        OUTPUT.write_text(page.markdown())
    print(f"walkthrough: wrote {OUTPUT.relative_to(ROOT)} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
