"""Calendar arithmetic for lots: months clamp to the end of shorter months; pending is in days."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patron.domain.expiry import ExpiryPolicy, add_months, lot_times, months_in


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2026, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
        (datetime(2024, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2024, 2, 29, 9, 30, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), -1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2026, 8, 31, tzinfo=UTC), 1, datetime(2026, 9, 30, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 12, datetime(2025, 2, 28, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 48, datetime(2028, 2, 29, tzinfo=UTC)),
        (datetime(2026, 11, 15, tzinfo=UTC), 3, datetime(2027, 2, 15, tzinfo=UTC)),
        (datetime(2026, 1, 15, tzinfo=UTC), -13, datetime(2024, 12, 15, tzinfo=UTC)),
        (datetime(2026, 5, 20, tzinfo=UTC), 0, datetime(2026, 5, 20, tzinfo=UTC)),
    ],
)
def test_add_months(start: datetime, months: int, expected: datetime) -> None:
    assert add_months(start, months) == expected


def test_add_months_keeps_local_wall_time_across_daylight_saving() -> None:
    ny = ZoneInfo("America/New_York")
    winter = datetime(2026, 1, 15, 9, 0, tzinfo=ny)
    summer = add_months(winter, 6)
    assert (summer.month, summer.day, summer.hour) == (7, 15, 9)
    assert summer.utcoffset() == timedelta(hours=-4)


@given(
    day=st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)),
    months=st.integers(-600, 600),
)
def test_add_months_moves_whole_months_and_clamps_the_day(day: date, months: int) -> None:
    start = datetime(day.year, day.month, day.day, 13, 45, tzinfo=UTC)
    out = add_months(start, months)
    assert (out.year * 12 + out.month) - (start.year * 12 + start.month) == months
    assert out.day == min(start.day, calendar.monthrange(out.year, out.month)[1])
    assert (out.hour, out.minute, out.tzinfo) == (13, 45, UTC)
    if start.day <= 28:
        assert add_months(out, -months) == start


def test_lot_times_with_pending_and_expiry() -> None:
    earned = datetime(2026, 1, 31, 18, 0, tzinfo=UTC)
    available_from, expires_at = lot_times(earned, pending_days=14, expiry_months=12)
    assert available_from == datetime(2026, 2, 14, 18, 0, tzinfo=UTC)
    assert expires_at == datetime(2027, 1, 31, 18, 0, tzinfo=UTC)
    _, one_month = lot_times(earned, pending_days=0, expiry_months=1)
    assert one_month == datetime(2026, 2, 28, 18, 0, tzinfo=UTC)


def test_lot_without_pending_or_expiry() -> None:
    earned = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert lot_times(earned, pending_days=0, expiry_months=None) == (earned, None)


def test_calendar_months_are_counted_on_the_programs_clock() -> None:
    """1 March in Auckland is 28 February in UTC: a month on is 1 April there, not 29 March."""
    auckland = ZoneInfo("Pacific/Auckland")
    earned = datetime(2026, 3, 1, 10, tzinfo=auckland).astimezone(UTC)
    assert earned == datetime(2026, 2, 28, 21, tzinfo=UTC)
    expires = ExpiryPolicy(policy="months", months=1).lot_expiry(earned, auckland)
    assert expires == datetime(2026, 4, 1, 10, tzinfo=auckland)
    assert expires is not None and expires.tzinfo == UTC and expires == datetime(2026, 3, 31, 21, tzinfo=UTC)
    # across the end of summer time (5 April): still 10:00 on the program's clock
    later = ExpiryPolicy(policy="months", months=2).lot_expiry(earned, auckland)
    assert later == datetime(2026, 5, 1, 10, tzinfo=auckland) == datetime(2026, 4, 30, 22, tzinfo=UTC)
    assert months_in(auckland, expires, -1) == earned
    utc = ExpiryPolicy(policy="months", months=1).lot_expiry(earned, ZoneInfo("UTC"))
    assert utc == datetime(2026, 3, 28, 21, tzinfo=UTC)  # a UTC program's calendar is UTC's
