"""How much memory reading one metadata object may take: the cap, and how a user raises it.

A Fuse metadata object is kilobytes to tens of megabytes (a segment of a thousand blocks of a wide table).
A crafted or corrupted one (a zstd bomb, a bogus declared length) must not exhaust memory, so every
metadata object is held to one cap: its listed size before it is read, and the bytes it decompresses to
while it is decoded. The cap is per object, not per payload.
"""

from __future__ import annotations

import os
import re

from airflow_fuse.errors import BadInputError

MAX_METADATA_BYTES = 256 << 20
METADATA_CAP_ENV = "AIRFLOW_FUSE_MAX_METADATA_BYTES"

_SIZE_RE = re.compile(r"^(?P<number>\d+)\s*(?P<unit>|B|KiB|MiB|GiB|K|M|G)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def metadata_cap() -> int:
    """The cap in bytes: ``$AIRFLOW_FUSE_MAX_METADATA_BYTES`` (bytes, or with a KiB/MiB/GiB suffix) when set,
    else ``MAX_METADATA_BYTES`` (256 MiB)."""
    raw = os.environ.get(METADATA_CAP_ENV, "").strip()
    if not raw:
        return MAX_METADATA_BYTES
    match = _SIZE_RE.match(raw)
    cap = int(match.group("number")) * _UNITS[match.group("unit").lower()] if match else 0
    if cap <= 0:
        raise BadInputError(f"{METADATA_CAP_ENV}={raw!r} is not a size: give a number of bytes, or one with a "
                            f"KiB/MiB/GiB suffix (e.g. 512MiB); unset it for the default "
                            f"({_size(MAX_METADATA_BYTES)})")
    return cap


def over_cap_advice(cap: int) -> str:
    """The second half of every over-the-cap message: what the cap is and how to raise it."""
    return (f"the cap on one Fuse metadata object is {_size(cap)}; if this table's metadata really is that "
            f"large, raise it with the environment variable {METADATA_CAP_ENV} (e.g. {METADATA_CAP_ENV}="
            f"{max(2 * cap >> 20, 1)}MiB) and scan again")


def _size(n: int) -> str:
    return f"{n:,} bytes ({n / (1 << 20):.0f} MiB)" if n >= 1 << 20 else f"{n:,} bytes"
