"""Calendar arithmetic for lots: when points become available and when they expire.

Expiry policies:

* ``months``: a lot expires N calendar months after it was earned;
* ``end_of_year``: at the end of the calendar year ``years`` after the one it was earned in
  (``years=0``: the end of the same year), in the program's timezone;
* ``inactivity``: lots carry no date; the whole balance expires N months after the member's
  last qualifying activity (the ``expire-points`` job finds them);
* ``never``.

A tier may override the policy (``by_tier``): the tier held when the points were earned decides.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    policy: str = "months"  # months | end_of_year | inactivity | never
    months: int = 0
    years: int = 0
    by_tier: tuple[tuple[str, ExpiryPolicy], ...] = ()

    def for_tier(self, tier_id: str | None) -> ExpiryPolicy:
        return dict(self.by_tier).get(tier_id or "", self)

    def lot_expiry(self, earned_at: datetime, tz: ZoneInfo) -> datetime | None:
        if self.policy == "months" and self.months:
            return months_in(tz, earned_at, self.months)
        if self.policy == "end_of_year":
            year = earned_at.astimezone(tz).year + self.years + 1
            return datetime(year, 1, 1, tzinfo=tz).astimezone(UTC)
        return None


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus calendar months; the 31st becomes the last day of a shorter month."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def months_in(tz: ZoneInfo, at: datetime, months: int) -> datetime:
    """``at`` plus calendar months as the program's clock reads them (a lot earned on 1 March in
    Auckland expires on 1 April there, not a day early by UTC's calendar), in UTC."""
    return add_months(at.astimezone(tz), months).astimezone(UTC)


def lot_times(
    occurred_at: datetime,
    *,
    pending_days: int,
    expiry_months: int | None = None,
    policy: ExpiryPolicy | None = None,
    tz: ZoneInfo | None = None,
    tier_id: str | None = None,
) -> tuple[datetime, datetime | None]:
    """``(available_from, expires_at)`` of a lot earned at ``occurred_at``."""
    available_from = occurred_at + timedelta(days=pending_days)
    if policy is not None:
        return available_from, policy.for_tier(tier_id).lot_expiry(occurred_at, tz or ZoneInfo("UTC"))
    expires_at = add_months(occurred_at, expiry_months) if expiry_months else None
    return available_from, expires_at
