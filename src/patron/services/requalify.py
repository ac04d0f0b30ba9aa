"""The ``requalify-tiers`` job: every tier change a period's end brought, written down once.

Calendar-year programs are requalified set-based: one statement per batch of members
(``storage.requalify``) does what ``domain.tiers.history`` does at each period end, for every
member without a tier assignment. Members with assignments, and anniversary programs (whose
periods differ by member), are folded in Python with ``history`` itself. Rolling-window programs
have no period ends, so nothing to record.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from patron.domain import tiers as rules
from patron.domain.program import Tiers
from patron.services import outbox
from patron.services.clock import utcnow
from patron.services.tiers import METRIC_COLUMN
from patron.storage import jobs as repo
from patron.storage import requalify as sql
from patron.storage.db import is_postgres
from patron.storage.ids import time_head
from patron.storage.integrations import savepoint

#: members per transaction of the set-based statement
BATCH = 20_000
#: members per transaction where the fold runs in Python
FOLD_BATCH = 500


def plan(tiers: Tiers, *, first: datetime, as_of: datetime, tz: ZoneInfo) -> sql.Plan:
    """The set-based statement's view of a calendar-year program's tiers, from ``first`` (the
    earliest enrolment or qualification) to ``as_of``."""
    periods = rules.periods_between(tiers, first, as_of, tz=tz, enrolled_at=first)
    grace = timedelta(days=tiers.grace_days)
    ordered = sorted(tiers.levels, key=lambda lv: tiers.rank(lv.id))
    thresholds = sorted({lv.threshold for lv in tiers.levels if not lv.invite_only}, reverse=True)
    steps = []
    for t in thresholds:
        lv = tiers.reached(t)
        steps.append((t, tiers.rank(lv.id if lv else None)))
    base = rules.base_level(tiers)
    above = [t for t, r in steps if r > tiers.rank(base.id if base else None)]
    # Members who only ever earn below the next level stay at the base, unless the base itself
    # can be lost (reached by a threshold above zero, or by invitation only).
    sparse = base is not None and not base.invite_only and base.threshold <= 0 and bool(above)
    return sql.Plan(
        column=METRIC_COLUMN[tiers.metric],
        metric=tiers.metric,
        tier_ids=[lv.id for lv in ordered],
        base=tiers.rank(base.id if base else None),
        steps=steps,
        permanent=frozenset(tiers.rank(lv.id) for lv in tiers.levels if lv.permanent),
        downgrade=tiers.downgrade,
        ends=[end for _, end in periods],
        decided=[end + grace for _, end in periods if end <= as_of and end + grace <= as_of],
        sparse_above=min(above) if sparse else None,
    )


def run_requalify(
    engine: Engine,
    *,
    as_of: datetime,
    merchant_id: str | None,
    progress: Callable[[int], None] | None,
    run_id: str,
) -> tuple[int, int]:
    """Record every tier change that a period's end (plus grace) brought by ``as_of``: (members
    changed, changes recorded).

    Tiers are derived from qualification history, so reads are right without this job; the job
    writes the changes down (once: a change already recorded is skipped) for the history, the
    notifications and the run log. Each batch is one transaction, so a run killed half-way
    leaves whole batches behind and a second run records the rest.
    """
    from patron.services.programs import program_at

    members = changes = 0
    with engine.begin() as conn:
        targets = repo.all_programs(conn, merchant_id)
    for m, program_id in targets:
        with engine.begin() as conn:
            program, _ = program_at(conn, merchant_id=m, program_id=program_id, at=as_of)
            tiers = program.tiers
            if tiers is None or not tiers.levels or tiers.period == "rolling_12_months":
                continue  # a rolling window has no period ends
            tz = ZoneInfo(program.timezone)
            folded: list[str] | None = sql.assigned_members(conn, m, program_id)
            first = sql.first_moment(conn, m, program_id) if tiers.period == "calendar_year" else None
        if first is not None:
            steps = plan(tiers, first=first, as_of=as_of, tz=tz)
            after: str | None = None
            while True:
                with engine.begin() as conn:
                    found = sql.next_batch(conn, m, program_id, after=after, limit=BATCH)
                    if found is None:
                        break
                    last, size = found
                    record = partial(
                        sql.record_changes,
                        conn,
                        merchant_id=m,
                        program_id=program_id,
                        plan=steps,
                        lo=after,
                        hi=last,
                        as_of=as_of,
                        run_id=run_id,
                        now=utcnow(),
                        assigned=bool(folded),
                    )
                    rows = _record_and_announce(conn, m, record)
                members += len({r["member_id"] for r in rows})
                changes += len(rows)
                after = last
                if progress:
                    progress(size)
        else:
            folded = None  # anniversary periods differ by member: fold every member
        by_fold = _fold(
            engine, m, program_id, tiers, tz, folded, as_of=as_of, run_id=run_id, progress=progress
        )
        members, changes = members + by_fold[0], changes + by_fold[1]
    return members, changes


def _record_and_announce(
    conn: Connection, merchant_id: str, record: Callable[..., list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Record a batch's changes and announce each as ``tier.changed``: on PostgreSQL in the same
    statement, unless a concurrent writer took one of the streams' next numbers meanwhile (then
    as elsewhere: the changes, then their events appended in Python)."""
    if is_postgres(conn):
        try:
            with savepoint(conn):
                return record(announce=time_head("evt", utcnow()))
        except IntegrityError:
            pass
    rows = record()
    _announce(conn, merchant_id, rows)
    return rows


def _announce(conn: Connection, merchant_id: str, rows: list[dict[str, Any]]) -> None:
    outbox.emit_many(
        conn,
        merchant_id=merchant_id,
        events=[
            (
                outbox.TIER_CHANGED,
                r["member_id"],
                r["at"],
                {"from": r["from_tier"], "to": r["to_tier"], "cause": "period_end", "reason": r["reason"]},
            )
            for r in rows
        ],
    )


def _fold(
    engine: Engine,
    merchant_id: str,
    program_id: str,
    tiers: Tiers,
    tz: ZoneInfo,
    only: list[str] | None,
    *,
    as_of: datetime,
    run_id: str,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    """The changes of the program's members (of ``only``, when given) by ``domain.tiers.history``,
    in batches of :data:`FOLD_BATCH`."""
    from patron.services.tiers import program_inputs
    from patron.storage import tiers as tiers_repo

    members = changes = 0
    after: str | None = None
    while only is None or only:
        with engine.begin() as conn:
            if only is None:
                batch = tiers_repo.program_members(
                    conn, merchant_id, program_id, after=after, limit=FOLD_BATCH
                )
            else:
                batch = tiers_repo.members_by_ids(conn, merchant_id, only[:FOLD_BATCH])
                only = only[FOLD_BATCH:]
            if not batch:
                break
            ids = [b["id"] for b in batch]
            rows, given = program_inputs(
                conn, merchant_id=merchant_id, program_id=program_id, member_ids=ids, metrics={tiers.metric}
            )
            candidates = []
            for member in batch:
                _, moves = rules.history(
                    tiers,
                    rows[tiers.metric][member["id"]],
                    as_of=as_of,
                    tz=tz,
                    enrolled_at=member["enrolled_at"],
                    assignments=given.get(member["id"], []),
                )
                candidates += [
                    {
                        "merchant_id": merchant_id,
                        "member_id": member["id"],
                        "at": c.at,
                        "to_tier": c.to_id,
                        "from_tier": c.from_id,
                        "reason": c.reason,
                        "cause": c.cause,
                        "job_run_id": run_id,
                        "recorded_at": utcnow(),
                    }
                    for c in moves
                    if c.cause == "period_end" and c.to_id is not None
                ]
            # a change already recorded (an earlier run) conflicts on the key and is skipped
            stored = tiers_repo.insert_new_changes(conn, candidates)
            new_rows = [r for r in candidates if (r["member_id"], r["at"], r["to_tier"]) in stored]
            _announce(conn, merchant_id, new_rows)
        members += len({r["member_id"] for r in new_rows})
        changes += len(new_rows)
        after = ids[-1]
        if progress:
            progress(len(batch))
    return members, changes
