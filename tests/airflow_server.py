"""A throw-away REAL Airflow for end-to-end checks: api-server, scheduler, dag-processor and triggerer.

SQLite metadata database, LocalExecutor, everything bound to 127.0.0.1, the S3 connection given as an
``AIRFLOW_CONN_FUSE_E2E`` environment variable, the run book's Variables (its connection allowlist and a
``file://`` operations location) as ``AIRFLOW_VAR_*``. Each process runs in its own process group and the
whole group is stopped on the way out, so no scheduler, executor worker or task supervisor outlives its user.

Used by tests/test_real_airflow.py (REST) and docs/screenshots.py (a real browser). Nothing here imports
tests/conftest.py: the screenshot script is not a pytest session.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

DAG_ID = "fuse_failsafe_runbook"
CONN_ID = "fuse_e2e"
AIRFLOW = [sys.executable, "-m", "airflow"]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

MIGRATE_TIMEOUT = 120.0
READY_TIMEOUT = 120.0  # api-server answering and the scheduler heartbeating
PARSE_TIMEOUT = 90.0  # the DAG serialized by the dag-processor
RUN_TIMEOUT = 240.0
# A throw-away deployment has nothing to save on the way out: SIGTERM, then SIGKILL for whatever is left after
# STOP_TIMEOUT (the api-server's uvicorn and the triggerer take ~10 s to stop on their own; nothing waits for that).
STOP_TIMEOUT = 3.0
# How often a wait asks again (REST calls to a local api-server and a log read: cheap; a run's steps take seconds).
POLL_INTERVAL = 0.5
TASKS = ("versioning", "scan", "route", "approval", "shard", "amend", "report", "verify")


def _free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), so no outgoing connection takes it before the
    api-server binds it (~20 s later)."""
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1 in 20000-32000")


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return "\n".join(text[-lines:])


class Airflow:
    """One throw-away Airflow deployment: its home, its processes and a small REST client."""

    def __init__(self, home: Path, s3_connection_json: str) -> None:
        self.home = home
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.logs = home / "process-logs"
        self.logs.mkdir(parents=True)
        self.dags = home / "dags"
        self.dags.mkdir()
        self.ops = home / "ops"  # the run book's operations location: plans and reports
        for dag_file in (ROOT / "dags").glob("*.py"):
            shutil.copy(dag_file, self.dags / dag_file.name)
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self._token: str | None = None
        self.env = self._environment(s3_connection_json)

    def _environment(self, s3_connection_json: str) -> dict[str, str]:
        # Nothing of the pytest session's own Airflow set-up (conftest's home, connections) leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            # every component signs or checks the task and API tokens with the same secret
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW_CONN_FUSE_E2E": s3_connection_json,
            "AIRFLOW_VAR_AIRFLOW_FUSE_AWS_CONN_IDS": json.dumps([CONN_ID]),
            "AIRFLOW_VAR_AIRFLOW_FUSE_OPS_LOCATION": f"file://{self.ops}/",
            "PYTHONUNBUFFERED": "1",
            # this checkout's airflow_fuse, not the one the environment has installed
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        })
        return env

    # processes -------------------------------------------------------------------------------------------

    def run(self, *args: str, timeout: float) -> None:
        log = self.logs / f"{args[0]}-{'-'.join(args[1:])}.log"
        with log.open("wb") as out:
            result = subprocess.run([*AIRFLOW, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout, cwd=self.home, start_new_session=True)
        assert result.returncode == 0, f"airflow {' '.join(args)} exited {result.returncode}:\n{_tail(log)}"

    def start(self, component: str) -> None:
        with (self.logs / f"{component}.log").open("wb") as out:
            # its own session: stop() signals the whole group (executor workers, task supervisors, uvicorn)
            self.procs[component] = subprocess.Popen([*AIRFLOW, component], env=self.env, stdout=out,
                                                     stderr=subprocess.STDOUT, cwd=self.home,
                                                     start_new_session=True)

    def assert_alive(self) -> None:
        dead = {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}
        assert not dead, f"Airflow processes exited early: {dead}\n{self.diagnostics()}"

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs.values():
            # wait for the leader, then for the rest of its group; whatever is left is killed
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            while time.monotonic() < deadline and _group_alive(proc.pid):
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def diagnostics(self) -> str:
        parts = [f"===== {path.name} (last lines) =====\n{_tail(path)}" for path in sorted(self.logs.glob("*.log"))]
        parts += [f"===== task log {path.relative_to(self.home / 'logs')} =====\n{_tail(path, 40)}"
                  for path in sorted((self.home / "logs").glob("dag_id=*/**/*.log"))]
        return "\n".join(parts)

    @contextlib.contextmanager
    def explain_failure(self) -> Iterator[None]:
        """On any failure, print each process's (and each task's) log tail: pytest shows it with the failure."""
        try:
            yield
        except BaseException:
            print(self.diagnostics(), file=sys.stderr)
            raise

    # REST ------------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                timeout: float = 30.0) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def token(self) -> str:
        if self._token is None:
            passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
            status, body = self.request("POST", "/auth/token",
                                        {"username": "admin", "password": passwords["admin"]}, auth=False)
            assert status in (200, 201), f"POST /auth/token: {status} {body}"
            self._token = body["access_token"]
        return self._token

    def wait_for(self, what: str, probe, timeout: float, interval: float = POLL_INTERVAL) -> Any:
        """Call ``probe`` (returning ``(done, value)``) until done; fail (with the logs) after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                done, last = probe()
            except OSError as exc:  # not listening yet, connection reset ... (URLError is an OSError)
                done, last = False, exc
            if done:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a zombie leader of another user; treat as alive
        return True
    return True


@contextlib.contextmanager
def running_airflow(s3_connection_json: str, *, prefix: str = "airflow-fuse-e2e-") -> Iterator[Airflow]:
    """A fresh Airflow (migrated, every component healthy, the run book parsed and still paused); stopped after."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    af = Airflow(home, s3_connection_json)
    try:
        with af.explain_failure():
            t0 = time.monotonic()
            af.run("db", "migrate", timeout=MIGRATE_TIMEOUT)
            af.timings["db migrate"] = time.monotonic() - t0

            t0 = time.monotonic()
            for component in COMPONENTS:
                af.start(component)

            def healthy():
                status, body = af.request("GET", "/api/v2/monitor/health", auth=False, timeout=5)
                return status == 200 and all(body.get(part, {}).get("status") == "healthy" for part in
                                             ("metadatabase", "scheduler", "dag_processor", "triggerer")), body

            af.wait_for("the api-server and a healthy scheduler, dag-processor and triggerer", healthy, READY_TIMEOUT)
            af.timings["processes up"] = time.monotonic() - t0

            t0 = time.monotonic()

            def parsed():
                status, errors = af.request("GET", "/api/v2/importErrors")
                assert status == 200, errors
                assert errors["total_entries"] == 0, f"DAG import errors: {errors['import_errors']}"
                status, dag = af.request("GET", f"/api/v2/dags/{DAG_ID}")
                return status == 200, dag

            dag = af.wait_for(f"{DAG_ID} to be parsed", parsed, PARSE_TIMEOUT)
            assert dag["is_paused"] is True  # DAGs start paused
            af.timings["DAG parsed"] = time.monotonic() - t0
        yield af
    finally:
        t0 = time.monotonic()
        af.stop()
        af.timings["stop"] = time.monotonic() - t0
        print("phase timings (s):", {k: round(v, 1) for k, v in af.timings.items()})
        shutil.rmtree(home, ignore_errors=True)


def trigger(airflow: Airflow, conf: dict[str, Any]) -> str:
    status, run = airflow.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, f"trigger: {status} {run}"
    assert run["conf"] == conf
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}"


def await_approval(airflow: Airflow, run_path: str) -> dict[str, Any]:
    """The run's open approval request, as the Required actions page lists it."""
    def asked():
        status, body = airflow.request("GET", f"{run_path}/hitlDetails")
        assert status == 200, body
        open_ = [d for d in body["hitl_details"] if not d["response_received"]]
        # The operator writes its request before it parks: the task is still `running` for a moment after the
        # request appears (seen in CI). The request is open to a person once the task awaits input.
        parked_ = bool(open_) and all(d["task_instance"]["state"] == "awaiting_input" for d in open_)
        return parked_, open_

    details = airflow.wait_for("the approval request", asked, RUN_TIMEOUT)
    assert len(details) == 1 and details[0]["task_instance"]["task_id"] == "approval", details
    assert details[0]["task_instance"]["state"] == "awaiting_input", details[0]["task_instance"]
    # Airflow 3.3.2 fails a task answered before the scheduler has handled the executor's event for the worker
    # that parked it ("reported that the task instance ... finished with state success, but the task instance's
    # state attribute is queued"): a person never answers that fast; the test waits for that event to be handled.
    run_id = details[0]["task_instance"]["dag_run_id"]
    parked = f"task_id=approval, run_id={run_id}, map_index=-1"

    def handled():
        log = (airflow.logs / "scheduler.log").read_text(errors="replace")
        return any(parked in line and "state=awaiting_input" in line for line in log.splitlines()
                   if "TaskInstance Finished" in line), None

    airflow.wait_for("the scheduler to handle the parked approval task", handled, RUN_TIMEOUT)
    return details[0]


def answer(airflow: Airflow, run_path: str, option: str) -> dict[str, Any]:
    status, body = airflow.request("PATCH", f"{run_path}/taskInstances/approval/-1/hitlDetails",
                                   {"chosen_options": [option]})
    assert status == 200, f"answering {option}: {status} {body}"
    return body


def finish(airflow: Airflow, run_path: str) -> tuple[dict[str, Any], dict[str, str]]:
    def finished():
        status, body = airflow.request("GET", run_path)
        assert status == 200, body
        return body["state"] in ("success", "failed"), body

    run = airflow.wait_for("the run to finish", finished, RUN_TIMEOUT)
    status, body = airflow.request("GET", f"{run_path}/taskInstances")
    assert status == 200, body
    print("task instances:", [(ti["task_id"], ti["map_index"], ti["state"], ti["start_date"], ti["end_date"],
                               ti["try_number"]) for ti in body["task_instances"]])
    states: dict[str, str] = {}
    for ti in body["task_instances"]:  # a mapped task: "success" only when every instance succeeded
        states[ti["task_id"]] = ti["state"] if states.get(ti["task_id"], ti["state"]) == ti["state"] else "mixed"
    return run, states


def mapped_instances(airflow: Airflow, run_path: str, task_id: str) -> list[dict[str, Any]]:
    """The mapped task's instances (map index, state, rendered name), in map index order."""
    status, body = airflow.request("GET", f"{run_path}/taskInstances/{task_id}/listMapped?limit=1000")
    assert status == 200, body
    return sorted(body["task_instances"], key=lambda ti: ti["map_index"])


def task_log(airflow: Airflow, run_path: str, task_id: str) -> str:
    status, body = airflow.request("GET", f"{run_path}/taskInstances/{task_id}/logs/1?full_content=true")
    assert status == 200, body
    return json.dumps(body)
