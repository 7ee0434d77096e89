"""Giving memory back: Arrow's allocator keeps freed pages for reuse unless asked to return them."""

from __future__ import annotations

import gc

import pyarrow as pa


def release_memory(*, collect: bool = False) -> None:
    """Have Arrow's memory pool return its unused pages to the system (after ``gc.collect()`` if ``collect``: the
    listing's columns after a plan is made, so the restore starts with the plan's memory only)."""
    if collect:
        gc.collect()
    pa.default_memory_pool().release_unused()
