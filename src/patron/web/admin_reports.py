"""The console's reports: KPIs for a chosen period, liability and expected breakage, usage per
location per month, and tier population, each as a chart and a table; and CSV downloads of the
program's members, ledger and events (the API's exports)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Connection

from patron.domain.errors import InvalidInput, NotFound
from patron.services import exports, merchants, programs, reports
from patron.web import common
from patron.web.charts import bar_chart
from patron.web.charts_extra import hbar_chart, split_bar
from patron.web.common import Staff, render, staff_page

router = APIRouter(include_in_schema=False)

OWNER = "owner"
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
KINDS = ("members", "ledger", "events")


def _day(value: str, field: str, errors: dict[str, str]) -> date | None:
    text = value.strip()
    if not text:
        return None
    try:
        if not DAY.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        errors[field] = "Enter a date as YYYY-MM-DD, e.g. 2026-01-31."
        return None


def _cost(value: str, errors: dict[str, str]) -> float | None:
    text = value.strip().replace(",", ".")
    if not text:
        return None
    try:
        cost = float(text)
        if not 0 < cost <= 1_000_000:
            raise ValueError
    except ValueError:
        errors["cost"] = "Enter what one point costs you in cents, more than 0, e.g. 0.5."
        return None
    return cost


def _month_label(d: date) -> str:
    return d.strftime("%b") + (d.strftime(" %y") if d.month == 1 else "")


@router.get("/admin/reports")
def reports_page(
    request: Request,
    program: str | None = None,
    start: str = "",
    end: str = "",
    location: str = "",
    cost: str = "",
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        found = programs.list_programs(conn, merchant_id=who.merchant_id)
        if not found:
            raise NotFound("no programs")
        chosen = next((p for p in found if p["id"] == program), None) if program else found[0]
        if chosen is None:
            raise NotFound(f"program {program} not found")
        pid = chosen["id"]
        errors: dict[str, str] = {}
        first, last = _day(start, "start", errors), _day(end, "end", errors)
        cost_per_point = _cost(cost, errors)
        try:
            kpi = reports.kpis(conn, merchant_id=who.merchant_id, program_id=pid, first=first, last=last)
        except InvalidInput as exc:
            errors[exc.extra.get("field") or "start"] = exc.detail[:1].upper() + exc.detail[1:] + "."
            kpi = reports.kpis(conn, merchant_id=who.merchant_id, program_id=pid, first=None, last=None)
        places = {
            loc["id"]: loc["name"] for loc in merchants.list_locations(conn, merchant_id=who.merchant_id)
        }
        where = location if location in places else ""
        usage = reports.usage_by_month(
            conn, merchant_id=who.merchant_id, program_id=pid, location_id=where or None
        )
        for loc in usage["location_ids"]:
            places.setdefault(loc, loc)
        owed = reports.liability(
            conn, merchant_id=who.merchant_id, program_id=pid, cost_per_point=cost_per_point
        )
        tiers = reports.tier_population(conn, merchant_id=who.merchant_id, program_id=pid)
        return render(
            request,
            "admin/reports.html",
            status=422 if errors else 200,
            who=who,
            programs=found,
            program=chosen,
            kpi=kpi,
            usage=usage,
            owed=owed,
            tiers=tiers,
            places=places,
            location=where,
            form={"start": start, "end": end, "cost": cost},
            errors=errors,
            charts=_charts(kpi, usage, owed, tiers, places.get(where, "")),
            kinds=KINDS,
            title="Reports",
            nav="reports",
        )

    return staff_page(request, work)


def _charts(
    kpi: dict[str, Any], usage: dict[str, Any], owed: dict[str, Any], tiers: dict[str, Any], place: str
) -> dict[str, Any]:
    p = kpi["points"]
    months = usage["months"]
    labels = [_month_label(m["month"]) for m in months]
    where = f" at {place}" if place else ""
    levels = [(lv["name"], lv["members"]) for lv in tiers["levels"]]
    if tiers["levels"] and tiers["none"]:
        levels.insert(0, ("No tier", tiers["none"]))
    return {
        "points": hbar_chart(
            [
                ("Issued", p["issued"]),
                ("Adjusted", p["adjusted"]),
                ("Redeemed", p["redeemed"]),
                ("Expired", p["expired"]),
            ],
            title="Points in the period",
            description=f"Points issued, adjusted by hand, redeemed and expired from {kpi['start']} "
            f"to {kpi['end']}.",
            chart_id="kpi-points",
            unit="pts",
        ),
        "usage": bar_chart(
            labels,
            [
                ("Earns", "earns", [m["earns"] for m in months]),
                ("Redemptions", "redemptions", [m["redemptions"] for m in months]),
            ],
            title=f"Loyalty visits per month{where}",
            description=f"Earning events and redeemed rewards{where} for each of the last {len(months)} "
            "months; the table gives the exact figures.",
            chart_id="usage",
        ),
        "liability": split_bar(
            [
                ("Expected to be redeemed", "issued", owed["expected_redemptions"]),
                ("Expected to expire", "redeemed", owed["expected_breakage"]),
            ],
            title="Outstanding points: expected redemptions and breakage",
            description=f"{owed['outstanding']} points held; at the last 12 months' breakage rate of "
            f"{owed['breakage_rate']:.0%}, {owed['expected_redemptions']} are expected to be redeemed.",
            chart_id="liability",
        ),
        "tiers": hbar_chart(
            levels or [("Members", tiers["members"])],
            title="Members per tier",
            description=f"How many of the program's {tiers['members']} members hold each tier now.",
            chart_id="tiers",
            unit="members",
        ),
    }


@router.get("/admin/reports/{program_id}/{kind}.csv")
def download(request: Request, program_id: str, kind: str) -> Response:
    """The API's CSV exports (``/v1/programs/{id}/exports/{kind}.csv``), for owners signed in to
    the console; streamed from a connection of its own once the session and program are checked."""

    def work(conn: Connection, who: Staff) -> Response:
        if who.user["role"] != OWNER or kind not in KINDS:
            raise NotFound("only owners download exports")
        export = exports.Export(kind, who.merchant_id, program_id)  # type: ignore[arg-type]
        exports.check(conn, export)
        return StreamingResponse(
            exports.stream(common.engine(request), export),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{program_id}-{kind}.csv"',
                "Cache-Control": "no-store",
            },
        )

    return staff_page(request, work)
