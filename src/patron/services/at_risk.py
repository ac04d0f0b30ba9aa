"""The ``at-risk`` job: which members are drifting away, and a follow-up case for each new one.

For each program, as if at ``as_of`` (settings ``at_risk`` of the version in effect then):

* **recency** (always): an active member with at least ``min_purchases`` purchases recorded
  before ``as_of`` whose last purchase is more than ``inactive_days`` before ``as_of``. One
  aggregate query over the events finds them.
* **P(alive)** (when ``p_alive_below`` is set and the program has enough buyers, 10 with a
  purchase and 5 with a repeat purchase, see ``analytics/clv.py``): BG/NBD is fitted on the
  program's purchase days before ``as_of`` and such a member is also at risk when their
  probability of still being a customer is below ``p_alive_below``. When the model cannot be
  fitted the job uses recency alone and says why (:attr:`ProgramRisk.note`, logged).

Every member at risk gets a ``member_risk`` row at ``as_of``; a member who was at risk in the
latest earlier run and no longer is gets one row with ``at_risk`` false. A member is *newly* at
risk when their latest earlier row (if any) was not at risk; with ``open_cases``, each newly at
risk member gets a follow-up case (at most one unresolved at-risk case per member), opened at
``as_of``. A second run for the same ``as_of`` finds every row written and changes nothing.

Each member newly at risk also gets a ``member.at_risk`` business event in the outbox, in the
same transaction as their row. ``patron worker`` scores once a day (as of midnight UTC).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine

from patron.analytics import clv
from patron.domain import cases as case_rules
from patron.domain.errors import InvalidInput, NotFound
from patron.services import cases as cases_service
from patron.services.clock import utcnow
from patron.services.surveys import AtRiskSettings, program_settings
from patron.storage import analytics as analytics_repo
from patron.storage import cases as repo
from patron.storage import jobs as jobs_repo
from patron.storage import programs as programs_repo

log = logging.getLogger("patron.jobs.at_risk")
ACTOR = "job:at-risk"
LIST_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ProgramRisk:
    """What one run found for one program."""

    merchant_id: str
    program_id: str
    as_of: datetime
    method: str  # "recency" or "bgnbd"
    note: str | None  # why the model was not used, when it was not
    scanned: int  # members with at least min_purchases purchases
    at_risk: int  # members at risk now
    newly: list[str] = field(default_factory=list)  # member ids newly at risk (for member.at_risk)
    recovered: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)  # case ids opened


def _p_alive(
    conn: Connection, merchant_id: str, program_id: str, as_of: datetime
) -> tuple[dict[str, float] | None, str | None]:
    """P(alive) at ``as_of`` per member with a purchase, or ``(None, why)`` if BG/NBD cannot be fitted."""
    from zoneinfo import ZoneInfo

    from patron.services.programs import program_at

    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=as_of)
    zone = ZoneInfo(program.timezone)
    rows = analytics_repo.purchase_days(
        conn, merchant_id=merchant_id, program_id=program_id, until=as_of, timezone=program.timezone
    )
    ids = sorted({r.member_id for r in rows})
    code = {member_id: i for i, member_id in enumerate(ids)}
    customers, summary = clv.summarise(
        [code[r.member_id] for r in rows],
        [r.day.toordinal() for r in rows],
        np.array([max(r.value, 0) for r in rows], dtype=np.float64),
        end_day=as_of.astimezone(zone).date().toordinal(),
        unit_days=clv.TIME_UNITS["day"],
    )
    try:
        model = clv.fit_bgnbd(summary.frequency, summary.recency, summary.T)
        p = model.p_alive(summary.frequency, summary.recency, summary.T)
    except clv.InsufficientData as exc:
        return None, f"BG/NBD not fitted ({exc.detail}): recency only"
    except (ValueError, FloatingPointError) as exc:
        return None, f"BG/NBD not fitted ({exc}): recency only"
    if not np.all(np.isfinite(p)):
        return None, "BG/NBD gave no finite P(alive): recency only"
    return {ids[c]: float(v) for c, v in zip(customers, p, strict=True)}, None


def assess_program(conn: Connection, *, merchant_id: str, program_id: str, as_of: datetime) -> ProgramRisk:
    """Score one program as if at ``as_of`` and write what was found (see the module docstring)."""
    if as_of.tzinfo is None:
        raise InvalidInput("as_of needs a timezone offset")
    _, settings = program_settings(conn, merchant_id=merchant_id, program_id=program_id, at=as_of)
    cutoff = as_of - timedelta(days=settings.inactive_days)
    scanned = repo.count_scanned(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        as_of=as_of,
        min_purchases=settings.min_purchases,
    )
    p_alive: dict[str, float] | None = None
    note = None
    if settings.p_alive_below is not None and scanned:
        p_alive, note = _p_alive(conn, merchant_id, program_id, as_of)
    stats = repo.purchase_stats(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        as_of=as_of,
        min_purchases=settings.min_purchases,
        last_before=None if p_alive is not None else cutoff,  # the set-based recency filter
    )
    risky = [s for s in stats if _at_risk(s, settings, cutoff, p_alive)]
    return _record(conn, merchant_id, program_id, as_of, settings, risky, p_alive, scanned, note)


def _at_risk(
    s: dict[str, Any], settings: AtRiskSettings, cutoff: datetime, p_alive: dict[str, float] | None
) -> bool:
    if s["last_purchase_at"] < cutoff:
        return True
    if p_alive is None or settings.p_alive_below is None:
        return False
    return p_alive.get(s["member_id"], 1.0) < settings.p_alive_below


def _risk_row(
    merchant_id: str,
    program_id: str,
    as_of: datetime,
    method: str,
    s: dict[str, Any],
    p: float | None,
    at_risk: bool,
) -> dict[str, Any]:
    last = s.get("last_purchase_at")
    return {
        "merchant_id": merchant_id,
        "member_id": s["member_id"],
        "as_of": as_of,
        "program_id": program_id,
        "method": method,
        "purchases": s.get("purchases", 0),
        "last_purchase_at": last,
        "recency_days": (as_of - last).days if last is not None else None,
        "p_alive": p,
        "at_risk": at_risk,
        "case_id": None,
        "created_at": utcnow(),
    }


def _record(
    conn: Connection,
    merchant_id: str,
    program_id: str,
    as_of: datetime,
    settings: AtRiskSettings,
    risky: list[dict[str, Any]],
    p_alive: dict[str, float] | None,
    scanned: int,
    note: str | None,
) -> ProgramRisk:
    method = "bgnbd" if p_alive is not None else "recency"
    done = repo.rows_at(conn, merchant_id=merchant_id, program_id=program_id, as_of=as_of)
    before = repo.at_risk_before(conn, merchant_id=merchant_id, program_id=program_id, as_of=as_of)
    now_ids = {s["member_id"] for s in risky}
    open_case = repo.unresolved_by_member(
        conn, merchant_id, case_rules.Source.AT_RISK, case_rules.AT_RISK_REF
    )
    rows, newly, opened = [], [], []
    for s in risky:
        if s["member_id"] in done:
            continue
        p = p_alive.get(s["member_id"]) if p_alive is not None else None
        row = _risk_row(merchant_id, program_id, as_of, method, s, p, True)
        row["case_id"] = open_case.get(s["member_id"])  # the follow-up still being worked on
        if s["member_id"] not in before:
            newly.append(s["member_id"])
            if settings.open_cases:
                case, created = cases_service.ensure_case(
                    conn,
                    merchant_id=merchant_id,
                    member_id=s["member_id"],
                    source=case_rules.Source.AT_RISK,
                    source_ref=case_rules.AT_RISK_REF,
                    summary=_summary(row, settings),
                    actor=ACTOR,
                    at=as_of,
                )
                row["case_id"] = case["id"]
                if created:
                    opened.append(case["id"])
        rows.append(row)
    gone = sorted(before - now_ids - done)
    if gone:
        found = {
            s["member_id"]: s
            for s in repo.purchase_stats(
                conn,
                merchant_id=merchant_id,
                program_id=program_id,
                as_of=as_of,
                min_purchases=1,
                member_ids=gone,
            )
        }
        for member_id in gone:
            s = found.get(member_id, {"member_id": member_id})
            p = p_alive.get(member_id) if p_alive is not None else None
            rows.append(_risk_row(merchant_id, program_id, as_of, method, s, p, False))
    repo.insert_risk(conn, rows)
    from patron.services import outbox

    fields = ("recency_days", "p_alive", "method", "case_id", "last_purchase_at")
    flagged = set(newly)
    outbox.emit_many(
        conn,
        merchant_id=merchant_id,
        events=[
            (outbox.MEMBER_AT_RISK, row["member_id"], as_of, {k: row.get(k) for k in fields})
            for row in rows
            if row["member_id"] in flagged
        ],
    )
    return ProgramRisk(
        merchant_id=merchant_id,
        program_id=program_id,
        as_of=as_of,
        method=method,
        note=note,
        scanned=scanned,
        at_risk=len(risky),
        newly=newly,
        recovered=gone,
        cases=opened,
    )


def _summary(row: dict[str, Any], settings: AtRiskSettings) -> str:
    text = (
        f"At risk: {row['recency_days']} days since the last purchase "
        f"({row['purchases']} purchases; threshold {settings.inactive_days} days)"
    )
    if row["p_alive"] is not None:
        text += f"; P(alive) {row['p_alive']:.2f}"
    return text


def run_at_risk_programs(
    engine: Engine,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ProgramRisk]:
    """Score every program (of one merchant, or all), one transaction per program."""
    with engine.begin() as conn:
        targets = jobs_repo.all_programs(conn, merchant_id)
    found = []
    for m, program_id in targets:
        with engine.begin() as conn:
            result = assess_program(conn, merchant_id=m, program_id=program_id, as_of=as_of)
        if result.note:
            log.info("at-risk %s/%s: %s", m, program_id, result.note)
        found.append(result)
        if progress:
            progress(result.scanned)
    return found


def run_at_risk(
    engine: Engine,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """The job: ``(members scanned, members newly at risk)`` over every program scored."""
    found = run_at_risk_programs(engine, as_of=as_of, merchant_id=merchant_id, progress=progress)
    return sum(r.scanned for r in found), sum(len(r.newly) for r in found)


def at_risk_list(
    conn: Connection, *, merchant_id: str, program_id: str, limit: int = LIST_LIMIT
) -> dict[str, Any]:
    """The members at risk now: each member whose latest assessment says so, longest since a
    purchase first, with what the assessment found."""
    if programs_repo.get_program(conn, merchant_id, program_id) is None:
        raise NotFound(f"program {program_id} not found")
    if not 1 <= limit <= LIST_LIMIT:
        raise InvalidInput(f"limit must be 1-{LIST_LIMIT}", field="limit")
    rows = repo.current_at_risk(conn, merchant_id=merchant_id, program_id=program_id, limit=limit)
    return {
        "program_id": program_id,
        "data": [
            {
                "member_id": r["member_id"],
                "as_of": r["as_of"],
                "method": r["method"],
                "purchases": r["purchases"],
                "last_purchase_at": r["last_purchase_at"],
                "recency_days": r["recency_days"],
                "p_alive": r["p_alive"],
                "case_id": r["case_id"],
            }
            for r in rows
        ],
    }
