"""Timestamps: timezone-aware ISO 8601 only (naive times are ambiguous across workers and servers)."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow_fuse.errors import BadInputError


def parse_time(value: str | datetime | None, *, name: str, allow_future: bool = False) -> datetime | None:
    """Parse an aware ISO 8601 time (``Z`` or an offset). ``None`` and "" mean "not given"."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise BadInputError(
                f"{name}={value!r} is not an ISO 8601 time; write it like 2026-11-24T10:30:00Z"
            ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadInputError(
            f"{name}={value!r} has no timezone; add one, e.g. {parsed.isoformat()}Z for UTC or an offset like +02:00"
        )
    try:
        parsed = parsed.astimezone(timezone.utc)
    except OverflowError:
        raise BadInputError(f"{name}={value!r} is out of range: give a time between years 1 and 9999 in UTC") from None
    if not allow_future and parsed > datetime.now(timezone.utc):
        raise BadInputError(f"{name}={value!r} is in the future; give the time of the incident or earlier")
    return parsed


def isoformat(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
