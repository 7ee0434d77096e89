"""The real Databend engine (the ``databend`` package, embedded) behind a DB-API cursor, for tests.

Databend reports usage when it starts: the caller's environment must point HTTPS_PROXY/HTTP_PROXY at a closed
loopback port (and NO_PROXY at 127.0.0.1, where the S3 test server is) before this module starts the engine.
"""

from __future__ import annotations

from typing import Any


class EmbeddedCursor:
    """``execute`` / ``fetchall`` / ``fetchone`` / ``description`` over ``databend.SessionContext``."""

    def __init__(self, context: Any = None) -> None:
        if context is None:
            from databend import SessionContext

            context = SessionContext()
        self.context = context
        self._rows: list[tuple] = []
        self.description: list[tuple] | None = None

    def execute(self, sql: str, *_: Any) -> None:
        batches = self.context.sql(sql).to_py_arrow()
        names: list[str] = []
        rows: list[tuple] = []
        for batch in batches:
            names = batch.schema.names
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            rows += list(zip(*columns, strict=True)) if columns else []
        self.description = [(name, None, None, None, None, None, None) for name in names]
        self._rows = rows

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None

    def close(self) -> None:
        self._rows = []
