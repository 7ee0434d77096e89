"""The README's first command, `bash .ci/demo` (`python -m airflow_fuse.demo`), runs the main job end to end: a
Databend table deleted from the embedded server and brought back by the run book DAG, then an Iceberg and a Delta
table. It ran on main for a round with the amend task mapped over shards while the demo still read the amend's
result as one dict; nothing ran it. Now the suite does."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_the_demo_restores_the_tables_end_to_end():
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("AIRFLOW_HOME", None)  # the demo makes its own
    run = subprocess.run([sys.executable, "-m", "airflow_fuse.demo"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "shard success, amend success, report success, verify success" in out
    assert "amend: restored 13 objects" in out and "0 still missing" in out
    assert "verify: OK — 3 blocks read, 800 rows (snapshot says 800)" in out
    assert "objects Databend garbage-collected are still deleted: True" in out
    assert "RESULT: the table is whole again." in out
    assert "RESULT: the Iceberg and Delta tables are whole again." in out
