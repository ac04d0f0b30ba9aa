"""Tier state of a member, derived from their qualification history and tier assignments.

Nothing here reads the spendable balance: tiers come from qualifying spend, status points
(earned, never the balance) or visits, folded period by period (see ``domain/tiers.py``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.domain import tiers as rules
from patron.domain.errors import InvalidInput, NotFound
from patron.domain.program import Program, TierLevel
from patron.services.clock import utcnow
from patron.storage import events as events_repo
from patron.storage import tiers as repo
from patron.storage.ids import new_id

METRIC_COLUMN = {
    "qualifying_spend": "spend",
    "status_points": "status_points",
    "visits": "visits",
    "status_miles": "status_miles",
    "segments": "segments",
}


def qualification_rows(
    conn: Connection, *, merchant_id: str, member_id: str, program: Program
) -> list[rules.QualRow]:
    """The member's rows of the program's tier metric (empty when the program has no tiers)."""
    if program.tiers is None or not program.tiers.levels:
        return []
    column = METRIC_COLUMN[program.tiers.metric]
    return [
        rules.QualRow(period_at, recorded_at, value, source)
        for period_at, recorded_at, value, source in events_repo.qualification_rows(
            conn, merchant_id, member_id, column
        )
    ]


def assignment_of(row: dict[str, Any]) -> rules.Assignment:
    return rules.Assignment(
        row["tier_id"], row["starts_at"], row["ends_at"], row["reason"], bool(row.get("held", True))
    )


def assignments(conn: Connection, *, merchant_id: str, member_id: str) -> list[rules.Assignment]:
    return [assignment_of(a) for a in repo.assignments_of(conn, merchant_id, member_id)]


def program_inputs(
    conn: Connection, *, merchant_id: str, program_id: str, member_ids: list[str], metrics: set[str]
) -> tuple[dict[str, dict[str, list[rules.QualRow]]], dict[str, list[rules.Assignment]]]:
    """What folding many members' tiers needs, in one query per metric plus one: their
    qualification rows (by metric, then member) and their assignments (by member)."""
    rows = {
        metric: {
            member_id: [rules.QualRow(*r) for r in found]
            for member_id, found in repo.program_qualification_rows(
                conn, merchant_id, program_id, member_ids, METRIC_COLUMN[metric]
            ).items()
        }
        for metric in metrics
    }
    given = {
        member_id: [assignment_of(a) for a in found]
        for member_id, found in repo.assignments_of_program(conn, merchant_id, program_id, member_ids).items()
    }
    return rows, given


def evaluate(
    program: Program,
    member: dict[str, Any],
    rows: list[rules.QualRow],
    as_of: datetime,
    given: list[rules.Assignment] | None = None,
    resume: rules.Checkpoint | None = None,
) -> rules.TierState | None:
    """The member's tier at ``as_of``; from ``resume`` (see :func:`resume_point`) when given."""
    folded = fold(program, member, rows, as_of, given, resume)
    return folded[0] if folded else None


def fold(
    program: Program,
    member: dict[str, Any],
    rows: list[rules.QualRow],
    as_of: datetime,
    given: list[rules.Assignment] | None = None,
    resume: rules.Checkpoint | None = None,
) -> tuple[rules.TierState, list[rules.Checkpoint]] | None:
    """The member's tier at ``as_of`` and the checkpoints of the periods the fold placed (after
    ``resume``); None without tiers."""
    if program.tiers is None or not program.tiers.levels:
        return None
    state, _, checkpoints = rules.fold(
        program.tiers,
        rows,
        as_of=as_of,
        tz=ZoneInfo(program.timezone),
        enrolled_at=member["enrolled_at"],
        assignments=given or (),
        resume=resume,
    )
    return state, checkpoints


def checkpoint_key(program: Program, member: dict[str, Any]) -> str:
    """A digest of what a member's fold depends on besides their rows and assignments: a
    checkpoint taken under other tier rules, time zone or enrolment does not hold."""
    what = repr((program.tiers, program.timezone, member["enrolled_at"]))
    return hashlib.sha256(what.encode()).hexdigest()


def given_digest(given: list[rules.Assignment]) -> str:
    """A digest of a member's tier assignments (a checkpoint taken under others does not hold)."""
    return hashlib.sha256(repr(sorted(given, key=repr)).encode()).hexdigest()


def resume_point(
    program: Program,
    member: dict[str, Any],
    given: list[rules.Assignment],
    stored: dict[str, Any] | None,
    rows: list[rules.QualRow],
    as_of: datetime,
) -> rules.Checkpoint | None:
    """The stored checkpoint when the fold can resume from it at ``as_of`` and after, with
    ``rows`` as ``qualification_rows_since_checkpoint`` read them; None when there is none or
    it does not hold (then the fold needs the whole history)."""
    if (
        stored is None
        or stored["key"] != checkpoint_key(program, member)
        or stored["given"] != given_digest(given)
    ):
        return None
    checkpoint = rules.Checkpoint(
        stored["period_start"],
        stored["earned_id"],
        stored["level_id"],
        stored["since"],
        stored["reason"],
        stored["seen_upto"],
    )
    return checkpoint if rules.resumable(checkpoint, rows, as_of) else None


def checkpoint_rows(
    *,
    merchant_id: str,
    program: Program,
    member: dict[str, Any],
    given: list[rules.Assignment],
    checkpoints: list[rules.Checkpoint],
    now: datetime,
) -> list[dict[str, Any]]:
    """The member's checkpoints as ``storage.tiers`` stores them."""
    key, digest = checkpoint_key(program, member), given_digest(given)
    return [
        {
            "merchant_id": merchant_id,
            "member_id": member["id"],
            "period_start": c.period_start,
            "key": key,
            "given": digest,
            "earned_id": c.earned_id,
            "level_id": c.level_id,
            "since": c.since,
            "reason": c.reason,
            "seen_upto": c.seen_upto,
            "written_at": now,
        }
        for c in checkpoints
    ]


def save_checkpoints(
    conn: Connection,
    *,
    merchant_id: str,
    program: Program,
    member: dict[str, Any],
    given: list[rules.Assignment],
    resume: rules.Checkpoint | None,
    checkpoints: list[rules.Checkpoint],
    now: datetime,
) -> None:
    """Store what a fold from ``resume`` (None: from enrolment) placed: the member's checkpoints
    after ``resume`` become ``checkpoints`` (the caller holds the member's lock)."""
    rows = checkpoint_rows(
        merchant_id=merchant_id, program=program, member=member, given=given, checkpoints=checkpoints, now=now
    )
    after = {member["id"]: resume.period_start if resume else None}
    repo.replace_checkpoints(conn, merchant_id, after, rows)


def void_checkpoints(conn: Connection, *, merchant_id: str, member_id: str, after: datetime) -> None:
    """Drop the member's checkpoints of periods starting after ``after``: a row of that time was
    written that they were placed without (the caller holds the member's lock)."""
    repo.replace_checkpoints(conn, merchant_id, {member_id: after}, [])


def tier_inputs(
    conn: Connection, *, merchant_id: str, member: dict[str, Any], program: Program, as_of: datetime
) -> tuple[list[rules.QualRow], list[rules.Assignment], rules.Checkpoint | None]:
    """What folding the member's tier at ``as_of`` reads: their rows from their checkpoint on
    and the checkpoint when it holds, else their whole history; and their assignments."""
    column = METRIC_COLUMN[program.tiers.metric] if program.tiers else "spend"
    _, found, held, stored = events_repo.event_inputs(  # one round trip on PostgreSQL
        conn,
        merchant_id,
        member["id"],
        None,
        column=column,
        assignments=True,
        key=checkpoint_key(program, member),
        as_of=as_of,
    )
    rows = [rules.QualRow(*r) for r in found]
    given = [assignment_of(a) for a in held]
    resume = resume_point(program, member, given, stored, rows, as_of)
    if stored is not None and resume is None:
        rows = qualification_rows(conn, merchant_id=merchant_id, member_id=member["id"], program=program)
    return rows, given, resume


def tier_state(
    conn: Connection, *, merchant_id: str, member: dict[str, Any], program: Program, as_of: datetime
) -> rules.TierState | None:
    if program.tiers is None or not program.tiers.levels:
        return None
    rows, given, resume = tier_inputs(
        conn, merchant_id=merchant_id, member=member, program=program, as_of=as_of
    )
    return evaluate(program, member, rows, as_of, given, resume)


def tier_history(
    conn: Connection, *, merchant_id: str, member: dict[str, Any], program: Program, as_of: datetime
) -> list[dict[str, Any]]:
    """Every tier change with when, from, to, why and what caused it (an event, a period end or
    an assignment), oldest first."""
    if program.tiers is None or not program.tiers.levels:
        return []
    rows = qualification_rows(conn, merchant_id=merchant_id, member_id=member["id"], program=program)
    given = assignments(conn, merchant_id=merchant_id, member_id=member["id"])
    _, changes = rules.history(
        program.tiers,
        rows,
        as_of=as_of,
        tz=ZoneInfo(program.timezone),
        enrolled_at=member["enrolled_at"],
        assignments=given,
    )
    sources = events_repo.external_ids(conn, merchant_id, {c.source for c in changes if c.source})
    recorded = {
        (r["at"], r["to_tier"]): r["job_run_id"] for r in repo.changes_of(conn, merchant_id, member["id"])
    }
    return [
        {
            "at": c.at,
            "from": c.from_id,
            "to": c.to_id,
            "reason": c.reason,
            "cause": c.cause,
            "event_id": sources.get(c.source) if c.source else None,
            "job_run_id": recorded.get((c.at, c.to_id)) if c.cause == "period_end" else None,
        }
        for c in changes
    ]


def tier_summary(state: rules.TierState | None) -> dict[str, Any] | None:
    if state is None or state.level is None:
        return None
    return {"id": state.level.id, "name": state.level.name, "since": state.since}


def benefits(level: TierLevel) -> dict[str, Any]:
    return {
        "multiplier": str(level.multiplier.numerator / level.multiplier.denominator)
        if level.multiplier.denominator != 1
        else str(level.multiplier.numerator),
        "perks": list(level.perks),
        "discount_percent": level.discount_percent,
    }


def tier_detail(state: rules.TierState | None, program: Program) -> dict[str, Any]:
    """The ``GET /members/{id}/tier`` body: where the member is, why, the qualifying period's
    value, what keeps the tier and what reaches the next."""
    if state is None or program.tiers is None:
        return {"current": None, "qualifying": None, "next": None, "keep": None}
    tiers = program.tiers
    start, end = rules.as_utc_period((state.period_start, state.period_end))
    nxt = rules.next_level(tiers, state.level, state.value)
    current: dict[str, Any] | None = None
    keep: dict[str, Any] | None = None
    if state.level is not None:
        current = {
            "id": state.level.id,
            "name": state.level.name,
            "since": state.since,
            "reason": state.reason,
            "benefits": benefits(state.level),
        }
        if state.level.permanent:
            keep = {"remaining": 0, "by": None, "note": "this tier is permanent"}
        elif tiers.period != "rolling_12_months" and tiers.downgrade != "none":
            keep = {"remaining": max(state.level.threshold - state.value, 0), "by": end}
    return {
        "current": current,
        "qualifying": {
            "metric": tiers.metric,
            "value": state.value,
            "period_start": start,
            "period_end": end,
        },
        "next": None if nxt is None else {"id": nxt[0].id, "name": nxt[0].name, "remaining": nxt[1]},
        "keep": keep,
    }


def assign(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    tier_id: str,
    reason: str,
    until: datetime | None,
) -> dict[str, Any]:
    """Give a member a tier by hand (manual or invite-only): a floor until ``until`` or for good."""
    if program.tiers is None or program.tiers.level(tier_id) is None:
        raise InvalidInput(f"the program has no tier {tier_id!r}", field="tier_id")
    now = utcnow()
    if until is not None and until <= now:
        raise InvalidInput("until must be in the future", field="until")
    row = {
        "merchant_id": merchant_id,
        "id": new_id("tas"),
        "member_id": member["id"],
        "tier_id": tier_id,
        "reason": reason,
        "starts_at": now,
        "ends_at": until,
        "created_at": now,
    }
    repo.insert_assignment(conn, row)
    return row


def unassign(conn: Connection, *, merchant_id: str, member_id: str) -> int:
    """End the member's assignments now: from here the policy alone places them."""
    ended = repo.end_assignments(conn, merchant_id, member_id, utcnow())
    if not ended:
        raise NotFound("the member has no tier assignment in force")
    return ended


def _rank(program: Program, level: TierLevel | None) -> int:
    """A level's place in its program, lowest first (-1: no tier). Thresholds cannot compare
    levels across two versions of the rules: a cheaper Gold is still above Silver."""
    if level is None or program.tiers is None:
        return -1
    return next((i for i, lv in enumerate(program.tiers.levels) if lv.id == level.id), -1)


def preview(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    current: Program,
    proposed: Program,
    as_of: datetime,
) -> dict[str, Any]:
    """Who would move, and where, if ``proposed`` tier rules replaced ``current`` ones now.

    Reads every member's qualification rows and assignments in two queries, then folds each
    member under both rule sets; writes nothing.
    """
    from patron.storage import members as members_repo

    people = members_repo.find_members(conn, merchant_id, program_id=program_id, limit=10_000_000)
    metrics = {p.tiers.metric for p in (current, proposed) if p.tiers}
    rows, given = program_inputs(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        member_ids=[m["id"] for m in people],
        metrics=metrics,
    )
    moves: list[dict[str, Any]] = []
    counts = {"up": 0, "down": 0, "same": 0}
    for member in people:
        levels: list[TierLevel | None] = []
        for p in (current, proposed):
            if p.tiers is None:
                levels.append(None)
                continue
            state = evaluate(
                p, member, rows[p.tiers.metric][member["id"]], as_of, given.get(member["id"], [])
            )
            levels.append(state.level if state else None)
        before, after = levels
        if (before.id if before else None) == (after.id if after else None):
            counts["same"] += 1
            continue
        direction = "up" if _rank(proposed, after) > _rank(current, before) else "down"
        counts[direction] += 1
        moves.append(
            {
                "member_id": member["id"],
                "external_id": member["external_id"],
                "from": before.id if before else None,
                "to": after.id if after else None,
                "direction": direction,
            }
        )
    return {"as_of": as_of, "members": len(people), "counts": counts, "moves": moves}
