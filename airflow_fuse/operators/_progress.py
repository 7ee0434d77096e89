"""Progress lines for the task log: at most one every few seconds, and always the last."""

from __future__ import annotations

import logging
import time

from airflow_fuse.report import human_bytes


class LogProgress:
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
