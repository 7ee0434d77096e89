"""The registry of table formats: a format is one layout module that declares a ``FORMAT``.

A format tells the engine how to build its layout from the scan options, how to recognise its tables in a
listing (``detect``), which options it takes (``layout_options`` keys), and which object kinds are data files
holding rows (verification reads their footers). The engine, the CLI's ``--format`` choices, the operators and
the DAGs' param enums all read this registry: adding a format is one new module listed in ``BUILTIN`` (or
published by another package under the ``airflow_fuse.formats`` entry-point group) plus its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from airflow_fuse.errors import BadInputError

if TYPE_CHECKING:
    from airflow_fuse.inventory import Inventory
    from airflow_fuse.layouts.base import Layout

AUTO = "auto"
# Layout modules that declare a FORMAT, in detection order (the first whose detect() is true wins; a format
# without detect, such as prefix, is the fallback).
BUILTIN = (
    "airflow_fuse.layouts.fuse",
    "airflow_fuse.layouts.iceberg",
    "airflow_fuse.layouts.delta",
    "airflow_fuse.layouts.prefix",
)
ENTRY_POINT_GROUP = "airflow_fuse.formats"


@dataclass(frozen=True)
class ScanTimes:
    """The validated time selection of a scan (prefix tables)."""

    as_of: datetime | None = None
    deleted_since: datetime | None = None
    deleted_before: datetime | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.as_of, self.deleted_since, self.deleted_before))


LayoutFactory = Callable[[Mapping[str, Any], ScanTimes], "Layout"]


@dataclass(frozen=True)
class TableFormat:
    """One table format.

    :param name: what users write (``--format``, ``table_format=``).
    :param title: a short human name (UI enums).
    :param build: ``build(layout_options, times)`` → the layout that lists the keys a table needs.
    :param detect: true when a listing holds a table of this format (``None``: never detected; a fallback).
    :param options: the ``layout_options`` keys this format accepts, with a one-line description each.
    :param row_kinds: kinds of needed objects that are Parquet data files with a row count (verification).
    :param time_window: whether ``as_of`` / ``deleted_since`` / ``deleted_before`` apply to this format.
    :param referenced: whether the table's own metadata says which objects it needs (false for ``prefix``: every
        deleted key counts, intentional deletions included, so scheduled amends do not restore it unasked).
    """

    name: str
    title: str
    build: LayoutFactory
    detect: Callable[[Inventory], bool] | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    row_kinds: frozenset[str] = frozenset()
    time_window: bool = False
    referenced: bool = True

    def check_options(self, layout_options: Mapping[str, Any]) -> None:
        unknown = sorted(set(layout_options) - set(self.options))
        if unknown:
            accepted = ", ".join(sorted(self.options)) or "none"
            raise BadInputError(f"layout option(s) {', '.join(unknown)} do not apply to table format {self.name!r} "
                                f"(it accepts: {accepted})")


_registry: dict[str, TableFormat] | None = None


def _load() -> dict[str, TableFormat]:
    global _registry
    if _registry is None:
        found: dict[str, TableFormat] = {}
        for module_name in BUILTIN:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:  # a built-in format not shipped in this build
                    continue
                raise
            fmt = getattr(module, "FORMAT", None)
            if isinstance(fmt, TableFormat):
                found[fmt.name] = fmt
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            fmt = ep.load()
            if isinstance(fmt, TableFormat) and fmt.name not in found:
                found[fmt.name] = fmt
        _registry = found
    return _registry


def register(fmt: TableFormat) -> None:
    """Add (or replace) a format at run time (tests, plug-ins that are not installed packages)."""
    _load()[fmt.name] = fmt


def names(*, with_auto: bool = True) -> tuple[str, ...]:
    """The format names users may choose, ``auto`` first."""
    return ((AUTO,) if with_auto else ()) + tuple(_load())


def titles() -> dict[str, str]:
    """Name → human title, for UI enums (``values_display``)."""
    return {AUTO: "Detect from the listing", **{name: fmt.title for name, fmt in _load().items()}}


def get(name: str) -> TableFormat:
    formats = _load()
    if name not in formats:
        raise BadInputError(f"table_format {name!r} is not one of {', '.join(names())}")
    return formats[name]


def detect(inventory: Inventory) -> str:
    """The first format whose ``detect`` recognises the listing; else the fallback (``prefix``)."""
    fallback = None
    for fmt in _load().values():
        if fmt.detect is None:
            fallback = fallback or fmt.name
        elif fmt.detect(inventory):
            return fmt.name
    return fallback or "prefix"
