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

import io
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq


def read_parquet(data: bytes) -> pa.Table:
    """The whole table in ``data`` (the bytes of one Parquet file)."""
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


# pyarrow.parquet.write_table cuts a table into row groups of this many rows (WriterProperties' default
# max_row_group_length); write_parquet writes one row group per batch of it, so the bytes are the same.
ROW_GROUP = 1024 * 1024


def write_parquet(schema: pa.Schema, batches: Iterable[pa.Table]) -> bytes:
    """The bytes ``pq.write_table`` writes for the rows of ``batches`` (with ``schema``, its metadata included),
    made a row group at a time: each batch but the last must hold exactly ``ROW_GROUP`` rows."""
    sink = io.BytesIO()
    wrote = False
    with pq.ParquetWriter(sink, schema) as writer:
        for batch in batches:
            if batch.num_rows or not wrote:
                writer.write_table(batch.replace_schema_metadata(schema.metadata).combine_chunks())
                wrote = True
        if not wrote:
            writer.write_table(schema.empty_table())
    return sink.getvalue()
