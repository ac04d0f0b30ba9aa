"""Insights: RFM segments, cohort retention, favourites, the KPIs beyond the headline ones, and
tier thresholds suggested from the spend distribution.

Windows are whole local days ``first`` to ``last`` (inclusive) in the program's timezone. A window
with nothing to measure is :class:`NoData` (422 ``no-data``), never a division by zero.

KPI definitions (window ``W`` = ``first``..``last``; ``P`` = the window of equal length just
before it; "purchase" = a purchase event, its value = eligible line amounts net of what refunds
and cancels recorded by the end of the window took back; ``location_id`` limits purchases to one
location):

* ``purchase_frequency`` = purchases in W / members with a purchase in W.
* ``repeat_purchase_rate`` = members with two or more purchases in W / members with a purchase.
* ``aov_members`` = member purchase value in W / member purchases in W (minor units).
* ``aov_non_members`` = (``store_revenue`` - member value) / (``store_orders`` - member
  purchases): needs the store's own totals for W (Patron only sees members' purchases).
* ``enrolment_rate`` = member purchases / ``store_orders``: the share of the store's orders made
  by members (needs ``store_orders``).
* ``redemption_rate`` = points redeemed in W / points issued (net of reversals) in W (null
  unless more points were issued than taken back).
* ``breakage_rate`` = points expired in W / (points expired + redeemed in W).
* ``retention_rate`` = members who purchased in P and again in W / members who purchased in P;
  ``churn_rate`` = 1 - retention_rate.
* ``net_revenue_retention`` = value in W of the members who purchased in P / their value in P
  (above 1 is "negative churn").
* ``referral_rate`` = members enrolled in W who were referred / members enrolled in W.
* ``programme_cost`` = points issued in W x ``cost_per_point`` (minor units).
* ``incremental_revenue`` = (aov_members - aov_non_members) x member purchases;
  ``roi`` = (incremental_revenue - programme_cost) / programme_cost (needs ``cost_per_point``,
  the store's totals and a positive programme cost).

A ratio whose denominator is zero, or whose inputs were not given, is null; never NaN.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.analytics import segments
from patron.domain.errors import InvalidInput
from patron.domain.program import Program
from patron.services.clock import utcnow
from patron.services.instant import EARLIEST, LATEST, RANGE
from patron.services.members import get_member
from patron.services.programs import program_at
from patron.storage import analytics as analytics_repo
from patron.storage import insights as repo


class NoData(InvalidInput):
    """The window holds nothing to measure (no purchases, no members, no events)."""

    code = "no-data"
    title = "No data in the period"


def bounds(program: Program, first: date, last: date) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC for the local days ``first`` to ``last`` of the program."""
    if first > last:
        raise InvalidInput(f"from {first} is after to {last}", field="from")
    if not (EARLIEST.date() <= first and last < LATEST.date()):
        raise InvalidInput(f"the days must lie {RANGE}", field="from")
    zone = ZoneInfo(program.timezone)
    return datetime.combine(first, time(), zone), datetime.combine(last + timedelta(days=1), time(), zone)


def _program(conn: Connection, merchant_id: str, program_id: str) -> Program:
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=utcnow())
    return program


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def rfm(
    conn: Connection, *, merchant_id: str, program_id: str, first: date, last: date, limit: int | None = None
) -> dict[str, Any]:
    """RFM scores and segments of the members who purchased between ``first`` and ``last``;
    recency is counted in days to the end of ``last``."""
    program = _program(conn, merchant_id, program_id)
    start, end = bounds(program, first, last)
    rows = repo.rfm_inputs(conn, merchant_id=merchant_id, program_id=program_id, start=start, end=end)
    if not rows:
        raise NoData(f"no purchases between {first} and {last}: nothing to segment")
    inputs = [
        segments.RFMInput(r["member_id"], (end - r["last_at"]).days, r["frequency"], r["monetary"])
        for r in rows
    ]
    external = {r["member_id"]: r["external_id"] for r in rows}
    scores = segments.rfm(inputs)
    listed = sorted(scores, key=lambda s: (-(s.r + s.f + s.m), s.member_id))[:limit]
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": program.timezone,
        "currency": program.currency,
        "members_scored": len(scores),
        "segments": segments.segment_counts(scores),
        "members": [
            {
                "member_id": s.member_id,
                "external_id": external[s.member_id],
                "recency_days": s.recency_days,
                "frequency": s.frequency,
                "monetary": s.monetary,
                "r": s.r,
                "f": s.f,
                "m": s.m,
                "segment": s.segment,
            }
            for s in listed
        ],
    }


def member_segments(
    conn: Connection, *, merchant_id: str, program_id: str, first: date, last: date
) -> dict[str, str]:
    """Member id -> RFM segment, for rules and rewards that target a segment (members without a
    purchase in the window are in no segment)."""
    try:
        report = rfm(conn, merchant_id=merchant_id, program_id=program_id, first=first, last=last)
    except NoData:
        return {}
    return {m["member_id"]: m["segment"] for m in report["members"]}


def cohorts(
    conn: Connection, *, merchant_id: str, program_id: str, first: date, last: date
) -> dict[str, Any]:
    """Retention by enrolment month for members enrolled between ``first`` and ``last``."""
    program = _program(conn, merchant_id, program_id)
    start, end = bounds(program, first, last)
    sizes, activity = repo.cohorts(
        conn, merchant_id=merchant_id, program_id=program_id, start=start, end=end, timezone=program.timezone
    )
    if not sizes:
        raise NoData(f"no members enrolled between {first} and {last}: no cohorts")
    matrix = segments.cohort_matrix(sizes, activity, last_month=last.isoformat()[:7])
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": program.timezone,
        "cohorts": [
            {"month": c.month, "size": c.size, "active": list(c.active), "retention": list(c.retention)}
            for c in matrix
        ],
    }


def favourites(conn: Connection, *, merchant_id: str, member_id: str, limit: int = 5) -> dict[str, Any]:
    """The member's favourite categories and products (SKUs), by what they spent on them net of
    refunds. Purchase lines carry no brand in Patron's event format, so ``brand`` is null and
    ``brand_note`` says so."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    found = {}
    for by in ("category", "sku"):
        found[by] = repo.favourites(
            conn,
            merchant_id=merchant_id,
            program_id=member["program_id"],
            member_id=member_id,
            by=by,
            limit=limit,
        )

    def shape(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: r[k] for k in ("name", "amount", "quantity", "purchases")} for r in rows]

    return {
        "member_id": member_id,
        "favourite_category": found["category"][0]["name"] if found["category"] else None,
        "favourite_sku": found["sku"][0]["name"] if found["sku"] else None,
        "brand": None,
        "brand_note": "purchase lines carry no brand: favourites are by category and SKU",
        "categories": shape(found["category"]),
        "skus": shape(found["sku"]),
    }


def kpis(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    first: date,
    last: date,
    location_id: str | None = None,
    cost_per_point: float | None = None,
    store_orders: int | None = None,
    store_revenue: int | None = None,
) -> dict[str, Any]:
    """The KPIs of SPEC 13.1 beyond the headline ones (definitions in the module docstring)."""
    program = _program(conn, merchant_id, program_id)
    start, end = bounds(program, first, last)
    previous_start = start - (end - start)
    act = repo.activity_kpis(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        start=start,
        end=end,
        previous_start=previous_start,
        location_id=location_id,
    )
    mem = repo.membership_kpis(conn, merchant_id=merchant_id, program_id=program_id, start=start, end=end)
    head = analytics_repo.kpis(conn, merchant_id=merchant_id, program_id=program_id, start=start, end=end)
    points = head["points"]
    if not (act["purchases"] or act["previous_purchasers"] or mem["new_members"] or head["active_members"]):
        raise NoData(f"no purchases, enrolments or events between {first} and {last}")
    if (store_orders is None) != (store_revenue is None):
        raise InvalidInput("give both store_orders and store_revenue, or neither", field="store_orders")
    purchases, revenue = act["purchases"], act["revenue"]
    aov_members = _ratio(revenue, purchases)
    aov_non: float | None = None
    enrolment_rate: float | None = None
    if store_orders is not None and store_revenue is not None:
        if store_orders < purchases:
            raise InvalidInput(
                f"store_orders {store_orders} is below the {purchases} purchases members made in the window",
                field="store_orders",
            )
        if store_revenue < revenue:  # the store's revenue includes its members'
            raise InvalidInput(
                f"store_revenue {store_revenue} is below the {revenue} members spent in the window",
                field="store_revenue",
            )
        enrolment_rate = _ratio(purchases, store_orders)
        aov_non = _ratio(store_revenue - revenue, store_orders - purchases)
    cost = round(points["issued"] * cost_per_point) if cost_per_point is not None else None
    incremental = (
        round((aov_members - aov_non) * purchases)
        if aov_members is not None and aov_non is not None
        else None
    )
    roi = (
        _ratio(incremental - cost, cost)
        if incremental is not None and cost is not None and cost > 0
        else None
    )
    retention = _ratio(act["retained"], act["previous_purchasers"])
    left = points["redeemed"] + points["expired"]
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": program.timezone,
        "currency": program.currency,
        "location_id": location_id,
        "members": head["members"],
        "active_members": head["active_members"],
        "new_members": mem["new_members"],
        "purchases": purchases,
        "purchasing_members": act["purchasers"],
        "member_revenue": revenue,
        "purchase_frequency": _ratio(purchases, act["purchasers"]),
        "repeat_purchase_rate": _ratio(act["repeaters"], act["purchasers"]),
        "aov_members": aov_members,
        "aov_non_members": aov_non,
        "enrolment_rate": enrolment_rate,
        "points_issued": points["issued"],
        "points_redeemed": points["redeemed"],
        "points_expired": points["expired"],
        "redeeming_members": mem["redeemers"],
        "redemption_rate": _ratio(points["redeemed"], points["issued"]) if points["issued"] > 0 else None,
        "breakage_rate": _ratio(points["expired"], left),
        "previous_purchasers": act["previous_purchasers"],
        "retained_purchasers": act["retained"],
        "retention_rate": retention,
        "churn_rate": round(1 - retention, 4) if retention is not None else None,
        "net_revenue_retention": _ratio(act["retained_revenue"], act["previous_revenue"]),
        "referred_members": mem["referred"],
        "referral_rate": _ratio(mem["referred"], mem["new_members"]),
        "cost_per_point": cost_per_point,
        "programme_cost": cost,
        "incremental_revenue": incremental,
        "roi": roi,
    }


def tier_thresholds(
    conn: Connection, *, merchant_id: str, program_id: str, shares: list[float], first: date, last: date
) -> dict[str, Any]:
    """Thresholds of qualifying spend such that about ``shares[i]`` of the members who spent in
    the window reach tier ``i`` or above (tiers above the base, lowest first)."""
    if not shares or any(not 0 < s < 1 for s in shares):
        raise InvalidInput("shares must be fractions between 0 and 1, e.g. 0.3,0.1", field="shares")
    if any(b >= a for a, b in itertools.pairwise(shares)):
        raise InvalidInput("shares must decrease: the lowest tier first, the top tier last", field="shares")
    program = _program(conn, merchant_id, program_id)
    start, end = bounds(program, first, last)
    values = repo.member_spend(conn, merchant_id=merchant_id, program_id=program_id, start=start, end=end)
    if not values:
        raise NoData(f"no qualifying spend between {first} and {last}: nothing to base thresholds on")
    thresholds = segments.suggest_thresholds(values, shares)
    levels = program.tiers.levels if program.tiers else ()
    above_base = sorted(levels, key=lambda lv: lv.threshold)[1:]
    n = len(values)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "currency": program.currency,
        "metric": "qualifying_spend",
        "members": n,
        "suggestions": [
            {
                "share": s,
                "threshold": t,
                "members_reaching": sum(1 for v in values if v >= t),
                "share_reaching": round(sum(1 for v in values if v >= t) / n, 4),
                "tier_id": above_base[i].id if i < len(above_base) else None,
                "current_threshold": above_base[i].threshold if i < len(above_base) else None,
            }
            for i, (s, t) in enumerate(zip(shares, thresholds, strict=True))
        ],
    }
