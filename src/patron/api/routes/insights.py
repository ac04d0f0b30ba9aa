"""Insights: RFM segments, cohort retention, favourites, more KPIs, tier threshold suggestions,
and program simulation (replay a period through a draft program, side by side with the live one).

The headline KPIs are at ``/analytics/kpis`` (``routes/analytics.py``); the rest of SPEC 13.1 is
at ``/analytics/kpis/extended`` here. Server-side SVG charts of the reports are at
``/analytics/rfm/chart`` and ``/analytics/cohorts/chart``; the chart builders below are shared
with ``patron report``.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from patron.analytics.segments import SEGMENTS
from patron.api.deps import CallDep
from patron.domain.errors import InvalidInput
from patron.services import insights, simulation
from patron.services.clock import utcnow
from patron.services.merchants import Principal
from patron.services.programs import get_program
from patron.web.charts import bar_chart

router = APIRouter(tags=["insights"])

DAY = r"^\d{4}-\d{2}-\d{2}$"
FromQ = Annotated[
    str | None, Query(alias="from", description="First day, YYYY-MM-DD in the program's timezone.")
]
ToQ = Annotated[str | None, Query(alias="to", description="Last day, inclusive. Default: today (UTC).")]


def parse_day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    if not re.fullmatch(DAY, value):
        raise InvalidInput(f"{name} must be a calendar date YYYY-MM-DD, not {value!r}", field=name)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a calendar date YYYY-MM-DD, not {value!r}", field=name)


def window(start: str | None, end: str | None, days: int = 365) -> tuple[date, date]:
    """``(first, last)``: ``to`` defaults to today, ``from`` to ``days`` - 1 days before it."""
    last = parse_day(end, "to", utcnow().date())
    if last.year < 1970 or last.year > 9998:  # before counting back from it
        raise InvalidInput("the period must lie between 1970 and 9998", field="to")
    first = parse_day(start, "from", last - timedelta(days=days - 1))
    if first > last:
        raise InvalidInput(f"from {first} is after to {last}", field="from")
    if first.year < 1970 or last.year > 9998:
        raise InvalidInput("the period must lie between 1970 and 9998", field="from")
    return first, last


# --- charts (shared with the CLI) --------------------------------------------------------------


def rfm_chart(report: dict[str, Any]) -> Markup:
    counts = report["segments"]
    return bar_chart(
        [s.replace("_", " ") for s in SEGMENTS],
        [("Members", "issued", [counts[s] for s in SEGMENTS])],
        title="Members per RFM segment",
        description=f"Purchasing members from {report['from']} to {report['to']} by segment.",
        chart_id="rfm",
    )


def cohorts_chart(report: dict[str, Any], offsets: int = 6) -> Markup:
    cohorts = report["cohorts"]
    shown = list(range(min(offsets, max((len(c["retention"]) for c in cohorts), default=0))))
    return bar_chart(
        [c["month"] for c in cohorts],
        [
            (f"Month {k}", "issued" if k % 2 == 0 else "redeemed", [_pct(c, k) for c in cohorts])
            for k in shown
        ],
        title="Cohort retention (% of each enrolment month purchasing k months later)",
        description=f"Members enrolled from {report['from']} to {report['to']}, by enrolment month.",
        chart_id="cohorts",
    )


def _pct(cohort: dict[str, Any], k: int) -> int:
    return round(100 * cohort["retention"][k]) if k < len(cohort["retention"]) else 0


def simulation_chart(report: dict[str, Any]) -> Markup:
    keys = ("points_issued", "points_reversed", "net_points", "liability_points")
    return bar_chart(
        [k.replace("_", " ") for k in keys],
        [
            ("Live", "issued", [max(report["live"][k], 0) for k in keys]),
            ("Draft", "redeemed", [max(report["draft"][k], 0) for k in keys]),
        ],
        title="Live program and draft, side by side",
        description=f"Replay of {report['events']} events from {report['from']} to {report['to']}.",
        chart_id="simulation",
    )


def _svg(markup: Markup) -> Response:
    return Response(str(markup), media_type="image/svg+xml")


# --- endpoints ---------------------------------------------------------------------------------


@router.get("/programs/{program_id}/analytics/rfm", summary="RFM scores and segments")
def program_rfm(
    program_id: str,
    call: CallDep,
    start: FromQ = None,
    end: ToQ = None,
    limit: Annotated[int | None, Query(ge=1, description="List at most this many members.")] = None,
) -> JSONResponse:
    """Recency, frequency and monetary scores (1-5 by quintile) of the members who purchased in
    the window (default: the last 365 days) and their segment: `champions`, `loyal`, `promising`,
    `need_attention`, `at_risk`, `hibernating`, `lost` (rules in `patron.analytics.segments`).
    `monetary` is eligible spend net of refunds (minor units); `recency_days` counts to the end of
    `to`. No purchases in the window is 422 `no-data`."""
    first, last = window(start, end)

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        return insights.rfm(
            conn, merchant_id=p.merchant_id, program_id=program_id, first=first, last=last, limit=limit
        )

    return call.run(work, scope="read")


@router.get("/programs/{program_id}/analytics/rfm/chart", summary="RFM segments as an SVG chart")
def program_rfm_chart(program_id: str, call: CallDep, start: FromQ = None, end: ToQ = None) -> Response:
    """Members per RFM segment, drawn on the server (`image/svg+xml`)."""
    first, last = window(start, end)
    out: dict[str, Any] = {}

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        out.update(
            insights.rfm(conn, merchant_id=p.merchant_id, program_id=program_id, first=first, last=last)
        )
        return {}

    call.run(work, scope="read")
    return _svg(rfm_chart(out))


@router.get("/programs/{program_id}/analytics/cohorts", summary="Cohort retention by enrolment month")
def program_cohorts(program_id: str, call: CallDep, start: FromQ = None, end: ToQ = None) -> JSONResponse:
    """For the members enrolled in each month of the window (default: the last 365 days):
    `size`, and for each month from the enrolment month (offset 0) to the month of `to`, how many
    purchased (`active`) and what share of the cohort that is (`retention`). No enrolments in
    the window is 422 `no-data`."""
    first, last = window(start, end)

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        return insights.cohorts(
            conn, merchant_id=p.merchant_id, program_id=program_id, first=first, last=last
        )

    return call.run(work, scope="read")


@router.get("/programs/{program_id}/analytics/cohorts/chart", summary="Cohort retention as an SVG chart")
def program_cohorts_chart(program_id: str, call: CallDep, start: FromQ = None, end: ToQ = None) -> Response:
    """Retention (percent) of each enrolment month over its first six months (`image/svg+xml`)."""
    first, last = window(start, end)
    out: dict[str, Any] = {}

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        out.update(
            insights.cohorts(conn, merchant_id=p.merchant_id, program_id=program_id, first=first, last=last)
        )
        return {}

    call.run(work, scope="read")
    return _svg(cohorts_chart(out))


@router.get("/programs/{program_id}/analytics/kpis/extended", summary="Loyalty KPIs (SPEC 13.1)")
def program_kpis_extended(
    program_id: str,
    call: CallDep,
    start: FromQ = None,
    end: ToQ = None,
    location_id: Annotated[
        str | None, Query(max_length=100, description="Purchases at one location only.")
    ] = None,
    cost_per_point: Annotated[
        float | None, Query(gt=0, le=1_000_000, allow_inf_nan=False, description="Minor units per point.")
    ] = None,
    store_orders: Annotated[
        int | None, Query(ge=0, description="All the store's orders in the window, members' or not.")
    ] = None,
    store_revenue: Annotated[
        int | None, Query(ge=0, description="All the store's revenue in the window (minor units).")
    ] = None,
) -> JSONResponse:
    """Purchase frequency, repeat purchase rate, average order value of members (and of
    non-members and the enrolment rate, given the store's own totals), redemption rate,
    breakage, retention and churn against the previous window of equal length, net revenue
    retention, referral rate, programme cost and ROI. Default window: the last 30 days. Each
    definition is in `patron.services.insights`; a ratio without a denominator is null. A window
    with no purchases, enrolments or events is 422 `no-data`."""
    first, last = window(start, end, days=30)

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        return insights.kpis(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            first=first,
            last=last,
            location_id=location_id,
            cost_per_point=cost_per_point,
            store_orders=store_orders,
            store_revenue=store_revenue,
        )

    return call.run(work, scope="read")


@router.get("/members/{member_id}/favourites", summary="A member's favourite category and product")
def member_favourites(
    member_id: str,
    call: CallDep,
    limit: Annotated[int, Query(ge=1, le=50, description="How many categories and SKUs to rank.")] = 5,
) -> JSONResponse:
    """The categories and SKUs the member spent most on (eligible amounts net of refunds, then
    units), the favourite first. Events carry no brand, so `brand` is null (`brand_note`)."""

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        return insights.favourites(conn, merchant_id=p.merchant_id, member_id=member_id, limit=limit)

    return call.run(work, scope="read")


@router.get("/programs/{program_id}/analytics/tier-thresholds", summary="Suggest tier thresholds")
def program_tier_thresholds(
    program_id: str,
    call: CallDep,
    shares: Annotated[
        str,
        Query(
            description="Comma-separated shares of spending members wanted at each tier above "
            "the base or higher, lowest tier first, e.g. `0.3,0.1`."
        ),
    ] = "0.3,0.1",
    start: FromQ = None,
    end: ToQ = None,
) -> JSONResponse:
    """Thresholds of qualifying spend (minor units) from the distribution of members' net spend in
    the window (default: the last 365 days), so that about each share of the spending members
    reaches the tier or above; with the program's current thresholds beside them."""
    try:
        wanted = [float(s) for s in shares.split(",")]
    except ValueError:
        raise InvalidInput(f"shares must be comma-separated fractions, not {shares!r}", field="shares")
    first, last = window(start, end)

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        return insights.tier_thresholds(
            conn, merchant_id=p.merchant_id, program_id=program_id, shares=wanted, first=first, last=last
        )

    return call.run(work, scope="read")


class SimulationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    program: dict[str, Any] = Field(description="The draft program body, as for POST /v1/programs.")
    from_: Annotated[str, Field(alias="from", pattern=DAY, description="First day, YYYY-MM-DD.")]
    to: Annotated[str, Field(pattern=DAY, description="Last day, inclusive.")]
    cost_per_point: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)] = 1.0
    top: Annotated[int, Field(ge=0, le=1000)] = 20
    include_members: bool = False


@router.post("/programs/{program_id}/simulations", summary="Simulate a draft program on real history")
def create_simulation(
    program_id: str, call: CallDep, body: Annotated[SimulationCreate, Body()]
) -> JSONResponse:
    """Replay the period's events (purchases, refunds, cancels, visits, flights, actions) through
    the live program and through the draft, in memory, and compare: points issued, reversed and
    net, `cost` (net points x `cost_per_point`, minor units), liability at the period's end, tier
    population at the end, and the members most affected (`top`). `ledger` shows what the ledger
    recorded for those events (the live replay equals it). Writes nothing. An invalid draft is
    422 with the errors; a period without events is 422 `no-data`. Milestones and referral
    bonuses are not replayed."""
    first, last = window(body.from_, body.to)

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        get_program(conn, merchant_id=p.merchant_id, program_id=program_id)
        out = simulation.simulate(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            draft=body.program,
            first=first,
            last=last,
            cost_per_point=body.cost_per_point,
            top=body.top,
        )
        live, draft = out.pop("per_member_live"), out.pop("per_member_draft")
        if body.include_members:
            out["members_points"] = [
                {"member_id": m, "live": live[m], "draft": draft[m]} for m in sorted(live)
            ]
        return out

    return call.run(work, scope="read", body=body.model_dump(mode="json", by_alias=True))
