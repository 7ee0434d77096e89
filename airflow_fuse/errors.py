"""Errors a user can act on. Each message names the problem and the fix; none carries a secret."""

from __future__ import annotations

import re
from typing import Any

# Exit statuses of the ``airflow-fuse`` command; the operators fail whenever the command would exit non-zero
# (a dry run's EXIT_TO_RESTORE excepted: finding what to restore is what a dry run is for).
EXIT_OK = 0  # the table needs nothing (amend: every object it needs is present)
EXIT_ERROR = 1  # keys failed to restore or changed since the scan (run again / scan again), or an unexpected error
EXIT_BAD_INPUT = 2  # bad input or a precondition (no bucket, credentials, versioning); nothing was written
EXIT_UNRECOVERABLE = 3  # objects the table needs have no version left that holds good data
EXIT_TO_RESTORE = 4  # scan or dry run: objects are missing or damaged, and all of them can be restored
EXIT_STATUSES = {
    EXIT_OK: "nothing to restore: every object the table needs is present",
    EXIT_ERROR: "some keys failed to restore or changed since the scan (run again, or scan again); or an "
                "unexpected error",
    EXIT_BAD_INPUT: "bad input or a precondition failed (the message says what to do); nothing was written",
    EXIT_UNRECOVERABLE: "objects the table needs cannot be recovered (no version holding good data is left)",
    EXIT_TO_RESTORE: "scan / dry run: objects are missing or damaged and can be restored",
}

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

    exit_code = EXIT_ERROR

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(redact(str(message)), *args)


class BadInputError(FuseError, ValueError):
    """The request itself is wrong (URI, options, plan file, timestamps). Nothing was written."""

    exit_code = EXIT_BAD_INPUT


class PreconditionError(FuseError):
    """The bucket is not in a state that allows recovery (missing, versioning off, no access)."""

    exit_code = EXIT_BAD_INPUT


class MetadataError(BadInputError):
    """Table metadata could not be read or points somewhere it must not."""


class UnrecoverableError(FuseError):
    """Objects the table needs have no version left that holds data."""

    exit_code = EXIT_UNRECOVERABLE
