"""Scheduled jobs, run as if at a given time. Each is idempotent: a second run for the same time
changes nothing. Each effect is recorded at the time it takes effect (a lot's release or expiry
time), never later than the run's time, so ``as_of`` reads before it do not see it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from patron.domain.errors import InvalidInput
from patron.services.clock import utcnow
from patron.storage import jobs as repo

BATCH = 500


@dataclass(frozen=True, slots=True)
class JobResult:
    name: str
    as_of: datetime
    members: int
    lots: int
    points: int


@dataclass(frozen=True, slots=True)
class _Move:
    account: str
    due_column: str
    kind: str
    prefix: str
    reason: str
    target: str


MOVES = {
    "release-pending": _Move(
        "pending", "available_from", "release", "rel", "pending period over", "available"
    ),
    "expire-points": _Move("available", "expires_at", "expiry", "exp", "points expired", "program:expired"),
}
NOT_YET = ("requalify-tiers", "dividends", "notifications")
OTHER = ("lapse-reservations",)


def run_job(
    engine: Engine,
    name: str,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> JobResult:
    """Run job ``name`` as if at ``as_of`` (for one merchant, or all), in batches of members,
    one transaction per batch."""
    if name == "lapse-reservations":
        return _lapse(engine, as_of=as_of, merchant_id=merchant_id, progress=progress)
    move = MOVES.get(name)
    if move is None:
        known = ", ".join(sorted([*MOVES, *OTHER]))
        later = f" ({', '.join(NOT_YET)} are not available yet)" if name in NOT_YET else ""
        raise InvalidInput(f"unknown job {name!r}; jobs: {known}{later}")
    if as_of.tzinfo is None:
        raise InvalidInput("as_of needs a timezone offset")
    members = lots = points = 0
    after: str | None = None
    while True:
        with engine.begin() as conn:
            batch = repo.candidate_members(
                conn,
                account=move.account,
                due_column=move.due_column,
                as_of=as_of,
                limit=BATCH,
                after=after,
                merchant_id=merchant_id,
            )
            if not batch:
                break
            repo.lock_members(conn, batch)
            due = repo.due_lots(
                conn, account=move.account, due_column=move.due_column, as_of=as_of, members=batch
            )
            repo.move_lots(
                conn,
                due,
                kind=move.kind,
                prefix=move.prefix,
                reason=move.reason,
                source=move.account,
                target=move.target,
                now=utcnow(),
            )
        after = batch[-1][1]
        members += len({d["member_id"] for d in due})
        lots += len(due)
        points += sum(int(d["remaining"]) for d in due)
        if progress:
            progress(len(batch))
    return JobResult(name, as_of, members, lots, points)


def _lapse(
    engine: Engine, *, as_of: datetime, merchant_id: str | None, progress: Callable[[int], None] | None
) -> JobResult:
    from patron.services.redemptions import lapse_due

    total = 0
    while True:
        with engine.begin() as conn:
            done = lapse_due(conn, as_of=as_of, merchant_id=merchant_id, limit=BATCH)
        total += done
        if progress and done:
            progress(done)
        if done < BATCH:
            return JobResult("lapse-reservations", as_of, total, total, 0)
