"""Read Parquet bytes into a pyarrow Table without pyarrow's dataset scanner.

``pyarrow.parquet.read_table`` goes through the dataset scanner, whose background threads can still be alive
when the interpreter exits; the process then dies with SIGABRT ("terminate called without an active
exception", apache/arrow#34314). Measured with pyarrow 26: 65 of 300 short processes that read a small
table with ``read_table`` and exited aborted; 0 of 600 with ``ParquetFile.read``. An abort at exit turns
the CLI's exit status (2 = bad input, 3 = unrecoverable) into -6, so every read of whole Parquet files here
goes through this function, on the calling thread only (``use_threads=False``: no Arrow pool thread is
started for it; callers that read many files run them in their own pool).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq


def read_parquet(data: bytes) -> pa.Table:
    """The whole table in ``data`` (the bytes of one Parquet file)."""
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
