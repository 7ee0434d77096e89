"""A saved plan at scale: digest, save, load and report of a synthetic plan of N keys, old code and new side by side.

    python bench/saved_plan.py [--keys 1000000] [--ops digest,save-parquet,...] [--sides old,new]

The runbook's path at scale: the scan's plan is digested and saved (Parquet or JSON), the amend loads it back
(every field checked, the digest recomputed) and saves a report with ``report_uri``. The plan is synthetic and the
same on both sides (a fixed seed): keys named like Fuse blocks (``db/t/_b/<32 hex>_v2.parquet``), 70 % present,
25 % deleted (undelete: one delete marker, reason ``deleted at …``), 5 % copied back; held as the scan holds it
(``PlanRows``, compact columns). The report is a dry run's (every actionable row a plain outcome).

Each operation runs in a fresh subprocess (the plan built first, not measured) and reports wall time, CPU (user +
system) and the growth of peak RSS over the operation (``/proc/self/clear_refs`` resets the peak just before it).
``old`` is the code of commit ``OLD_COMMIT`` (``git archive`` into a temporary directory), ``new`` this worktree.
The saved files' sha256 and the digests are compared between the sides: they must be equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "b61f375"  # main before this round's saved-plan work
OPS = ("digest", "save-parquet", "save-json", "load-parquet", "load-json", "report-parquet", "report-json")
HEADER = {"bucket": "lake", "prefix": "db/t/", "table_format": "fuse", "created_at": "2026-11-20T10:00:00Z",
          "listed_at": "2026-11-20T09:59:00Z", "options": {"strategy": "auto"}, "info": {"snapshot": "s1"},
          "tables": [], "keys_listed": 0, "versions_listed": 0, "listing_pages": 0}


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def synthetic_plan(keys: int) -> Any:
    """The plan (``Plan`` with ``PlanRows``) of ``keys`` keys, the same for a seed whatever the code."""
    import pyarrow as pa

    from airflow_fuse import plan_columns
    from airflow_fuse.plan import PLAN_SCHEMA, Plan, PlanRows

    rng = random.Random(20261120)
    names = sorted(f"db/t/_b/{rng.getrandbits(128):032x}_v2.parquet" for _ in range(keys))
    parts = []
    for start in range(0, keys, 65_536):
        rows: dict[str, list[Any]] = {name: [] for name in PLAN_SCHEMA.names}
        for key in names[start:start + 65_536]:
            roll = rng.random()
            version, current = f"{rng.getrandbits(160):040x}"[:32], f"{rng.getrandbits(160):040x}"[:32]
            size, etag = rng.randrange(1, 1 << 27), f"{rng.getrandbits(128):032x}"
            minute = rng.randrange(60 * 24 * 30)
            then = f"2026-10-{1 + minute // 1440:02d}T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z"
            deleted = f"2026-11-19T{minute % 24:02d}:{minute % 60:02d}:{minute % 60:02d}.{1 + minute % 998:03d}000Z"
            values: dict[str, Any] = {"key": key, "kind": "block", "etag": etag, "expected_size": size,
                                      "row_count": None, "version_id": version, "size": size, "delete_markers": []}
            if roll < 0.70:
                values.update(status="present", action="", reason="", current_version_id=version,
                              current_is_delete_marker=False, current_etag=etag, current_size=size,
                              current_last_modified=then, last_modified="")
            elif roll < 0.95:
                values.update(status="restore", action="undelete", reason=f"deleted at {deleted}",
                              current_version_id=current, current_is_delete_marker=True, current_etag="",
                              current_size=0, current_last_modified=deleted, last_modified=then,
                              delete_markers=[current])
            else:
                values.update(status="restore", action="copy", current_version_id=current,
                              current_is_delete_marker=True, current_etag="", current_size=0,
                              current_last_modified=deleted, last_modified=then,
                              reason=f"deleted at {deleted}; the good version is not the newest data version, so it "
                                     "is copied")
            for name in PLAN_SCHEMA.names:
                rows[name].append(values[name])
        parts.append(plan_columns.encoded(pa.table(rows, schema=PLAN_SCHEMA)))
    del names
    header = {**HEADER, "keys_listed": keys, "versions_listed": keys * 2, "listing_pages": keys * 2 // 1000}
    return Plan(items=PlanRows(plan_columns.joined(parts, PLAN_SCHEMA)), **header)


def worker(op: str, keys: int, directory: Path) -> dict[str, Any]:
    """Build the plan, then measure one operation."""
    from airflow_fuse.plan import load_plan, save_plan

    plan = synthetic_plan(keys)
    report = None
    if op.startswith("report"):
        from airflow_fuse.report import Report
        from airflow_fuse.restore import Restorer

        plan.digest  # noqa: B018  the scan reported it already
        report = Report(plan, Restorer(None, plan).dry_run())
    elif op != "digest":
        plan.digest  # noqa: B018  the scan reported it already
    suffix = ".parquet" if op.endswith("parquet") else ".json"
    target = directory / (("report" if report is not None else "plan") + suffix)
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = _status()["VmRSS"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if op == "digest":
        out: Any = plan.digest
    elif op.startswith("save"):
        out = save_plan(plan, str(target))
    elif op.startswith("load"):
        out = load_plan(str(target)).digest
    else:
        assert report is not None
        out = report.save(str(target))
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = _status()["VmHWM"]
    result = {"op": op, "seconds": round(seconds, 2),
              "cpu": round(after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime, 2),
              "peak_mib": round((peak - before) / 2**20), "rss_before_mib": round(before / 2**20)}
    if op == "digest" or op.startswith("load"):
        result["digest"] = out
    else:
        data = target.read_bytes()
        result["sha256"] = hashlib.sha256(data).hexdigest()
        result["file_mib"] = round(len(data) / 2**20, 1)
    return result


def _old_code() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="saved-plan-old-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT, "airflow_fuse"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--sides", default="old,new")
    parser.add_argument("--worker")
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.keys, Path(args.dir))))
        return
    roots = {"old": _old_code(), "new": ROOT}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    directory = Path(tempfile.mkdtemp(prefix="saved-plan-"))  # one place: a report names where it is saved
    for side in args.sides.split(","):
        env = {**os.environ, "PYTHONPATH": str(roots[side])}
        for op in args.ops.split(","):
            run = subprocess.run([sys.executable, __file__, "--worker", op, "--keys", str(args.keys), "--dir",
                                  str(directory)], env=env, capture_output=True, text=True)
            if run.returncode:
                print(f"{side} {op} failed: {run.stderr[-2000:]}", file=sys.stderr)
                continue
            results.setdefault(side, {})[op] = json.loads(run.stdout.strip().splitlines()[-1])
            print(side, json.dumps(results[side][op]), flush=True)
    _print(args.keys, results)


def _print(keys: int, results: dict[str, dict[str, dict[str, Any]]]) -> None:
    sides = list(results)
    print(f"\n{keys:,} keys: seconds (CPU s), peak RSS growth MiB")
    print(f"{'operation':<16}" + "".join(f"{side:>26}" for side in sides) + "  same bytes/digest")
    for op in OPS:
        found = [results[side].get(op) for side in sides]
        if not any(found):
            continue
        cells = "".join(f"{_cell(r):>26}" for r in found)
        marks = {r.get("sha256") or r.get("digest") for r in found if r}
        print(f"{op:<16}{cells}  {'yes' if len(marks) == 1 and len(found) > 1 else ('NO' if len(marks) > 1 else '')}")


def _cell(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    return f"{result['seconds']:.2f} s ({result['cpu']:.2f}) {result['peak_mib']:>5} MiB"


if __name__ == "__main__":
    main()
