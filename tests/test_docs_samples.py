"""Every code sample on the documentation site and in the README is run, compared with what it shows, or marked on
the page as not run, with the reason.

A fenced block is, by its language and its fence's ``title``:

- ``title="Not run: REASON"`` on the fence (the site shows the title above the block), or a first line
  ``# Not run: REASON`` (for the README: GitHub shows no titles): not run, and the reader sees why.
- ``python``: executed (the blocks of one page share a namespace, as the reader runs them top to bottom).
- ``console``/``bash``/``sh``: each ``airflow-fuse …`` or ``python -m …`` command runs as a real process against
  the embedded S3 server, on a Databend table deleted the way the walkthrough deletes it (``s3://lake/warehouse/``,
  the commands of one page share its state); a synopsis (``[--option]``, ``a|b``) is checked against the command's
  ``--help``: every option it names must exist. Any other command must be marked.
- ``json``/``text``/unlabelled: an output. Right under a ``$ airflow-fuse …`` line it is compared with what that
  command prints; otherwise it must be marked.
- ``mermaid``: a diagram, drawn by the site.

docs/walkthrough.md is left out: docs/walkthrough.py writes it by running every sample on it (CI runs the script).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_fuse.embedded import S3Server, start_moto
from tests.conftest import ROOT
from tests.fuse_fixtures import blob, history

PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "walkthrough.md")]
SHELLS = {"console", "bash", "sh", "shell"}
OUTPUTS = {"json", "text", ""}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>(?:[\w-]+(?![\w=-]))?)(?P<attrs>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]*)"')
NOT_RUN = "Not run: "
SYNOPSIS = re.compile(r"\[-|\w\|\w|[A-Z]{3,}")  # [--flag], a|b, s3://BUCKET/TABLE/
TABLE = "s3://lake/warehouse/"  # the table the samples name: a Databend table under this storage root
COMMAND_TIMEOUT = 120


@dataclass(frozen=True)
class Sample:
    page: Path
    line: int
    lang: str
    title: str
    text: str
    above: str  # the last non-blank line before the fence

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def not_run_reason(self) -> str | None:
        if self.title.startswith(NOT_RUN):
            return self.title[len(NOT_RUN):].strip() or None
        first = self.text.lstrip().splitlines()[0] if self.text.strip() else ""
        if first.startswith("# " + NOT_RUN):
            return first[len("# " + NOT_RUN):].strip() or None
        return None

    @property
    def marked(self) -> bool:
        return self.title.startswith(NOT_RUN.strip()) or self.text.lstrip().startswith("# " + NOT_RUN.strip())


def samples(page: Path) -> Iterator[Sample]:
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        above = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        title = TITLE.search(opening["attrs"])
        body = "\n".join(line[indent:] for line in lines[index + 1:end])
        yield Sample(page, index + 1, opening["lang"].lower(), title["title"] if title else "", body + "\n", above)
        index = end + 1


ALL = [sample for page in PAGES for sample in samples(page)]


def commands(sample: Sample) -> list[str]:
    """The commands of a shell block: ``$`` lines of a console block, every line of a script; continuation lines
    joined, comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in sample.text.splitlines():
        line = raw.strip()
        if sample.lang == "console":
            if not pending and not line.startswith("$ "):
                continue  # output shown under a command
            line = line.removeprefix("$ ") if not pending else line
        if not line or (line.startswith("#") and not pending):
            continue
        line = re.sub(r"\s+#\s.*$", "", line)
        if line.startswith("[") and out and not pending:  # a synopsis wrapped onto the next line
            out[-1] += " " + line
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def runnable(command: str) -> bool:
    return command.startswith(("airflow-fuse ", "python -m "))


# every sample is accounted for ------------------------------------------------------------------------------

def test_every_sample_is_run_compared_or_marked_not_run_with_a_reason():
    unaccounted = []
    for sample in ALL:
        if sample.lang == "mermaid" or sample.not_run_reason:
            continue
        if sample.marked:
            unaccounted.append(f"{sample.name}: 'Not run:' without a reason")
        elif sample.lang in SHELLS:
            unaccounted += [f"{sample.name}: `{c}` is neither airflow-fuse nor python -m; run it or mark the block"
                            for c in commands(sample) if not runnable(c)]
        elif sample.lang in OUTPUTS and not sample.above.startswith("$ airflow-fuse "):
            unaccounted.append(f"{sample.name}: an output under no `$ airflow-fuse` line; mark it `{NOT_RUN}…`")
        elif sample.lang not in OUTPUTS | SHELLS | {"python"}:
            unaccounted.append(f"{sample.name}: a {sample.lang!r} block the check does not know")
    assert not unaccounted, "\n".join(unaccounted)
    assert len(ALL) > 20, "the pages hold fewer samples than they do: the parser lost some"


def test_the_marks_are_visible_on_the_site():
    """The site renders a fence's title above the block (pymdownx.highlight): the reason is on the page."""
    config = (ROOT / "mkdocs.yml").read_text()
    assert "pymdownx.highlight" in config and "pymdownx.superfences" in config
    assert [s for s in ALL if s.not_run_reason], "no sample is marked: the check of the marks tests nothing"


# the samples, run ---------------------------------------------------------------------------------------------

def _pages_with(kind: str) -> list[Path]:
    def wanted(sample: Sample) -> bool:
        if sample.not_run_reason is not None:
            return False
        if kind == "python":
            return sample.lang == "python"
        return (sample.lang in SHELLS and any(runnable(c) for c in commands(sample))) or \
            (sample.lang in OUTPUTS and sample.above.startswith("$ airflow-fuse "))
    return sorted({s.page for s in ALL if wanted(s)})


def _deleted_databend_table(server: S3Server) -> None:
    """The Databend fixture ``fuse_basic`` (3000 rows) under ``s3://lake/warehouse/``, every object deleted."""
    s3 = server.client()
    s3.create_bucket(Bucket="lake")
    s3.put_bucket_versioning(Bucket="lake", VersioningConfiguration={"Status": "Enabled"})
    for op in history("fuse_basic"):
        key = "warehouse/" + op["key"].removeprefix("tbl/")
        if op["op"] == "put":
            s3.put_object(Bucket="lake", Key=key, Body=blob("fuse_basic", op["blob"]))
        else:
            s3.delete_object(Bucket="lake", Key=key)
    live = [o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="warehouse/")["Contents"]]
    s3.delete_objects(Bucket="lake", Delete={"Objects": [{"Key": key} for key in live]})


def _env(server: S3Server) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_DEFAULT_REGION": server.region,
            "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(ROOT), "COLUMNS": "120"}


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``airflow-fuse …`` against the embedded server; ``python -m …`` (the benchmarks: they start their own
    servers) without its AWS variables."""
    args = shlex.split(command)
    if args[0] == "airflow-fuse":
        args = [sys.executable, "-c", "from airflow_fuse.cli import run; run()", *args[1:]]
    else:  # python -m …
        args = [sys.executable, *args[1:]]
        env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    return subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=COMMAND_TIMEOUT)


def _expected_status(command: str) -> set[int]:
    """The table starts deleted: a scan or a dry run finds restorable objects (4); anything else must succeed."""
    args = shlex.split(command)
    if args[:2] == ["airflow-fuse", "scan"] or (args[:2] == ["airflow-fuse", "amend"] and "--dry-run" in args):
        return {4}
    return {0}


def _check_synopsis(command: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """Every ``--option`` a synopsis names is in the command's ``--help``."""
    words = command.split()
    program = words[:2] if words[0] == "airflow-fuse" else words[:3]  # airflow-fuse SUB / python -m MOD
    done = _run(shlex.join([*program, "--help"]), cwd, env)
    if done.returncode != 0:
        return [f"`{' '.join(program)} --help` exited {done.returncode}: {done.stdout[-2000:]}"]
    named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", command))
    offered = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", done.stdout))
    return [f"`{' '.join(program)}` has no {option} (the synopsis names it)" for option in sorted(named - offered)]


@pytest.mark.parametrize("page", _pages_with("shell"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_commands_of_a_page_run_and_print_what_it_shows(page, tmp_path):
    server = start_moto()
    try:
        _deleted_databend_table(server)
        env = _env(server)
        problems: list[str] = []
        for sample in samples(page):
            if sample.not_run_reason is not None:
                continue
            if sample.lang in SHELLS:
                for command in filter(runnable, commands(sample)):
                    if SYNOPSIS.search(command):
                        problems += [f"{sample.name}: {p}" for p in _check_synopsis(command, tmp_path, env)]
                        continue
                    done = _run(command, tmp_path, env)
                    if done.returncode not in _expected_status(command):
                        problems.append(f"{sample.name}: `{command}` exited {done.returncode}:\n{done.stdout[-3000:]}")
            elif sample.lang in OUTPUTS and sample.above.startswith("$ airflow-fuse "):
                command = sample.above.removeprefix("$ ")
                done = _run(command, tmp_path, env)
                if done.returncode != 0:
                    problems.append(f"{sample.name}: `{command}` exited {done.returncode}:\n{done.stdout[-3000:]}")
                elif not _same_output(sample, done.stdout):
                    problems.append(f"{sample.name}: the page shows another output than `{command}` prints:\n"
                                    f"{done.stdout}")
        assert not problems, "\n".join(problems)
    finally:
        server.stop()


def _same_output(sample: Sample, printed: str) -> bool:
    if sample.lang == "json":
        return json.loads(sample.text) == json.loads(printed)
    return sample.text.strip() == printed.strip()


@pytest.mark.parametrize("page", _pages_with("python"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_samples_of_a_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__docs_sample__"}
    ran = 0
    for sample in samples(page):
        if sample.lang == "python" and sample.not_run_reason is None:
            exec(compile(sample.text, sample.name, "exec"), namespace)  # noqa: S102 - the page's own sample
            ran += 1
    assert ran
