"""Screenshots of the run book in a real browser against a real Airflow, checked as they are taken.

    python docs/screenshots.py          (from the repository root; writes docs/images/runbook-*.png)

Starts the embedded S3 server (moto on 127.0.0.1) and a throw-away Airflow (api-server, scheduler,
dag-processor, triggerer; SQLite, LocalExecutor: tests/airflow_server.py, as tests/test_real_airflow.py does),
puts a Databend table whose objects were deleted in a versioned bucket, triggers the run book with
``dry_run`` off and waits until its ``approval`` task asks. Then a headless Chromium driven by Playwright logs
in to the Airflow UI and captures:

- ``runbook-trigger-form.png``: the trigger form (its params and their sections), and
  ``runbook-trigger-form-restore.png``: its Restore section (an enum shown by its display names);
- ``runbook-approval.png``: the approval page of the waiting run (the plan's summary and digest);
- ``runbook-graph.png``: the run's graph.

Each page is checked in the browser before its picture is taken (the form shows the params' titles and
sections; the approval page shows the plan's digest and counts, as the scan reported them), so the script is
a check as well: it exits 1 when a page does not show what the documentation says. Everything it started
(moto, every Airflow process group, the browser) is stopped on the way out.

Needs ``playwright`` (the ``docs`` extra; its wheel carries the driver) and a Chromium: Debian's
(``apt-get install chromium``) at ``/usr/bin/chromium``, or the path in ``$CHROMIUM``. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's airflow_fuse and tests/, not an installed copy

from airflow_fuse.embedded import start_moto  # noqa: E402
from tests.airflow_server import CONN_ID, DAG_ID, Airflow, await_approval, running_airflow, trigger  # noqa: E402
from tests.fuse_fixtures import broken_table  # noqa: E402

IMAGES = ROOT / "docs" / "images"
FIXTURE = "fuse_purged"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
UI_TIMEOUT_MS = 60_000

# what the trigger form must show: the params' titles, by section (dags/fuse_failsafe_runbook.py)
FORM_TITLES = ("Table location", "Dry run", "Require approval")
FORM_SECTIONS = {
    "Table": ("Table format", "Snapshot location", "Include history"),
    "Time window": ("As of", "Deleted since", "Deleted before"),
    "Restore": ("Restore strategy", "Expected row count"),
    "Connection and storage": ("AWS connection", "Operations location"),
}
STRATEGY_DISPLAY = "Remove delete markers; copy only where needed"


class PageCheckFailed(AssertionError):
    """A page does not show what the documentation says it shows."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise PageCheckFailed(what)


@contextmanager
def browser() -> Iterator[Any]:
    """A page in a fresh headless Chromium (its own throw-away profile); closed on the way out."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="airflow-fuse-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS, viewport=VIEWPORT)
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield context.new_page()
        finally:
            context.close()


def log_in(page: Any, af: Airflow) -> None:
    """The simple auth manager's login form, with the password Airflow generated for ``admin``."""
    password = json.loads((af.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    page.goto(f"{af.base_url}/auth/login", wait_until="networkidle")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.wait_for_load_state("networkidle")


def shoot_trigger_form(page: Any, af: Airflow, table: str, out: Path, out_restore: Path) -> None:
    """The trigger form with its first params (the table filled in), then with its Restore section open."""
    page.goto(f"{af.base_url}/dags/{DAG_ID}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()

    def section(name: str) -> tuple[Any, list[str]]:
        """Open a section (the form shows one at a time) and read its params' labels ("Dry run *": required)."""
        header = dialog.get_by_role("button", name=name, exact=True)
        check(header.count() == 1, f"the trigger form has no section {name!r}")
        content = dialog.locator(f'[role=region][aria-labelledby$=":trigger:{name}"]')
        if header.get_attribute("aria-expanded") != "true":
            header.click()
        content.locator("label").first.wait_for()
        return content, [t.replace("*", "").strip() for t in content.locator("label").all_inner_texts()]

    for name, titles in {"Run Parameters": FORM_TITLES, **FORM_SECTIONS}.items():
        content, shown = section(name)
        for title in titles:
            check(title in shown, f"the trigger form's section {name!r} shows no param titled {title!r} ({shown})")
        if name == "Time window":
            check(content.locator("[data-testid=datetime-input]").count() == len(titles),
                  f"the time window's params are not date-time pickers: {content.inner_text()!r}")
        if name == "Restore":
            check(STRATEGY_DISPLAY in content.inner_text(),
                  f"the restore strategy is not shown as {STRATEGY_DISPLAY!r}: {content.inner_text()!r}")

    content, _ = section("Run Parameters")
    # the table, as the on-call fills it in: the form is then valid (no "This field is required")
    content.locator("input[name=element_table]").fill(table)
    check(dialog.get_by_text("This field is required").count() == 0, "the trigger form is not valid with a table")
    check(dialog.get_by_role("button", name="Trigger", exact=True).is_enabled(), "the form's Trigger button is off")
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)  # the accordion's animation
    dialog.screenshot(path=str(out))
    section("Restore")
    page.wait_for_timeout(500)
    dialog.screenshot(path=str(out_restore))


def shoot_approval(page: Any, af: Airflow, run_id: str, scan: dict[str, Any], out: Path) -> None:
    page.goto(f"{af.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/approval/required_actions",
              wait_until="networkidle")
    restore = scan["restore"] + scan["damaged"]
    subject = page.get_by_text(f"Restore {restore} objects", exact=False)
    subject.first.wait_for()
    text = page.locator("body").inner_text()
    check(scan["plan_digest"] in text, f"the approval page does not show the plan digest {scan['plan_digest']}")
    check(re.search(rf"Plan digest\s+{scan['plan_digest']}", text) is not None,
          "the plan digest is not labelled as such on the approval page")
    check(re.search(rf"undelete \(remove the delete markers above a version\)\s+{scan['restore']}\s", text)
          is not None, f"the approval page does not count {scan['restore']} objects to undelete")
    check(re.search(rf"total written\s+{restore}\s", text) is not None,
          f"the approval page does not count {restore} objects written in all")
    check(f"{scan['keys_listed']} keys" in text, f"the approval page does not say {scan['keys_listed']} keys listed")
    for option in ("Approve", "Reject"):
        check(page.get_by_role("button", name=option, exact=True).count() == 1,
              f"the approval page has no {option} button")
    page.mouse.move(0, 0)
    page.screenshot(path=str(out), full_page=True)


def shoot_graph(page: Any, af: Airflow, run_id: str, out: Path) -> None:
    page.set_viewport_size({"width": 1200, "height": 520})
    page.goto(f"{af.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}", wait_until="networkidle")
    page.get_by_role("button", name=re.compile(r"^Show Graph")).click()
    nodes = page.locator(".react-flow__node")
    nodes.nth(5).wait_for()
    names = [t.split("\n")[0] for t in nodes.all_inner_texts()]
    # A mapped task is labelled with its count of mapped instances ("amend [N]": one per shard, unknown until the
    # shard task has run).
    check(names[:5] == ["versioning", "scan", "route", "approval", "shard"] and len(names) == 8
          and re.fullmatch(r"amend( \[\d*\])?", names[5]) is not None and names[6:] == ["report", "verify"],
          f"the graph shows the tasks {names}")
    check("awaiting_input" in nodes.nth(3).inner_text(), "the graph does not show the approval awaiting input")
    collapse = page.get_by_role("button", name="Collapse Details Panel")
    if collapse.count():
        collapse.first.click()
        page.wait_for_timeout(500)
    fit = page.locator(".react-flow__controls-fitview")
    if fit.count():
        fit.first.click()  # the graph fitted to the wider pane
    page.wait_for_timeout(1000)  # the fit's animation
    page.mouse.move(0, 0)
    page.screenshot(path=str(out))
    page.set_viewport_size(VIEWPORT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="where the PNGs go (default: docs/images/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    moto = start_moto()
    try:
        s3 = moto.client()
        bucket, expect = broken_table(s3, FIXTURE)
        table = f"s3://{bucket}/{expect['storage_root']}"
        print(f"moto on {moto.endpoint_url}; the broken table: {table}", flush=True)
        with running_airflow(moto.connection_json(), prefix="airflow-fuse-shots-") as af:
            with af.explain_failure():  # the Airflow side failing: each process's log tail
                print(f"Airflow on {af.base_url}", flush=True)
                status, dag = af.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
                assert status == 200, dag
                run_path = trigger(af, {"table": table, "aws_conn_id": CONN_ID, "dry_run": False,
                                        "expect_row_count": expect["row_count"]})
                detail = await_approval(af, run_path)
                run_id = detail["task_instance"]["dag_run_id"]
                status, xcom = af.request("GET", f"{run_path}/taskInstances/scan/xcomEntries/return_value")
                assert status == 200, xcom
                scan = json.loads(xcom["value"]) if isinstance(xcom["value"], str) else xcom["value"]
                assert scan["restore"] == len(expect["referenced_keys"]), scan
                print(f"run {run_id} awaits approval of plan {scan['plan_digest']}", flush=True)

            with browser() as page:
                log_in(page, af)
                shots = {
                    "runbook-trigger-form.png": lambda p: shoot_trigger_form(page, af, table, p, p.with_name(
                        "runbook-trigger-form-restore.png")),
                    "runbook-approval.png": lambda p: shoot_approval(page, af, run_id, scan, p),
                    "runbook-graph.png": lambda p: shoot_graph(page, af, run_id, p),
                }
                for name, shoot in shots.items():
                    try:
                        shoot(args.out / name)
                    except Exception:
                        failed = Path(tempfile.gettempdir()) / f"failed-{name}"
                        page.screenshot(path=str(failed), full_page=True)
                        print(f"{name}: the page as it was: {failed}", file=sys.stderr)
                        raise
                    print(f"wrote {args.out / name}", flush=True)
    except PageCheckFailed as exc:
        print(f"screenshots: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
