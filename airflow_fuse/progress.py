"""Progress of a scan and a restore: one interface, two renderings (a terminal, a task log).

The engine calls ``page(entries)`` after each listing page and ``restore(done, total, bytes)`` as keys are
restored; the CLI shows a bar on a terminal (a line every few seconds otherwise) and the operators write a
line to the task log every few seconds, and always the last one.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from airflow_fuse.report import human_bytes


class Progress(Protocol):
    def page(self, entries: int) -> None: ...

    def restore(self, done: int, total: int, size: int) -> None: ...


class TerminalProgress:
    """A progress bar on a terminal, a line every few seconds otherwise (logs, CI)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.listed = 0

    def page(self, entries: int) -> None:
        self.listed += entries
        self._emit(f"listing: {self.listed} versions and delete markers")

    def restore(self, done: int, total: int, size: int) -> None:
        if self.tty:
            width = 30
            filled = int(width * done / max(total, 1))
            self._emit(f"restoring [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({human_bytes(size)})",
                       force=done == total)
        else:
            self._emit(f"restoring: {done}/{total} objects, {human_bytes(size)}", force=done == total)

    def _emit(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if force or now - self.last > 0.1:
                self.stream.write("\r" + text.ljust(78))
                self.stream.flush()
                self.last = now
        elif force or now - self.last > 5:
            self.stream.write(text + "\n")
            self.last = now

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")


class LogProgress:
    """Task-log lines: at most one every ``every`` seconds, and always the last."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, every: float = 10.0) -> None:
        self.log = log
        self.every = every
        self.last = 0.0
        self.listed = 0
        self.pages = 0

    def page(self, entries: int) -> None:
        self.listed += entries
        self.pages += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.log.info("Listing: %d versions and delete markers so far (%d pages)", self.listed, self.pages)
            self.last = now

    def restore(self, done: int, total: int, size: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.every:
            self.log.info("Restoring: %d/%d objects (%s)", done, total, human_bytes(size))
            self.last = now
