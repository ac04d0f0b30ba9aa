"""Analytics: customer lifetime value (BG/NBD and Gamma-Gamma) and a program's KPIs."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from patron.analytics import clv
from patron.api.deps import CallDep
from patron.domain.errors import InvalidInput
from patron.domain.program import Program
from patron.services.clock import utcnow
from patron.services.merchants import Principal
from patron.services.programs import program_at
from patron.storage import analytics as repo

router = APIRouter(tags=["analytics"])

MAX_HORIZON_DAYS = 36_525  # a century: beyond it the question is not a business one
EARLIEST, LATEST = date(1970, 1, 1), date(9999, 1, 1)

#: ISO 4217 currencies whose minor unit is not a hundredth; all others have two decimals.
MINOR_UNIT_EXPONENT = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),  # noqa: SIM905
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),  # noqa: SIM905
    **dict.fromkeys("CLF UYW".split(), 4),  # noqa: SIM905
}

DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
TimeUnit = Literal["day", "week", "month"]


def _day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        if not re.fullmatch(DAY_PATTERN, value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a calendar date YYYY-MM-DD, not {value!r}", field=name)


def _program(conn: Connection, p: Principal, program_id: str) -> tuple[Program, ZoneInfo, date]:
    """The program (404 if not the merchant's), its zone and today's date there."""
    now = utcnow()
    program, _ = program_at(conn, merchant_id=p.merchant_id, program_id=program_id, at=now)
    zone = ZoneInfo(program.timezone)
    return program, zone, now.astimezone(zone).date()


def _midnight_after(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), zone)


@router.get("/programs/{program_id}/analytics/clv", summary="Customer lifetime value (BG/NBD, Gamma-Gamma)")
def customer_lifetime_value(
    program_id: str,
    call: CallDep,
    calibration_end: Annotated[
        str | None,
        Query(
            description="Last day (YYYY-MM-DD, in the program's timezone, inclusive) of the purchases "
            "the models learn from. Default: today.",
            examples=["2026-06-30"],
        ),
    ] = None,
    time_unit: Annotated[
        TimeUnit, Query(description="Unit of `recency`, `T` and `horizon`: a month is 30.4375 days.")
    ] = "week",
    horizon: Annotated[
        float,
        Query(gt=0, allow_inf_nan=False, description="Expected purchases and CLV cover this many units."),
    ] = 52,
    limit: Annotated[
        int | None, Query(ge=1, description="Only the members with the highest CLV (default: all).")
    ] = None,
) -> JSONResponse:
    """Customer lifetime value: BG/NBD (purchase frequency and the probability that a member is
    still a customer) and Gamma-Gamma (spend), fitted by maximum likelihood on the program's
    purchases up to and including `calibration_end`.

    Data conventions: a purchase day is a calendar day in the program's timezone with at least
    one purchase; a day's value is the sum of its purchases' eligible line amounts (as for
    qualifying spend) net of refunds and cancels recorded by the end of `calibration_end`, and a
    purchase wholly taken back by then does not count. Later purchases and refunds are ignored.
    `frequency` is the number of repeat purchase days; `recency` and `T` are the times from the
    first purchase day to the last one and to `calibration_end`, in `time_unit`s;
    `monetary_value` is the mean value of the repeat purchase days in major currency units (the
    Gamma-Gamma input; null without repeat purchases). `expected_purchases` is the BG/NBD
    conditional expectation over the next `horizon` units and `clv` that times the Gamma-Gamma
    expected spend (major currency units, undiscounted). `members` lists every member with a
    purchase by `calibration_end`, highest CLV first; members without one are not listed (the
    models start at a first purchase). Fewer than 10 such members, or fewer than 5 with repeat
    purchases, is 422 `insufficient-data`."""
    read: dict[str, Any] = {}

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        program, zone, today = _program(conn, p, program_id)
        end = _day(calibration_end, "calibration_end", today)
        if not EARLIEST <= end <= today:
            raise InvalidInput(
                f"calibration_end {end} is not between {EARLIEST} and today ({today} in {program.timezone})",
                field="calibration_end",
            )
        if horizon * clv.TIME_UNITS[time_unit] > MAX_HORIZON_DAYS:
            raise InvalidInput(
                f"a horizon of {horizon:g} {time_unit}s is beyond {MAX_HORIZON_DAYS // 365} years",
                field="horizon",
            )
        rows = repo.purchase_days(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            until=_midnight_after(end, zone),
            timezone=program.timezone,
        )
        read.update(program=program, end=end, rows=rows)
        return {}

    # The transaction covers the read only: the fit runs after it has ended. The report can
    # list a hundred thousand members, so it is serialised directly (it holds only JSON types)
    # rather than walked value by value by the generic encoder.
    call.run(work, scope="read")
    report = _clv_report(
        read["rows"], read["program"], end=read["end"], time_unit=time_unit, horizon=horizon, limit=limit
    )
    return JSONResponse(report)


def _clv_report(
    rows: list[repo.PurchaseDay],
    program: Program,
    *,
    end: date,
    time_unit: TimeUnit,
    horizon: float,
    limit: int | None,
) -> dict[str, Any]:
    ids = sorted({r.member_id for r in rows})
    code = {member_id: i for i, member_id in enumerate(ids)}
    external = {r.member_id: r.external_id for r in rows}
    major = 10.0 ** MINOR_UNIT_EXPONENT.get(program.currency, 2)
    customers, summary = clv.summarise(
        [code[r.member_id] for r in rows],
        [r.day.toordinal() for r in rows],
        np.array([r.value for r in rows], dtype=np.float64) / major,
        end_day=end.toordinal(),
        unit_days=clv.TIME_UNITS[time_unit],
    )
    v = clv.value_customers(summary, horizon)
    order = np.lexsort((customers, -v.clv))[:limit]
    bg, gg = v.bgnbd, v.gamma_gamma
    s = summary
    return {
        "model": {
            "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b},
            "gamma_gamma": {"p": gg.p, "q": gg.q, "v": gg.v},
        },
        "calibration_end": end.isoformat(),
        "time_unit": time_unit,
        "horizon": horizon,
        "currency": program.currency,
        "customers": len(customers),
        "members": [
            {
                "member_id": ids[customers[i]],
                "external_id": external[ids[customers[i]]],
                "frequency": int(s.frequency[i]),
                "recency": float(s.recency[i]),
                "T": float(s.T[i]),
                "monetary_value": float(s.monetary[i]) if s.frequency[i] > 0 else None,
                "p_alive": float(v.p_alive[i]),
                "expected_purchases": float(v.expected_purchases[i]),
                "clv": float(v.clv[i]),
            }
            for i in order
        ],
    }


@router.get("/programs/{program_id}/analytics/kpis", summary="Program KPIs for a window of days")
def program_kpis(
    program_id: str,
    call: CallDep,
    start: Annotated[
        str | None,
        Query(
            description="First day of the window (YYYY-MM-DD, program timezone). Default: 29 days "
            "before `end`."
        ),
    ] = None,
    end: Annotated[
        str | None, Query(description="Last day of the window, inclusive. Default: today.")
    ] = None,
) -> JSONResponse:
    """Headline figures for the days `start` to `end` (inclusive, in the program's timezone):
    `members` enrolled by the end (not erased), `new_members` enrolled in the window,
    `active_members` with any event in the window (refunds and cancels aside), `purchases`,
    `purchasing_members`, `repeat_purchase_rate` (the share of purchasing members with two or
    more purchases in the window; null without purchases), `qualifying_spend` recorded in the
    window (minor units, net of refunds), and `points`: `issued` by earning net of reversals,
    `adjusted` by hand, `redeemed` and `expired` in the window, `outstanding` (available,
    pending and reserved) and `debt` at the end of the window."""

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        program, zone, today = _program(conn, p, program_id)
        last = _day(end, "end", today)
        if not EARLIEST <= last < LATEST:  # before counting back from it
            raise InvalidInput(f"the window must lie between {EARLIEST} and {LATEST}", field="end")
        first = _day(start, "start", last - timedelta(days=29))
        if first > last:
            raise InvalidInput(f"start {first} is after end {last}", field="start")
        if first < EARLIEST or last >= LATEST:
            raise InvalidInput(f"the window must lie between {EARLIEST} and {LATEST}", field="start")
        figures = repo.kpis(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            start=datetime.combine(first, time(), zone),
            end=_midnight_after(last, zone),
        )
        return {"start": first.isoformat(), "end": last.isoformat(), "timezone": program.timezone, **figures}

    return call.run(work, scope="read")


@router.get("/programs/{program_id}/analytics/liability", summary="Outstanding points liability and breakage")
def program_liability(
    program_id: str,
    call: CallDep,
    cost_per_point: Annotated[
        float | None,
        Query(
            gt=0,
            le=1_000_000,
            description="What one redeemed point costs the merchant, in minor units. Default: the "
            "value of a point in the program's `points_payment`, if it has one.",
        ),
    ] = None,
) -> JSONResponse:
    """The points members hold now (`outstanding`: available, pending and reserved) and what they
    are worth: `breakage_rate` is the share of points that left members' balances by expiring
    rather than being redeemed over the last 12 months (0 when nothing left yet),
    `expected_redemptions` = outstanding x (1 - breakage_rate), and `liability` =
    expected_redemptions x `cost_per_point`, in minor units of the program currency. `debt` is what
    members owe back (an asset, reported apart)."""

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        program, _, _ = _program(conn, p, program_id)
        cost = cost_per_point
        if cost is None and program.points_payment is not None:
            cost = program.points_payment.per_amount / program.points_payment.points
        if cost is None:
            raise InvalidInput(
                "give cost_per_point (minor units per point): the program has no points_payment "
                "to take it from",
                field="cost_per_point",
            )
        now = utcnow()
        figures = repo.liability(
            conn, merchant_id=p.merchant_id, program_id=program_id, as_of=now, since=now - timedelta(days=365)
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
            "liability": round(expected * cost),
        }

    return call.run(work, scope="read")


@router.get("/programs/{program_id}/analytics/usage", summary="Loyalty visits per location")
def program_usage(
    program_id: str,
    call: CallDep,
    month: Annotated[
        str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM; default this month.")
    ] = None,
) -> JSONResponse:
    """Usage metering for one calendar month in the program's timezone: per location, earning
    events (`earns`) and redeemed rewards (`redemptions`), plus the month's enrolments."""

    def work(conn: Connection, p: Principal) -> dict[str, Any]:
        program, zone, today = _program(conn, p, program_id)
        if month is None:
            year, mon = today.year, today.month
        else:
            year, mon = int(month[:4]), int(month[5:])
            if not 1 <= mon <= 12 or not EARLIEST.year <= year < LATEST.year:
                raise InvalidInput(f"month {month} is not a month", field="month")
        start = datetime(year, mon, 1, tzinfo=zone)
        end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=zone)
        rows = repo.usage(conn, merchant_id=p.merchant_id, program_id=program_id, start=start, end=end)
        kpi = repo.kpis(conn, merchant_id=p.merchant_id, program_id=program_id, start=start, end=end)
        return {
            "month": f"{year:04d}-{mon:02d}",
            "timezone": program.timezone,
            "enrolments": kpi["new_members"],
            "locations": rows,
            "earns": sum(r["earns"] for r in rows),
            "redemptions": sum(r["redemptions"] for r in rows),
        }

    return call.run(work, scope="read")
