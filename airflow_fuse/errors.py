"""Errors a user can act on. Each message names the problem and the fix; none carries a secret."""

from __future__ import annotations


class FuseError(Exception):
    """Base class: anything airflow-fuse refuses or cannot do, in words a data engineer can act on."""

    exit_code = 1


class BadInputError(FuseError, ValueError):
    """The request itself is wrong (URI, options, plan file, timestamps). Nothing was written."""

    exit_code = 2


class PreconditionError(FuseError):
    """The bucket is not in a state that allows recovery (missing, versioning off, no access)."""

    exit_code = 2


class MetadataError(BadInputError):
    """Table metadata could not be read or points somewhere it must not."""


class UnrecoverableError(FuseError):
    """Objects the table needs have no version left that holds data."""

    exit_code = 3
