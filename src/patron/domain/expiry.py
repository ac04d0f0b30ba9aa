"""Calendar arithmetic for lots: when points become available and when they expire."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus calendar months; the 31st becomes the last day of a shorter month."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def lot_times(
    occurred_at: datetime, *, pending_days: int, expiry_months: int | None
) -> tuple[datetime, datetime | None]:
    """``(available_from, expires_at)`` of a lot earned at ``occurred_at``."""
    available_from = occurred_at + timedelta(days=pending_days)
    expires_at = add_months(occurred_at, expiry_months) if expiry_months else None
    return available_from, expires_at
