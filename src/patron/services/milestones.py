"""Milestones: grant each lifetime achievement's bonus once, with a record the member can see.

Purchase-count and lifetime-spend milestones are checked when an event is recorded; anniversaries
by the ``milestones`` job. A milestone can ask the member for details (a t-shirt size for a gift),
stored with the milestone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from patron.domain import milestones as rules
from patron.domain.errors import InvalidInput, NotFound
from patron.domain.ledger import Journal, JournalKind
from patron.domain.program import Program
from patron.services.clock import utcnow
from patron.services.ledger import credit_member
from patron.storage import ledger as ledger_repo
from patron.storage import tiers as repo


def grant(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    version: int,
    milestone: rules.Milestone,
    at: datetime,
    debt: int,
    event_id: str | None = None,
) -> Journal | None:
    """Record the milestone and credit its bonus (repaying debt first). Returns the journal."""
    now = utcnow()
    journal = credit_member(
        conn,
        merchant_id=merchant_id,
        member=member,
        program=program,
        version=version,
        points=milestone.points,
        debt=debt,
        kind=JournalKind.MILESTONE,
        reason=f"milestone: {milestone.name}",
        at=at,
        event_id=event_id,
    )
    journal_id = None
    repo.insert_milestone(
        conn,
        {
            "merchant_id": merchant_id,
            "member_id": member["id"],
            "milestone_id": milestone.id,
            "reached_at": at,
            "points": milestone.points,
            "journal_id": journal_id,  # the bonus journal is found by its event and kind
            "details": {},
            "created_at": now,
        },
    )
    return journal


def due_after_event(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    at: datetime,
    this_purchase: bool,
) -> list[tuple[rules.Milestone, datetime]]:
    """Count and spend milestones the member has reached with the event being recorded (its
    qualification row is written; its event row is not yet, hence ``this_purchase``)."""
    counted = [m for m in program.milestones if m.kind != "anniversary"]
    if not counted:
        return []
    purchases, spend = repo.progress(conn, merchant_id, member["id"])
    purchases += int(this_purchase)
    done = [r["milestone_id"] for r in repo.milestones_of(conn, merchant_id, member["id"])]
    return rules.due(counted, rules.Progress(purchases, spend, member["enrolled_at"]), as_of=at, done=done)


def run_anniversaries(engine: Engine, *, as_of: datetime, merchant_id: str | None) -> tuple[int, int]:
    """Grant anniversary milestones reached by ``as_of``, at the anniversary. (members, points)"""
    from patron.domain.expiry import add_months
    from patron.services.programs import program_at
    from patron.storage import jobs as jobs_repo

    members = points = 0
    with engine.begin() as conn:
        targets = jobs_repo.all_programs(conn, merchant_id)
    for m, program_id in targets:
        with engine.begin() as conn:
            program, version = program_at(conn, merchant_id=m, program_id=program_id, at=as_of)
            for milestone in program.milestones:
                if milestone.kind != "anniversary":
                    continue
                cutoff = add_months(as_of, -12 * milestone.years)
                for member in repo.anniversary_candidates(conn, m, program_id, cutoff, milestone.id):
                    balances = ledger_repo.lock_balances(conn, m, member["id"])
                    at = add_months(member["enrolled_at"], 12 * milestone.years)
                    grant(
                        conn,
                        merchant_id=m,
                        member=member,
                        program=program,
                        version=version,
                        milestone=milestone,
                        at=at,
                        debt=balances.debt,
                    )
                    members += 1
                    points += milestone.points
    return members, points


def of_member(
    conn: Connection, *, merchant_id: str, member: dict[str, Any], program: Program
) -> list[dict[str, Any]]:
    """The member's milestones: reached ones with their details, and what each asks for."""
    by_id = {m.id: m for m in program.milestones}
    out = []
    for row in repo.milestones_of(conn, merchant_id, member["id"]):
        m = by_id.get(row["milestone_id"])
        out.append(
            {
                "milestone_id": row["milestone_id"],
                "name": m.name if m else row["milestone_id"],
                "reached_at": row["reached_at"],
                "points": row["points"],
                "ask": list(m.ask) if m else [],
                "details": row["details"],
            }
        )
    return out


def set_details(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    milestone_id: str,
    details: dict[str, str],
) -> dict[str, Any]:
    m = next((x for x in program.milestones if x.id == milestone_id), None)
    if m is None or not any(
        r["milestone_id"] == milestone_id for r in repo.milestones_of(conn, merchant_id, member["id"])
    ):
        raise NotFound(f"the member has not reached milestone {milestone_id}")
    unknown = sorted(set(details) - set(m.ask))
    if unknown:
        asks = ", ".join(m.ask) or "nothing"
        raise InvalidInput(
            f"milestone {milestone_id} does not ask for {', '.join(unknown)}; it asks for {asks}"
        )
    repo.set_milestone_details(conn, merchant_id, member["id"], milestone_id, details)
    return next(
        x
        for x in of_member(conn, merchant_id=merchant_id, member=member, program=program)
        if x["milestone_id"] == milestone_id
    )
