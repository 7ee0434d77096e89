"""``airflow-fuse verify TABLE``: exit 0 when the table reads whole, 1 with the first problems when it does not."""

from __future__ import annotations

import json

from tests.conftest import new_bucket
from tests.fuse_fixtures import load_expect, replay
from tests.helpers import delete_keys
from tests.test_cli import _run


def test_verify_a_whole_table_then_a_broken_one(s3_server, s3):
    bucket = new_bucket(s3)
    replay(s3, bucket, "fuse_basic")
    expect = load_expect("fuse_basic")
    table = f"s3://{bucket}/{expect['storage_root']}"

    whole = _run(s3_server, "verify", table, "--expect-row-count", str(expect["row_count"]))
    assert whole.returncode == 0, whole.stderr
    assert f"OK\n  {len(expect['blocks'])} data files read, {expect['row_count']} rows" in whole.stdout

    full = _run(s3_server, "verify", table, "--full-read", "--expect", "sum(a)=4498500", "--expect", "max(b)=row999",
                "--json")
    assert full.returncode == 0, full.stderr
    summary = json.loads(full.stdout)
    assert summary["ok"] and summary["total_rows"] == expect["row_count"]
    assert summary["checks"]["sum(a)"] == {"expected": 4498500, "actual": 4498500, "ok": True}

    wrong = _run(s3_server, "verify", table, "--expect-row-count", str(expect["row_count"] + 1))
    assert wrong.returncode == 1
    assert f"row_count: expected {expect['row_count'] + 1}, got {expect['row_count']}" in wrong.stderr

    lost = expect["blocks"][0]["key"]
    delete_keys(s3, bucket, [lost])
    broken = _run(s3_server, "verify", table)
    assert broken.returncode == 1
    assert "FAILED" in broken.stdout and f"problem: {lost}: missing, restorable" in broken.stdout
    assert "does not read whole" in broken.stderr and lost in broken.stderr


def test_verify_bad_input_exits_2(moto_server):
    plain = new_bucket(moto_server.client(), versioning=None)
    for args, text in [(("verify", "not-a-uri"), "not an s3:// URI"),
                       (("verify", "s3://some-bucket/t/", "--expect", "sum(a)"), "is not EXPR=VALUE"),
                       (("verify", f"s3://{plain}/t/"), "versioning was never enabled")]:
        result = _run(moto_server, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert text in result.stderr, (args, result.stderr)
