"""Errors a user can act on. Each message names the problem and the fix; none carries a secret."""

from __future__ import annotations

import re
from typing import Any

# scheme://user:password@host — credentials written into a URL (an endpoint_url, say).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@'\"]+)@")


def redact(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", text)


class FuseError(Exception):
    """Base class: anything airflow-fuse refuses or cannot do, in words a data engineer can act on.

    The message is redacted on construction: credentials written into a URL never reach a log, an error, XCom
    or a report through an error.
    """

    exit_code = 1

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(redact(str(message)), *args)


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
