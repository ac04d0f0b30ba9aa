"""The co-op dividend: once a year, a share of each eligible member's eligible spend comes back
as store credit (money, never points).

For the year ``Y`` (a calendar year in the program's timezone):

* **eligible spend** of a purchase line is its amount (price times quantity less discount, the
  earning base) less what refunds recorded by the run time took back of it, never below zero;
  with ``full_price_only`` a line that carried any discount counts for nothing;
* a member is **eligible** when their eligible spend in ``Y`` reaches ``min_spend`` and, when the
  setting names plans, they held a paid membership of one of them during ``Y``;
* the **dividend** is ``floor(spend * percent / 100)`` minor units, computed exactly (the percent
  is a decimal, never a float); a member whose dividend rounds to zero is not paid.

Invariants
----------
1. ``0 <= dividend <= spend``; the dividend never grows when a refund is added.
2. A year is paid once: the run for ``(program, Y)`` is unique, and its total equals the sum of
   its payouts and of the store credit they wrote.
3. A year is paid only once it has closed (its last instant is in the past at the run time).

Example: a lifetime member bought two lines in 2026, 10,000 and 5,000 minor units, and returned
2,000 of the first. At 2.5% the dividend is ``floor(13,000 * 2.5 / 100) = 325``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from patron.domain.errors import InvalidInput


class YearNotClosed(InvalidInput):
    code = "year-not-closed"
    title = "The year has not closed yet"


@dataclass(frozen=True, slots=True)
class Rule:
    percent: Decimal
    min_spend: int = 0
    full_price_only: bool = True
    plans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpendLine:
    """One purchase line of the year with what refunds took back of it."""

    member_id: str
    amount: int
    refunded: int = 0
    discounted: bool = False


@dataclass(frozen=True, slots=True)
class Payout:
    member_id: str
    eligible_spend: int
    amount: int


def year_bounds(year: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The first instant of ``year`` and of the next, in ``tz``."""
    return datetime(year, 1, 1, tzinfo=tz), datetime(year + 1, 1, 1, tzinfo=tz)


def closed_year(as_of: datetime, tz: ZoneInfo) -> int:
    """The last calendar year (in ``tz``) that has closed at ``as_of``."""
    return as_of.astimezone(tz).year - 1


def check_closed(year: int, *, as_of: datetime, tz: ZoneInfo) -> None:
    """A dividend for ``year`` can be paid only once the year is over at ``as_of``."""
    # the year ends when the next begins in ``tz``: closed once ``as_of`` is in a later year
    # there (told without building that instant, which may lie beyond the last year a date has)
    if year >= as_of.astimezone(tz).year:
        raise YearNotClosed(
            f"{year} has not closed yet: it ends at the start of {year + 1} ({tz.key}); "
            f"a dividend is paid for a closed year",
            field="year",
        )


def line_spend(line: SpendLine, *, full_price_only: bool) -> int:
    """What one line contributes: its amount net of refunds, nothing if discounted and only full
    price counts."""
    if full_price_only and line.discounted:
        return 0
    return max(line.amount - line.refunded, 0)


def eligible_spend(lines: Iterable[SpendLine], *, full_price_only: bool) -> dict[str, int]:
    """Eligible spend per member."""
    out: dict[str, int] = {}
    for line in lines:
        out[line.member_id] = out.get(line.member_id, 0) + line_spend(line, full_price_only=full_price_only)
    return out


def dividend(spend: int, percent: Decimal) -> int:
    """``floor(spend * percent / 100)``, exactly."""
    if spend <= 0 or percent <= 0:
        return 0
    return int(Fraction(spend) * Fraction(percent) / 100)


def payouts(spend: dict[str, int], rule: Rule, *, members: set[str] | None = None) -> list[Payout]:
    """The year's payouts, in member id order: members (of the plans, when ``members`` is given)
    whose spend reaches ``min_spend`` and whose dividend is at least one minor unit."""
    out = []
    for member_id in sorted(spend):
        if members is not None and member_id not in members:
            continue
        value = spend[member_id]
        if value < rule.min_spend or value <= 0:
            continue
        amount = dividend(value, rule.percent)
        if amount > 0:
            out.append(Payout(member_id, value, amount))
    return out
