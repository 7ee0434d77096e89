"""Long-lived column buffers in memory maps of their own, given back to the system the moment they are freed.

A listing's rows are made a page at a time and freed in key order while the plan is built (the listings of
concurrent key ranges interleave in time). Left in Arrow's allocator (mimalloc), every allocator page then holds
rows of many ranges, so hardly any page is wholly free before the planning ends: the process holds the listing
and the plan at once (measured: about 2x the live Arrow memory). Copied into an anonymous memory map per large
buffer, a group of rows goes back to the system when its last row is planned (``munmap``), and the plan grows
in its place.
"""

from __future__ import annotations

import mmap
import threading

import pyarrow as pa

MIN_BYTES = 64 * 1024  # smaller buffers stay in Arrow's pool (a map is at least a page and a kernel mapping)
MAX_MAPS = 16_384  # live maps at most (Linux allows 65,530 mappings a process by default): then the pool again

_lock = threading.Lock()
_live = 0


class _Map(mmap.mmap):
    """An anonymous map that counts itself while alive."""

    def __del__(self) -> None:
        global _live
        with _lock:
            _live -= 1


def live_maps() -> int:
    return _live


def _mapped(buffer: pa.Buffer) -> pa.Buffer:
    global _live
    with _lock:
        if _live >= MAX_MAPS:
            return buffer
        _live += 1
    try:
        mapping = _Map(-1, buffer.size)
    except BaseException:
        with _lock:
            _live -= 1
        raise
    mapping.write(memoryview(buffer))
    return pa.py_buffer(mapping)


def mapped(array: pa.Array) -> pa.Array:
    """``array`` with each of its buffers of ``MIN_BYTES`` or more copied into a memory map of its own (flat
    types: strings, binaries, numbers, times, booleans); other arrays as given."""
    if array.type.num_fields or pa.types.is_dictionary(array.type):
        return array
    buffers = array.buffers()
    if not any(b is not None and b.size >= MIN_BYTES for b in buffers):
        return array
    moved = [b if b is None or b.size < MIN_BYTES else _mapped(b) for b in buffers]
    return pa.Array.from_buffers(array.type, len(array), moved, null_count=array.null_count, offset=array.offset)


def mapped_table(table: pa.Table) -> pa.Table:
    """A table of one chunk a column with its large buffers in maps (``mapped``)."""
    return pa.table([mapped(column.chunk(0)) if column.num_chunks == 1 else column for column in table.columns],
                    schema=table.schema)
