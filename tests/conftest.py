"""Test session: an isolated Airflow home, and real S3-compatible servers on 127.0.0.1.

``FUSE_TEST_SERVERS`` (comma-separated, default ``moto,ceph``) chooses the servers the integration tests run
against: ``moto`` (embedded, fast) and ``ceph`` (Ceph RADOS Gateway: checks signatures and enforces
bucket policies). The README's test command runs both.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections import Counter
from pathlib import Path

# Airflow reads its configuration when first imported: set it up before anything imports airflow.
_HOME = Path(tempfile.mkdtemp(prefix="airflow-fuse-tests-"))
ROOT = Path(__file__).resolve().parent.parent
# dag.test() runs only DAGs found in the DAGs folder: it holds the project's example DAGs (linked) and
# the DAG files tests write (write_dag).
DAGS_FOLDER = _HOME / "dags"
DAGS_FOLDER.mkdir()
for _dag_file in (ROOT / "dags").glob("*.py"):
    (DAGS_FOLDER / _dag_file.name).symlink_to(_dag_file)
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Never let a test reach a real AWS credential source.
for _var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_var, None)
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import pytest  # noqa: E402

from airflow_fuse.embedded import S3Server, start_moto  # noqa: E402
from tests.servers.ceph import start_ceph  # noqa: E402

SERVERS = [s.strip() for s in os.environ.get("FUSE_TEST_SERVERS", "moto,ceph").split(",") if s.strip()]
FIXTURES = Path(__file__).parent / "fixtures"


def _start(name: str) -> S3Server:
    if name == "moto":
        return start_moto()
    if name == "ceph":
        return start_ceph()
    raise ValueError(f"unknown FUSE_TEST_SERVERS entry {name!r}: use moto and/or ceph")


_running: dict[str, S3Server] = {}


def server_named(name: str) -> S3Server:
    if name not in _running:
        server = _start(name)
        os.environ[f"AIRFLOW_CONN_FUSE_{name.upper()}"] = server.connection_json()
        _running[name] = server
    return _running[name]


def on_ceph(item: pytest.Item) -> bool:
    """Whether a test uses Ceph: the ``ceph`` case of ``s3_server``, or ``ceph_server`` (directly or via a fixture)."""
    callspec = getattr(item, "callspec", None)
    return (callspec is not None and callspec.params.get("s3_server") == "ceph") or "ceph_server" in item.fixturenames


# Parallel runs (pytest-xdist, ``-n 2``: the README's test command) -----------------------------------------------
#
# The tests are handed to the workers in units. Every test on Ceph is one unit: one worker starts the one gateway
# and runs them all (a second gateway would cost another start-up and its memory), while the other worker runs the
# rest, one test module a unit, so a module's fixtures and per-process caches (a table written once per server)
# are built once. Only the workers know a test's fixtures: they write each test's unit to a file the scheduler
# (in the controlling process) reads once the workers have collected. (xdist's own ``--dist loadgroup`` does
# this through the test ids, which pytest 9.2 no longer lets a plugin change: pytest-dev/pytest-xdist#1386.)

def work_unit(item: pytest.Item) -> str:
    return "ceph" if on_ceph(item) else item.nodeid.split("::", 1)[0]


WORK_UNITS = _HOME / "work-units.json"  # the controller's


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """Controller: tell each worker where to write the units."""
    node.workerinput["fuse_work_units"] = str(WORK_UNITS)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Worker: the units, longest first (Ceph's; a module that starts a real Airflow; then by number of tests),
    so no long unit is left for the end while the other worker idles; and each test's unit, for the scheduler
    (every worker collects the same tests: the last file written is kept)."""
    path = getattr(config, "workerinput", {}).get("fuse_work_units")
    if not path:
        return
    units = {item.nodeid: work_unit(item) for item in items}
    sizes = Counter(units.values())
    slow = {units[item.nodeid] for item in items if item.get_closest_marker("slow")}
    first: dict[str, int] = {}
    for index, unit in enumerate(units.values()):
        first.setdefault(unit, index)
    items.sort(key=lambda item: (units[item.nodeid] != "ceph", units[item.nodeid] not in slow,
                                 -sizes[units[item.nodeid]], first[units[item.nodeid]]))
    staged = Path(f"{path}.{os.getpid()}")
    staged.write_text(json.dumps(units))
    staged.replace(path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Controller, ``--dist loadgroup``: xdist's scheduling of whole units, with the units the workers wrote."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the workers' order: longest unit first

    class ByWorkUnit(LoadScopeScheduling):
        units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.units is None:
                self.units = json.loads(WORK_UNITS.read_text())
            return self.units.get(nodeid) or nodeid.split("::", 1)[0]

    return ByWorkUnit(config, log)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    for server in _running.values():
        server.stop()
    _running.clear()


@pytest.fixture(scope="session", params=SERVERS)
def s3_server(request) -> S3Server:
    """Each real S3 server selected for this run (tests using it run once per server)."""
    return server_named(request.param)


@pytest.fixture(scope="session")
def moto_server() -> S3Server:
    """The embedded moto server, for tests of behaviour that does not depend on the server."""
    return server_named("moto")


@pytest.fixture(scope="session")
def ceph_server() -> S3Server:
    """Ceph RGW, for what only a real gateway enforces (signatures, bucket policies)."""
    if "ceph" not in SERVERS:
        pytest.fail("this test needs Ceph: run with FUSE_TEST_SERVERS=moto,ceph (the README test command does)")
    return server_named("ceph")


@pytest.fixture
def s3(s3_server: S3Server):
    return s3_server.client()


@pytest.fixture
def conn_id(s3_server: S3Server) -> str:
    return f"fuse_{s3_server.name}"


def new_bucket(client, *, versioning: str | None = "Enabled") -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    if versioning:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
    return name


@pytest.fixture
def bucket(s3) -> str:
    """A fresh bucket with versioning Enabled."""
    return new_bucket(s3)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh Airflow metadata database (SQLite) for tests that run DAGs."""
    from airflow.utils.db import resetdb

    resetdb()


def run_dag(dag, **kwargs):
    """``dag.test()`` and the states a user would look at: the run's, and each task's."""
    run = dag.test(**kwargs)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


def write_dag(dag_id: str, body: str):
    """Write a DAG file into the DAGs folder and return its DAG. ``body`` builds the DAG as ``dag``."""
    import runpy
    import textwrap

    path = DAGS_FOLDER / f"{dag_id}.py"
    path.write_text(textwrap.dedent(body))
    return runpy.run_path(str(path))["dag"]
