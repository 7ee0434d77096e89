"""The package is an Airflow provider: discovered through its entry point, listed by `airflow providers list`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path

import airflow_fuse


def test_entry_point_returns_provider_info_for_this_distribution():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_fuse")]
    info = ep.load()()
    assert info["package-name"] == "airflow-fuse" == ep.dist.name
    modules = [m for group in ("hooks", "sensors", "operators", "triggers") for entry in info[group]
               for m in entry["python-modules"]]
    for module in modules:
        __import__(module)
    assert info["versions"] == [version("airflow-fuse")] == [airflow_fuse.__version__]


def test_airflow_providers_list_shows_it(tmp_path):
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path))
    out = subprocess.run([airflow, "providers", "list", "--output", "plain"], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.strip().startswith("airflow-fuse"))
    assert version("airflow-fuse") in line
    triggers = subprocess.run([airflow, "providers", "triggers", "--output", "plain"], env=env,
                              capture_output=True, text=True, timeout=180)
    assert "airflow_fuse.triggers.versioning" in triggers.stdout
