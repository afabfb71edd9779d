"""The one timestamp format the operator writes and reads: RFC 3339, UTC, milliseconds.

``2026-12-01T08:30:00.123Z``. Pure: the callers pass the time (nothing here reads a clock).
The Kubernetes API server reads these for ``metav1.Time`` fields (Events, conditions) too.
"""

from __future__ import annotations

import datetime as dt


def format_time(when: dt.datetime) -> str:
    """``when`` as RFC 3339 in UTC with milliseconds, e.g. ``2026-12-01T08:30:00.123Z``.

    A naive ``when`` is taken to be UTC already.
    """
    aware = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    # isoformat, not strftime: %Y does not pad years before 1000 to four digits on glibc.
    return aware.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_time(text: str | None) -> dt.datetime | None:
    """The aware datetime of an RFC 3339 / ISO 8601 timestamp (with or without fraction, ``Z`` or
    an offset; without an offset it is taken as UTC); None for a missing or malformed one."""
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
