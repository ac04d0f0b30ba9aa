"""The instants the API and the event JSON take: aware, and within the years Patron computes in.

``pydantic.AwareDatetime`` takes any offset on any day a ``datetime`` can hold, so
``0001-01-01T00:00:00+05:00`` parses but cannot be converted to UTC, and ``9999-12-31`` leaves
no room for the period, expiry or grace that follows it. ``Instant`` keeps instants between
1970 and the year 9000 (UTC): a clear 422 on the field instead of an error deep in a fold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

#: how far ahead of the server's clock an instant said to be past may be (clocks drift)
FUTURE_SLACK = timedelta(minutes=5)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
RANGE = f"from {EARLIEST.isoformat()} to before {LATEST.isoformat()}"


def in_range(value: datetime) -> bool:
    """Whether the aware ``value`` lies in ``[EARLIEST, LATEST)``."""
    try:
        return EARLIEST <= value.astimezone(UTC) < LATEST
    except OverflowError:  # an offset that takes it past the first or the last day there is
        return False


def bounded(value: datetime) -> datetime:
    """``value`` in UTC when it lies in ``[EARLIEST, LATEST)``; else ``ValueError`` (a 422).
    In UTC: what is computed from a time (a month on, a day's end) must not depend on the offset
    it was sent with, and it is stored in UTC."""
    if not in_range(value):
        raise ValueError(f"must lie {RANGE}")
    return value.astimezone(UTC)


Instant = Annotated[AwareDatetime, AfterValidator(bounded)]
