"""The plan digest's byte stream for rows held as Arrow columns, made with pyarrow compute a batch at a time.

``Plan.digest`` hashes each row as ``json.dumps(list_of_values, separators=(",", ":"), ensure_ascii=True)``.
Made one Python object per value, that costs ~3 µs a row (30 s of CPU at 10 M keys). Here the same text is
made on the columns: a string that ``json.dumps`` writes as itself between quotes (printable ASCII, no quote or
backslash: nearly every key, version id, ETag and reason) is quoted on the column; the rare others are written by
``json.dumps`` itself, one value at a time; integers are their decimal text, booleans ``true``/``false``, a
missing value ``null``, a list of strings its elements joined. The bytes hashed are exactly those of the
row-by-row stream (tests/test_plan_digest.py checks it on any text), so the digest is the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# Strings json.dumps(ensure_ascii=True) writes unchanged between quotes: printable ASCII but '"' and '\'.
_PLAIN_TEXT = r"^[ !#-\[\]-~]*$"
BATCH = 65_536  # rows made into text at a time (~20 MB of text)


def _strings(values: pa.Array) -> pa.Array:
    """Each string as ``json.dumps`` writes it (``null`` for a missing one)."""
    quoted = pc.binary_join_element_wise('"', values, '"', "")
    plain = pc.fill_null(pc.match_substring_regex(values, _PLAIN_TEXT), True)
    if not pc.all(plain).as_py():
        other = pc.invert(plain)
        escaped = [json.dumps(v, ensure_ascii=True) for v in values.filter(other).to_pylist()]
        quoted = pc.replace_with_mask(quoted, other, pa.array(escaped, pa.string()))
    return pc.fill_null(quoted, "null")


def _json_column(values: pa.Array) -> pa.Array:
    """Each value of a column as its canonical JSON text."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _strings(values.cast(pa.string()))
    if pa.types.is_integer(kind):
        return pc.fill_null(values.cast(pa.string()), "null")
    if pa.types.is_boolean(kind):
        return pc.fill_null(pc.if_else(values, "true", "false"), "null")
    if pa.types.is_list(kind) and pa.types.is_string(kind.value_type):
        offsets = values.offsets
        offsets = pc.subtract(offsets, offsets[0]).cast(pa.int32())
        flat = values.flatten()  # the elements of this slice's lists
        texts = _strings(flat) if len(flat) else pa.array([], pa.string())
        lists = pa.ListArray.from_arrays(offsets, texts, mask=values.is_null() if values.null_count else None)
        joined = pc.binary_join(lists, ",")
        return pc.fill_null(pc.binary_join_element_wise("[", joined, "]", ""), "null")
    if pa.types.is_null(kind):
        return pa.array(["null"] * len(values), pa.string())
    raise TypeError(f"no canonical JSON for a column of type {kind}")


def row_texts(batches: Iterable[pa.Table]) -> Iterator[pa.Array]:
    """Each row as ``,[v1,v2,…]`` (canonical JSON, values in column order), a string array per batch."""
    for batch in batches:
        if not batch.num_rows:
            continue
        columns = [_json_column(batch.column(i).combine_chunks()) for i in range(batch.num_columns)]
        joined = pc.binary_join_element_wise(*columns, ",")
        yield pc.binary_join_element_wise(",[", joined, "]", "")


def hash_rows(state: Any, batches: Iterable[pa.Table]) -> None:
    """Feed ``state`` (a hashlib object) the rows of ``batches`` (in order) as ``Plan.digest`` hashes them: the
    rows' canonical JSON joined by commas (what sits between ``"items":[`` and ``]``)."""
    first = True
    for texts in row_texts(batches):
        _, offsets_buffer, data = texts.buffers()
        offsets = memoryview(offsets_buffer).cast("B").cast("i")  # int32 offsets of a string array
        begin, end = offsets[texts.offset], offsets[texts.offset + len(texts)]
        if first:
            begin += 1  # no comma before the first row
            first = False
        state.update(memoryview(data)[begin:end])


def supported(schema: pa.Schema) -> bool:
    """Can ``hash_rows`` write every column of this schema?"""
    for f in schema:
        kind = f.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
                or pa.types.is_boolean(kind) or pa.types.is_null(kind)
                or (pa.types.is_list(kind) and pa.types.is_string(kind.value_type))):
            return False
    return True
