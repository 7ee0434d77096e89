"""JSON text of Arrow columns, exactly as ``json.dumps`` writes the same values (``ensure_ascii``), made with pyarrow
compute: what the plan digest hashes and what plan and report files hold, without a Python object per value.

A string ``json.dumps`` writes as itself between quotes (printable ASCII, no quote or backslash: nearly every key,
version id, ETag and reason) is quoted on the column; the rare others are written by ``json.dumps`` itself, one
value at a time. Integers are their decimal text, booleans ``true``/``false``, a missing value ``null``, a list
of strings its elements' texts joined. tests/test_json_columns.py checks the bytes against ``json.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc


def strings(values: pa.Array) -> pa.Array:
    """Each string as ``json.dumps`` writes it (``null`` for a missing one)."""
    escaped = values
    if pc.any(pc.match_substring(values, '"')).as_py() or pc.any(pc.match_substring(values, "\\")).as_py():
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    # printable ASCII (space to '~'): ASCII, and no control character nor DEL
    plain = pc.fill_null(pc.and_(pc.string_is_ascii(values), pc.ascii_is_printable(values)), True)
    if not pc.all(plain).as_py():  # control characters, DEL, beyond ASCII: as json.dumps writes them
        other = pc.invert(plain)
        written = [json.dumps(v, ensure_ascii=True) for v in values.filter(other).to_pylist()]
        quoted = pc.replace_with_mask(quoted, other, pa.array(written, pa.string()))
    return pc.fill_null(quoted, "null")


def supported(schema: pa.Schema) -> bool:
    """Can ``values`` write every column of this schema?"""
    return all(_supported(f.type) for f in schema)


def _supported(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind) or pa.types.is_null(kind)
            or (pa.types.is_list(kind) and (pa.types.is_string(kind.value_type) or pa.types.is_null(kind.value_type))))


def values(column: pa.Array, *, list_indent: str | None = None) -> pa.Array:
    """Each value of a column as its JSON text: compact (``separators=(",", ":")``), or a non-empty list's elements
    each on its own line after ``list_indent`` (with ``indent``: ``list_indent`` is the elements' indentation, the
    closing bracket one space less)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return strings(column.cast(pa.string()))
    if pa.types.is_integer(kind):
        return pc.fill_null(column.cast(pa.string()), "null")
    if pa.types.is_boolean(kind):
        return pc.fill_null(pc.if_else(column, "true", "false"), "null")
    if pa.types.is_null(kind):
        return pa.array(["null"] * len(column), pa.string())
    if pa.types.is_list(kind):
        offsets = column.offsets
        offsets = pc.subtract(offsets, offsets[0]).cast(pa.int32())
        flat = column.flatten()  # the elements of this slice's lists
        texts = values(flat) if len(flat) else pa.array([], pa.string())
        lists = pa.ListArray.from_arrays(offsets, texts, mask=column.is_null() if column.null_count else None)
        if list_indent is None:
            joined = pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")
        else:
            inside = pc.binary_join(lists, ",\n" + list_indent)
            joined = pc.if_else(pc.equal(pc.list_value_length(column), 0), "[]", pc.binary_join_element_wise(
                "[\n" + list_indent, inside, "\n" + list_indent[:-1] + "]", ""))
        return pc.fill_null(joined, "null")
    raise TypeError(f"no JSON text for a column of type {kind}")


def compact_rows(table: pa.Table) -> pa.Array:
    """Each row as ``,[v1,v2,…]``: the list of its values, compact (what the plan digest hashes)."""
    columns = [values(table.column(i).combine_chunks()) for i in range(table.num_columns)]
    return pc.binary_join_element_wise(",[", pc.binary_join_element_wise(*columns, ","), "]", "")


def indented_rows(table: pa.Table, level: int) -> pa.Array:
    """Each row as ``,\\n`` then the object of its columns as ``json.dumps(..., indent=1)`` writes it nested ``level``
    deep (a list's element in a list under the document: 2)."""
    pad = " " * level
    parts: list[pa.Array | str] = [",\n" + pad + "{"]
    for i, name in enumerate(table.column_names):
        label = ("," if i else "") + "\n" + pad + " " + json.dumps(name) + ": "
        parts += [label, values(table.column(i).combine_chunks(), list_indent=pad + "  ")]
    parts.append("\n" + pad + "}")
    if table.num_columns == 0:
        parts = [",\n" + pad + "{}"]
    return pc.binary_join_element_wise(*parts, "") if len(parts) > 1 else pa.array(parts * table.num_rows)


def text_bytes(texts: pa.Array, *, skip: int = 0) -> memoryview:
    """The bytes of a string array's values one after another (the first ``skip`` bytes left out)."""
    _, offsets_buffer, data = texts.buffers()
    offsets = memoryview(offsets_buffer).cast("B").cast("i")  # int32 offsets of a string array
    begin, end = offsets[texts.offset], offsets[texts.offset + len(texts)]
    if data is None:
        return memoryview(b"")
    return memoryview(data)[begin + skip:end]


def joined_rows(batches: Iterable[pa.Table], rows: str, *, level: int = 2) -> Iterator[bytes | memoryview]:
    """The rows of ``batches`` as the inside of a JSON list: ``rows`` is ``"compact"`` (``,``-joined, as the digest
    hashes them) or ``"indented"`` (as ``json.dumps(..., indent=1)`` writes them ``level`` deep, each row on its own
    lines after a newline). Nothing for no rows."""
    first = True
    for batch in batches:
        if not batch.num_rows:
            continue
        texts = compact_rows(batch) if rows == "compact" else indented_rows(batch, level)
        yield text_bytes(texts, skip=(1 if rows == "compact" else 2) if first else 0)
        first = False
