"""Instants Patron computes with: from 1970 to before the year 9000 (UTC), whatever the offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from patron.integrations.common import MalformedPayload, instant
from patron.services.instant import EARLIEST, LATEST, in_range


def test_the_range_is_half_open_and_offsets_count() -> None:
    assert in_range(EARLIEST) and not in_range(EARLIEST - timedelta(microseconds=1))
    assert in_range(LATEST - timedelta(microseconds=1)) and not in_range(LATEST)
    # midnight of 1970-01-01 at +01:00 is still 1969 in UTC
    assert not in_range(datetime(1970, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    # no UTC instant exists for these: out of range, not an OverflowError
    assert not in_range(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
    assert not in_range(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))


@pytest.mark.parametrize(
    "value", [10**20, -(10**20), "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"]
)
def test_a_platform_time_out_of_range_is_a_malformed_payload(value: object) -> None:
    with pytest.raises(MalformedPayload, match="out of range"):
        instant(value)


def test_a_platform_time_in_range_is_utc() -> None:
    assert instant("2026-03-01T10:00:00+01:00") == datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert instant(0) == EARLIEST
