"""Giving memory back: Arrow's allocator keeps freed pages for reuse unless asked to return them."""

from __future__ import annotations

import gc

import pyarrow as pa


def release_memory() -> None:
    """Free unreachable Python objects, then have Arrow's memory pool return its unused pages to the system (the
    listing's columns after a plan is made, so the restore starts with the plan's memory only)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
