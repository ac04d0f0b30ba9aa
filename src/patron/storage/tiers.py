"""Tier assignments (manual and invite-only floors) and milestones reached."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update

from patron.storage.db import conflict_insert
from patron.storage.tables import (
    UTCDateTime,
    member_milestones,
    members,
    qualifications,
    tier_assignments,
    tier_checkpoints,
)

#: a member's tier assignments, oldest first (built once: every event with tiers reads them)
ASSIGNMENTS_OF = (
    select(tier_assignments)
    .where(
        tier_assignments.c.merchant_id == bindparam("merchant_id"),
        tier_assignments.c.member_id == bindparam("member_id"),
    )
    .order_by(tier_assignments.c.starts_at, tier_assignments.c.id)
)


def assignments_of(conn: Connection, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    params = {"merchant_id": merchant_id, "member_id": member_id}
    return [dict(r) for r in conn.execute(ASSIGNMENTS_OF, params).mappings()]


def latest_checkpoint(*columns: Any) -> Any:
    """``columns`` of the member's latest tier checkpoint taken under ``key`` that holds at
    ``as_of`` (bound as ``merchant_id``, ``member_id``, ``key``, ``as_of``)."""
    c = tier_checkpoints.c
    return (
        select(*columns)
        .where(
            c.merchant_id == bindparam("merchant_id"),
            c.member_id == bindparam("member_id"),
            c.key == bindparam("key"),
            c.seen_upto <= bindparam("as_of", type_=UTCDateTime()),
        )
        .order_by(c.period_start.desc())
        .limit(1)
    )


#: the whole row of :func:`latest_checkpoint` (built once: every event with tiers reads it)
CHECKPOINT_OF = latest_checkpoint(tier_checkpoints)


def checkpoint_of(
    conn: Connection, merchant_id: str, member_id: str, key: str, as_of: datetime
) -> dict[str, Any] | None:
    params = {"merchant_id": merchant_id, "member_id": member_id, "key": key, "as_of": as_of}
    found = conn.execute(CHECKPOINT_OF, params).mappings().first()
    return dict(found) if found else None


def checkpoints_of(
    conn: Connection, merchant_id: str, member_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """The checkpoints of ``member_ids`` that have one, by member, oldest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for i in range(0, len(member_ids), 1000):
        stmt = (
            select(tier_checkpoints)
            .where(
                tier_checkpoints.c.merchant_id == merchant_id,
                tier_checkpoints.c.member_id.in_(member_ids[i : i + 1000]),
            )
            .order_by(tier_checkpoints.c.member_id, tier_checkpoints.c.period_start)
        )
        for r in conn.execute(stmt).mappings():
            out.setdefault(r["member_id"], []).append(dict(r))
    return out


def replace_checkpoints(
    conn: Connection, merchant_id: str, after: dict[str, datetime | None], rows: list[dict[str, Any]]
) -> None:
    """Of each member in ``after``, the checkpoints of periods starting after its time (all of
    them for None) become theirs in ``rows`` (the caller holds the members' locks)."""
    members_after = [
        {"m": merchant_id, "member": m, "after": at} for m, at in after.items() if at is not None
    ]
    members_all = [m for m, at in after.items() if at is None]
    c = tier_checkpoints.c
    if members_after:
        conn.execute(
            delete(tier_checkpoints).where(
                c.merchant_id == bindparam("m"),
                c.member_id == bindparam("member"),
                c.period_start > bindparam("after", type_=UTCDateTime()),
            ),
            members_after,
        )
    for i in range(0, len(members_all), 1000):
        conn.execute(
            delete(tier_checkpoints).where(
                c.merchant_id == merchant_id, c.member_id.in_(members_all[i : i + 1000])
            )
        )
    if rows:
        conn.execute(insert(tier_checkpoints), rows)


def insert_assignment(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(tier_assignments), values)


def end_assignments(conn: Connection, merchant_id: str, member_id: str, at: datetime) -> int:
    """End at ``at`` the member's manual assignments in force then (held ones: a paid plan's
    tier, not held, lasts while the membership does and ends with it)."""
    result = conn.execute(
        update(tier_assignments)
        .where(
            tier_assignments.c.merchant_id == merchant_id,
            tier_assignments.c.member_id == member_id,
            tier_assignments.c.held.is_(True),
            (tier_assignments.c.ends_at.is_(None)) | (tier_assignments.c.ends_at > at),
        )
        .values(ends_at=at)
    )
    return int(result.rowcount or 0)


def milestones_of(conn: Connection, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(member_milestones)
        .where(member_milestones.c.merchant_id == merchant_id, member_milestones.c.member_id == member_id)
        .order_by(member_milestones.c.reached_at)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def insert_milestone(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(member_milestones), values)


def set_milestone_details(
    conn: Connection, merchant_id: str, member_id: str, milestone_id: str, details: dict[str, Any]
) -> bool:
    result = conn.execute(
        update(member_milestones)
        .where(
            member_milestones.c.merchant_id == merchant_id,
            member_milestones.c.member_id == member_id,
            member_milestones.c.milestone_id == milestone_id,
        )
        .values(details=details)
    )
    return bool(result.rowcount)


def program_qualification_rows(
    conn: Connection, merchant_id: str, program_id: str, member_ids: list[str], column: str
) -> dict[str, list[tuple[datetime, datetime, int]]]:
    """Qualification rows of a program's members in one query, grouped by member."""
    out: dict[str, list[tuple[datetime, datetime, int]]] = {m: [] for m in member_ids}
    stmt = (
        select(
            qualifications.c.member_id,
            qualifications.c.period_at,
            qualifications.c.recorded_at,
            qualifications.c[column],
        )
        .join(
            members,
            and_(
                members.c.merchant_id == qualifications.c.merchant_id,
                members.c.id == qualifications.c.member_id,
            ),
        )
        .where(qualifications.c.merchant_id == merchant_id, members.c.program_id == program_id)
        .order_by(qualifications.c.member_id, qualifications.c.recorded_at)
    )
    if len(member_ids) <= 1000:
        stmt = stmt.where(qualifications.c.member_id.in_(member_ids))  # a batch; else the whole program
    for member_id, period_at, recorded_at, value in conn.execute(stmt):
        if value and member_id in out:
            out[member_id].append((period_at, recorded_at, int(value)))
    return out


def assignments_of_program(
    conn: Connection, merchant_id: str, program_id: str, member_ids: list[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Tier assignments of a program's members (of a batch of them, when ``member_ids`` is short)."""
    out: dict[str, list[dict[str, Any]]] = {}
    stmt = (
        select(tier_assignments)
        .join(
            members,
            and_(
                members.c.merchant_id == tier_assignments.c.merchant_id,
                members.c.id == tier_assignments.c.member_id,
            ),
        )
        .where(tier_assignments.c.merchant_id == merchant_id, members.c.program_id == program_id)
        .order_by(tier_assignments.c.starts_at)
    )
    if member_ids is not None and len(member_ids) <= 1000:
        stmt = stmt.where(tier_assignments.c.member_id.in_(member_ids))
    for row in conn.execute(stmt).mappings():
        out.setdefault(row["member_id"], []).append(dict(row))
    return out


def insert_new_changes(conn: Connection, rows: list[dict[str, Any]]) -> set[tuple[str, datetime, str]]:
    """Insert the changes not recorded yet (by key: member, time, tier) in one statement; the
    keys of those inserted. No read first: a growing table's stale statistics cannot slow it."""
    from patron.storage.tables import tier_changes

    if not rows:
        return set()
    key = ["merchant_id", "member_id", "at", "to_tier"]
    base = conflict_insert(conn, tier_changes).on_conflict_do_nothing(index_elements=key)
    stmt = base.returning(tier_changes.c.member_id, tier_changes.c.at, tier_changes.c.to_tier)
    return {(str(m), at, str(t)) for m, at, t in conn.execute(stmt, rows)}


def program_members(
    conn: Connection, merchant_id: str, program_id: str, *, after: str | None, limit: int
) -> list[dict[str, Any]]:
    stmt = select(members).where(members.c.merchant_id == merchant_id, members.c.program_id == program_id)
    if after is not None:
        stmt = stmt.where(members.c.id > after)
    stmt = stmt.order_by(members.c.id).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def progress(conn: Connection, merchant_id: str, member_id: str) -> tuple[int, int]:
    """(purchases made and not wholly returned or cancelled, lifetime qualifying spend net of
    returns) of a member: a purchase bought and cancelled counts towards neither."""
    from sqlalchemy import func

    from patron.storage.tables import events

    reversal = events.alias("reversal")
    undone = (
        select(reversal.c.refers_to)
        .join(
            qualifications,
            (qualifications.c.merchant_id == reversal.c.merchant_id)
            & (qualifications.c.event_id == reversal.c.id),
        )
        .where(
            reversal.c.merchant_id == merchant_id,
            reversal.c.member_id == member_id,
            qualifications.c.visits < 0,  # a reversal of all that was left of it
        )
    )
    purchases = conn.execute(
        select(func.count()).where(
            events.c.merchant_id == merchant_id,
            events.c.member_id == member_id,
            events.c.type == "purchase",
            events.c.id.not_in(undone),
        )
    ).scalar()
    spend = conn.execute(
        select(func.coalesce(func.sum(qualifications.c.spend), 0)).where(
            qualifications.c.merchant_id == merchant_id, qualifications.c.member_id == member_id
        )
    ).scalar()
    return int(purchases or 0), int(spend or 0)


def anniversary_candidates(
    conn: Connection, merchant_id: str, program_id: str, enrolled_before: datetime, milestone_id: str
) -> list[dict[str, Any]]:
    """Members enrolled before ``enrolled_before`` without the milestone yet."""
    granted = select(member_milestones.c.member_id).where(
        member_milestones.c.merchant_id == merchant_id, member_milestones.c.milestone_id == milestone_id
    )
    stmt = (
        select(members)
        .where(
            members.c.merchant_id == merchant_id,
            members.c.program_id == program_id,
            members.c.enrolled_at <= enrolled_before,
            members.c.status == "active",
            members.c.id.not_in(granted),
        )
        .order_by(members.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def changes_of(conn: Connection, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    from patron.storage.tables import tier_changes

    stmt = select(tier_changes).where(
        tier_changes.c.merchant_id == merchant_id, tier_changes.c.member_id == member_id
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def members_by_ids(conn: Connection, merchant_id: str, member_ids: list[str]) -> list[dict[str, Any]]:
    """The members with these ids, in id order."""
    stmt = (
        select(members)
        .where(members.c.merchant_id == merchant_id, members.c.id.in_(member_ids))
        .order_by(members.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]
