"""Tier state of a member, derived from their qualification history."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.domain import tiers as rules
from patron.domain.program import Program
from patron.storage import events as events_repo

METRIC_COLUMN = {"qualifying_spend": "spend", "status_points": "status_points", "visits": "visits"}


def qualification_rows(
    conn: Connection, *, merchant_id: str, member_id: str, program: Program
) -> list[rules.QualRow]:
    """The member's rows of the program's tier metric (empty when the program has no tiers)."""
    if program.tiers is None or not program.tiers.levels:
        return []
    column = METRIC_COLUMN[program.tiers.metric]
    return [
        rules.QualRow(period_at, recorded_at, value)
        for period_at, recorded_at, value in events_repo.qualification_rows(
            conn, merchant_id, member_id, column
        )
    ]


def evaluate(
    program: Program, member: dict[str, Any], rows: list[rules.QualRow], as_of: datetime
) -> rules.TierState | None:
    if program.tiers is None or not program.tiers.levels:
        return None
    return rules.evaluate(
        program.tiers,
        rows,
        as_of=as_of,
        tz=ZoneInfo(program.timezone),
        enrolled_at=member["enrolled_at"],
    )


def tier_state(
    conn: Connection, *, merchant_id: str, member: dict[str, Any], program: Program, as_of: datetime
) -> rules.TierState | None:
    if program.tiers is None or not program.tiers.levels:
        return None
    rows = qualification_rows(conn, merchant_id=merchant_id, member_id=member["id"], program=program)
    return rules.evaluate(
        program.tiers,
        rows,
        as_of=as_of,
        tz=ZoneInfo(program.timezone),
        enrolled_at=member["enrolled_at"],
    )


def tier_summary(state: rules.TierState | None) -> dict[str, Any] | None:
    if state is None or state.level is None:
        return None
    return {"id": state.level.id, "name": state.level.name, "since": state.since}


def tier_detail(state: rules.TierState | None, program: Program) -> dict[str, Any]:
    """The ``GET /members/{id}/tier`` body: where the member is, why, and what is next."""
    if state is None or program.tiers is None:
        return {"current": None, "qualifying": None, "next": None}
    start, end = rules.as_utc_period((state.period_start, state.period_end))
    nxt = rules.next_level(program.tiers, state.level, state.value)
    return {
        "current": None
        if state.level is None
        else {
            "id": state.level.id,
            "name": state.level.name,
            "since": state.since,
            "reason": state.reason,
        },
        "qualifying": {
            "metric": program.tiers.metric,
            "value": state.value,
            "period_start": start,
            "period_end": end,
        },
        "next": None if nxt is None else {"id": nxt[0].id, "name": nxt[0].name, "remaining": nxt[1]},
    }
