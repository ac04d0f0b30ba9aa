"""A program's reports for the console: KPIs for a window of days, liability and expected
breakage, usage ("loyalty visits") per location per month, and tier population.

The figures are those of ``GET /v1/programs/{id}/analytics/kpis|liability|usage`` (the same
storage queries, the same windows in the program's timezone); those endpoints compute them inline
today and could call these functions instead. A location narrows the usage figures only: the KPI
queries have no location filter.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.domain.errors import InvalidInput
from patron.services import console
from patron.services.clock import utcnow
from patron.services.programs import get_program, program_at
from patron.storage import analytics as repo
from patron.storage import usage as usage_repo

EARLIEST, LATEST = date(1970, 1, 1), date(9999, 1, 1)
MAX_WINDOW_DAYS = 3660
USAGE_MONTHS = 12


def today(conn: Connection, *, merchant_id: str, program_id: str) -> tuple[date, str]:
    """Today's date in the program's timezone, and the zone's name (404 if not the merchant's)."""
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=utcnow())
    return utcnow().astimezone(ZoneInfo(program.timezone)).date(), program.timezone


def kpis(
    conn: Connection, *, merchant_id: str, program_id: str, first: date | None, last: date | None
) -> dict[str, Any]:
    """Headline figures for the days ``first`` to ``last`` inclusive (default: the 30 days to today)."""
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=utcnow())
    zone = ZoneInfo(program.timezone)
    last = last or utcnow().astimezone(zone).date()
    if not EARLIEST <= last < LATEST:  # before counting 30 days back from it
        raise InvalidInput(f"the window must lie between {EARLIEST} and {LATEST}", field="end")
    first = first or last - timedelta(days=29)
    if first > last:
        raise InvalidInput(f"the first day {first} is after the last day {last}", field="start")
    if first < EARLIEST or last >= LATEST:
        raise InvalidInput(f"the window must lie between {EARLIEST} and {LATEST}", field="start")
    if (last - first).days > MAX_WINDOW_DAYS:
        raise InvalidInput("choose a window of at most ten years", field="start")
    figures = repo.kpis(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        start=datetime.combine(first, time(), zone),
        end=datetime.combine(last + timedelta(days=1), time(), zone),
    )
    return {"start": first, "end": last, "timezone": program.timezone, **figures}


def liability(
    conn: Connection, *, merchant_id: str, program_id: str, cost_per_point: float | None = None
) -> dict[str, Any]:
    """Points held now and what they are expected to cost (see the API's liability endpoint).
    Without ``cost_per_point`` the program's ``points_payment`` value is used; when it has none,
    ``liability`` is ``None`` (the points figures are still given)."""
    now = utcnow()
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=now)
    cost = cost_per_point
    if cost is None and program.points_payment is not None:
        cost = program.points_payment.per_amount / program.points_payment.points
    figures = repo.liability(
        conn, merchant_id=merchant_id, program_id=program_id, as_of=now, since=now - timedelta(days=365)
    )
    left = figures["redeemed"] + figures["expired"]
    breakage = figures["expired"] / left if left else 0.0
    expected = figures["outstanding"] * (1 - breakage)
    return {
        "as_of": now,
        "currency": program.currency,
        "cost_per_point": cost,
        "outstanding": figures["outstanding"],
        "reserved": figures["reserved"],
        "debt": figures["debt"],
        "redeemed_12_months": figures["redeemed"],
        "expired_12_months": figures["expired"],
        "breakage_rate": round(breakage, 4),
        "expected_redemptions": round(expected),
        "expected_breakage": figures["outstanding"] - round(expected),
        "liability": round(expected * cost) if cost is not None else None,
    }


def usage_by_month(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    months: int = USAGE_MONTHS,
    location_id: str | None = None,
) -> dict[str, Any]:
    """Earns and redemptions per location for each of the last ``months`` local months (oldest
    first); ``location_id`` keeps one location's rows. (Enrolments have no location: the KPIs
    give them for a period.)"""
    now = utcnow()
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=now)
    zone = ZoneInfo(program.timezone)
    starts = console.month_starts(now, zone, months)
    found = usage_repo.usage_by_period(conn, merchant_id=merchant_id, program_id=program_id, bounds=starts)
    seen = {r["location_id"] for r in found if r["location_id"]}
    out = []
    for i, start in enumerate(starts[:-1]):
        rows = [
            {k: r[k] for k in ("location_id", "earns", "redemptions")}
            for r in found
            if r["period"] == i and (not location_id or r["location_id"] == location_id)
        ]
        out.append(
            {
                "month": start,
                "locations": rows,
                "earns": sum(r["earns"] for r in rows),
                "redemptions": sum(r["redemptions"] for r in rows),
            }
        )
    return {"timezone": program.timezone, "months": out, "location_ids": sorted(seen)}


def tier_population(conn: Connection, *, merchant_id: str, program_id: str) -> dict[str, Any]:
    """Members per tier now (as on the dashboard)."""
    program = get_program(conn, merchant_id=merchant_id, program_id=program_id)
    return console.tier_population(conn, merchant_id=merchant_id, program=program, at=utcnow())
