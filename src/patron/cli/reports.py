"""``patron report NAME``: analytics reports as files: CSV (and Parquet when pyarrow is
installed) plus an SVG chart, with a table printed on the terminal.

Names: ``kpis``, ``rfm``, ``cohorts``, ``liability``, ``usage``, ``simulation``. Each writes
``DIR/NAME.csv``, ``DIR/NAME.parquet`` (if pyarrow is importable) and ``DIR/NAME.svg``. An
unknown program or merchant, bad dates, or a period without data: a message and exit 1.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from markupsafe import Markup
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from sqlalchemy import Connection

from patron.api.routes.insights import cohorts_chart, rfm_chart, simulation_chart
from patron.cli.common import (
    MerchantOpt,
    console,
    err,
    fail,
    handles_errors,
    read_json,
    resolve_merchant,
    unit,
)
from patron.services import insights, reports, simulation
from patron.services.clock import utcnow
from patron.services.exports import safe_cell
from patron.services.instant import EARLIEST, LATEST, RANGE
from patron.services.programs import get_program, program_at
from patron.storage import usage as usage_repo
from patron.web.charts import bar_chart

app = typer.Typer(
    help="Analytics reports as CSV (and Parquet with pyarrow) plus an SVG chart per report.",
    no_args_is_help=True,
)

ProgramOpt = Annotated[str, typer.Option("--program", "-p", help="Program id.")]
FromOpt = Annotated[
    str | None, typer.Option("--from", help="First day, YYYY-MM-DD (program timezone). Default: a year ago.")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last day, inclusive. Default: today.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Directory for the files (created if needed).")]
CostOpt = Annotated[
    float | None, typer.Option("--cost-per-point", min=0.000001, help="What a point costs, in minor units.")
]


@dataclass
class Report:
    name: str
    title: str
    rows: list[dict[str, Any]]
    chart: Markup
    extra: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # more CSVs by name


def _day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        day = date.fromisoformat(value)
    except ValueError:
        fail(f"--{name} must be a date YYYY-MM-DD, not {value!r}")
        raise
    if not EARLIEST.date() <= day < LATEST.date():
        fail(f"--{name} {value} is out of range: {RANGE}")
    return day


def _window(start: str | None, end: str | None, days: int = 365) -> tuple[date, date]:
    last = _day(end, "to", utcnow().date())
    first = _day(start, "from", last - timedelta(days=days - 1))
    if first > last:
        fail(f"--from {first} is after --to {last}")
    return first, last


def _run(
    name: str,
    program: str,
    merchant: str | None,
    out: Path,
    build: Callable[[Connection, str], Report],
) -> None:
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True) as bar:
        task = bar.add_task(f"computing {name}", total=4)
        with unit() as conn:
            merchant_id = resolve_merchant(conn, merchant)
            get_program(conn, merchant_id=merchant_id, program_id=program)  # unknown: exit 1
            report = build(conn, merchant_id)
        bar.update(task, advance=1, description=f"writing {name}.csv")
        try:
            out.mkdir(parents=True, exist_ok=True)
            written = [_csv(out / f"{name}.csv", report.rows)]
            written += [_csv(out / f"{key}.csv", rows) for key, rows in report.extra.items()]
            bar.update(task, advance=1, description=f"writing {name}.parquet")
            parquet = _parquet(out / f"{name}.parquet", report.rows)
            if parquet is not None:
                written.append(parquet)
            bar.update(task, advance=1, description=f"drawing {name}.svg")
            svg = out / f"{name}.svg"
            svg.write_text(str(report.chart), encoding="utf-8")
            written.append(svg)
        except OSError as exc:
            fail(f"cannot write to {out}: {exc.strerror or exc}")
            return
        bar.update(task, advance=1)
    _table(report)
    for path in written:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(rows[0]) if rows else []
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else safe_cell(v) for k, v in r.items()} for r in rows)
    return path


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    columns = list(rows[0]) if rows else []
    table = pa.table({c: [r.get(c) for r in rows] for c in columns}) if rows else pa.table({})
    pq.write_table(table, path)
    return path


def _table(report: Report) -> None:
    table = Table(title=report.title)
    columns = list(report.rows[0]) if report.rows else []
    for c in columns:
        table.add_column(c, justify="left" if c in ("figure", "month", "member_id", "segment") else "right")
    for r in report.rows[:50]:
        table.add_row(*("" if r[c] is None else str(r[c]) for c in columns))
    console.print(table)
    if len(report.rows) > 50:
        console.print(f"... {len(report.rows) - 50} more rows in the CSV", highlight=False)


# --- the reports --------------------------------------------------------------------------------


@app.command("kpis")
@handles_errors
def kpis(
    program: ProgramOpt,
    out: OutOpt,
    start: FromOpt = None,
    end: ToOpt = None,
    location: Annotated[
        str | None, typer.Option("--location", help="Purchases at one location only.")
    ] = None,
    cost_per_point: CostOpt = None,
    merchant: str | None = MerchantOpt,
) -> None:
    """Loyalty KPIs of the window (default: the last 30 days): one row per figure."""
    first, last = _window(start, end, days=30)

    def build(conn: Connection, merchant_id: str) -> Report:
        k = insights.kpis(
            conn,
            merchant_id=merchant_id,
            program_id=program,
            first=first,
            last=last,
            location_id=location,
            cost_per_point=cost_per_point,
        )
        skip = {"from", "to", "timezone", "currency", "location_id"}
        rows = [{"figure": key, "value": value} for key, value in k.items() if key not in skip]
        counts = ["active_members", "new_members", "purchasing_members", "retained_purchasers"]
        chart = bar_chart(
            [c.replace("_", " ") for c in counts],
            [("Members", "issued", [int(k[c]) for c in counts])],
            title="Members in the window",
            description=f"From {first} to {last}.",
            chart_id="kpis",
        )
        return Report("kpis", f"KPIs {first} to {last}", rows, chart)

    _run("kpis", program, merchant, out, build)


@app.command("rfm")
@handles_errors
def rfm(
    program: ProgramOpt,
    out: OutOpt,
    start: FromOpt = None,
    end: ToOpt = None,
    merchant: str | None = MerchantOpt,
) -> None:
    """RFM scores and segment of every member who purchased in the window."""
    first, last = _window(start, end)

    def build(conn: Connection, merchant_id: str) -> Report:
        r = insights.rfm(conn, merchant_id=merchant_id, program_id=program, first=first, last=last)
        segments = [{"segment": s, "members": n} for s, n in r["segments"].items()]
        return Report(
            "rfm", f"RFM segments {first} to {last}", r["members"], rfm_chart(r), {"rfm-segments": segments}
        )

    _run("rfm", program, merchant, out, build)


@app.command("cohorts")
@handles_errors
def cohorts(
    program: ProgramOpt,
    out: OutOpt,
    start: FromOpt = None,
    end: ToOpt = None,
    merchant: str | None = MerchantOpt,
) -> None:
    """Retention of each enrolment month: one row per cohort, a column per month offset."""
    first, last = _window(start, end)

    def build(conn: Connection, merchant_id: str) -> Report:
        r = insights.cohorts(conn, merchant_id=merchant_id, program_id=program, first=first, last=last)
        width = max(len(c["retention"]) for c in r["cohorts"])
        rows = [
            {
                "month": c["month"],
                "size": c["size"],
                **{f"m{k}": (c["retention"][k] if k < len(c["retention"]) else None) for k in range(width)},
            }
            for c in r["cohorts"]
        ]
        return Report("cohorts", f"Cohort retention {first} to {last}", rows, cohorts_chart(r))

    _run("cohorts", program, merchant, out, build)


@app.command("liability")
@handles_errors
def liability(
    program: ProgramOpt, out: OutOpt, cost_per_point: CostOpt = None, merchant: str | None = MerchantOpt
) -> None:
    """Outstanding points now, breakage over the last 12 months and their value."""

    def build(conn: Connection, merchant_id: str) -> Report:
        figures = reports.liability(
            conn, merchant_id=merchant_id, program_id=program, cost_per_point=cost_per_point
        )
        if figures["liability"] is None:
            fail("give --cost-per-point: the program has no points_payment to take it from")
        now = figures.pop("as_of")
        f = {
            "outstanding": figures["outstanding"],
            "redeemed": figures["redeemed_12_months"],
            "expired": figures["expired_12_months"],
        }
        currency = figures.pop("currency")  # numbers only in the table (Parquet needs one type)
        rows = [{"figure": k, "value": v} for k, v in figures.items()]
        keys = ["outstanding", "redeemed", "expired"]
        chart = bar_chart(
            ["outstanding", "redeemed (12 months)", "expired (12 months)"],
            [("Points", "issued", [max(int(f[k]), 0) for k in keys])],
            title="Points outstanding, redeemed and expired",
            description=f"As of {now:%Y-%m-%d %H:%M} UTC; money in {currency}.",
            chart_id="liability",
        )
        return Report("liability", "Liability", rows, chart)

    _run("liability", program, merchant, out, build)


@app.command("usage")
@handles_errors
def usage(
    program: ProgramOpt,
    out: OutOpt,
    start: FromOpt = None,
    end: ToOpt = None,
    merchant: str | None = MerchantOpt,
) -> None:
    """Loyalty visits (earns, redemptions) per location and month of the window."""
    first, last = _window(start, end)

    def build(conn: Connection, merchant_id: str) -> Report:
        prog, _ = program_at(conn, merchant_id=merchant_id, program_id=program, at=utcnow())
        zone = ZoneInfo(prog.timezone)
        after_last = (last.year + (last.month == 12), last.month % 12 + 1)
        starts = []  # the first instant of each month of the window, and of the month after it
        year, month = first.year, first.month
        while (year, month) <= after_last:
            starts.append(datetime(year, month, 1, tzinfo=zone))
            year, month = year + (month == 12), month % 12 + 1
        found = usage_repo.usage_by_period(conn, merchant_id=merchant_id, program_id=program, bounds=starts)
        rows: list[dict[str, Any]] = []
        totals: list[tuple[str, int, int]] = []
        for i, start in enumerate(starts[:-1]):  # one query for every month of the window
            label = f"{start:%Y-%m}"
            mine = [r for r in found if r["period"] == i]
            rows += [
                {"month": label, **{k: r[k] for k in ("location_id", "earns", "redemptions")}} for r in mine
            ]
            totals.append((label, sum(r["earns"] for r in mine), sum(r["redemptions"] for r in mine)))
        if not rows:
            fail(f"no earns or redemptions between {first} and {last}")
        chart = bar_chart(
            [t[0] for t in totals],
            [
                ("Earns", "issued", [t[1] for t in totals]),
                ("Redemptions", "redeemed", [t[2] for t in totals]),
            ],
            title="Loyalty visits per month",
            description=f"From {first} to {last}, all locations.",
            chart_id="usage",
        )
        return Report("usage", f"Usage {first} to {last}", rows, chart)

    _run("usage", program, merchant, out, build)


@app.command("simulation")
@handles_errors
def simulate(
    program: ProgramOpt,
    out: OutOpt,
    draft: Annotated[str, typer.Option("--draft", help="JSON file with the draft program body.")],
    start: FromOpt = None,
    end: ToOpt = None,
    cost_per_point: CostOpt = None,
    top: Annotated[int, typer.Option("--top", min=0, max=1000, help="Members most affected.")] = 20,
    merchant: str | None = MerchantOpt,
) -> None:
    """Replay the window (default: the last 30 days) through the draft and the live program;
    writes the side-by-side figures and the members most affected. Writes nothing to the ledger."""
    first, last = _window(start, end, days=30)
    body = read_json(draft)

    def build(conn: Connection, merchant_id: str) -> Report:
        r = simulation.simulate(
            conn,
            merchant_id=merchant_id,
            program_id=program,
            draft=body,
            first=first,
            last=last,
            cost_per_point=cost_per_point or 1.0,
            top=top,
        )
        keys = ["points_issued", "points_reversed", "net_points", "cost", "liability_points", "liability"]
        rows = [
            {"figure": k, "live": r["live"][k], "draft": r["draft"][k], "difference": r["difference"][k]}
            for k in keys
        ]
        tiers = sorted(set(r["live"]["tier_population"]) | set(r["draft"]["tier_population"]))
        rows += [
            {
                "figure": f"tier:{t}",
                "live": r["live"]["tier_population"].get(t, 0),
                "draft": r["draft"]["tier_population"].get(t, 0),
                "difference": r["draft"]["tier_population"].get(t, 0)
                - r["live"]["tier_population"].get(t, 0),
            }
            for t in tiers
        ]
        return Report(
            "simulation",
            f"Simulation {first} to {last} ({r['events']} events)",
            rows,
            simulation_chart(r),
            {"simulation-members": r["most_affected"]},
        )

    _run("simulation", program, merchant, out, build)
